import Foundation
import SluicePolicy
import Yams

/// Where a router's fabric link listens.
public struct RouterAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var name: String
    /// A literal IPv4 or IPv6 address (routers never resolve names: the
    /// directory is the only source of addresses).
    public var host: String
    public var port: UInt16

    public init(name: String, host: String, port: UInt16) {
        self.name = name
        self.host = host
        self.port = port
    }

    public var endpoint: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public var description: String { "\(name) (\(endpoint))" }

    /// Parses "a.b.c.d:port" or "[v6]:port".
    public static func parseEndpoint(_ s: String) -> (host: String, port: UInt16)? {
        var host: Substring, portText: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]"), s[s.index(after: close)...].hasPrefix(":") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            portText = s[s.index(close, offsetBy: 2)...]
            var a = in6_addr()
            guard inet_pton(AF_INET6, String(host), &a) == 1 else { return nil }
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            portText = s[s.index(after: colon)...]
            var a = in_addr()
            guard inet_pton(AF_INET, String(host), &a) == 1 else { return nil }
        }
        guard let port = UInt16(portText), port > 0 else { return nil }
        return (String(host), port)
    }
}

/// A router in the directory: its link address and the virtual endpoints
/// (LIDs, and IPv4 addresses behind GID ::ffff:a.b.c.d) it hands out, so
/// that any router can tell which router owns a destination.
public struct RouterEntry: Equatable, Sendable {
    public var address: RouterAddress
    public var lids: [ClosedRange<UInt16>]
    public var addresses: [IPv4Pool]

    public init(address: RouterAddress, lids: [ClosedRange<UInt16>], addresses: [IPv4Pool]) {
        self.address = address
        self.lids = lids
        self.addresses = addresses
    }

    public var name: String { address.name }
    public func owns(lid: UInt16) -> Bool { lids.contains { $0.contains(lid) } }
    public func owns(ipv4: UInt32) -> Bool { addresses.contains { $0.contains(ipv4) } }
}

/// The cluster directory: which routers exist, where their links listen,
/// and which virtual LIDs and addresses each owns. `static` reads a file;
/// `etcd` keeps the same entries in etcd, where routers register themselves
/// under leases.
public protocol ClusterDirectory: AnyObject {
    var routers: [RouterEntry] { get }
}

extension ClusterDirectory {
    public func router(named name: String) -> RouterEntry? { routers.first { $0.name == name } }
    public func router(forLID lid: UInt16) -> RouterEntry? { routers.first { $0.owns(lid: lid) } }
    public func router(forIPv4 a: UInt32) -> RouterEntry? { routers.first { $0.owns(ipv4: a) } }
    public var addresses: [RouterAddress] { routers.map(\.address) }
}

public struct DirectoryError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ s: String) { description = s }
}

/// The `static` directory: one YAML file that lists every router.
///
///     apiVersion: sluice/v1
///     kind: Cluster
///     spec:
///       routers:
///         - name: host-a              # a DNS label, unique
///           fabric: 10.99.0.1:7470    # literal address:port of its link
///           lids: [1-4095]            # virtual LIDs it assigns (ranges or single LIDs, 1...0xbfff)
///           addresses: [10.77.0.0/18] # virtual IPv4 pools behind GID 0
///
/// Ranges of different routers may not overlap, nor names or link
/// addresses repeat: a destination has exactly one owner.
public final class StaticDirectory: ClusterDirectory {
    public let routers: [RouterEntry]
    public let path: String

    public init(routers: [RouterEntry], path: String = "<memory>") throws {
        try StaticDirectory.validate(routers, path)
        self.routers = routers
        self.path = path
    }

    public static func load(path: String) throws -> StaticDirectory {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DirectoryError("\(path): cannot read the cluster directory file")
        }
        return try parse(String(decoding: data, as: UTF8.self), path: path)
    }

    public static func parse(_ text: String, path: String) throws -> StaticDirectory {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw DirectoryError("\(path): not YAML: \(error)")
        }
        guard let root = node else { throw DirectoryError("\(path): empty file") }
        func at(_ n: Node, _ msg: String) -> DirectoryError {
            DirectoryError("\(path):\((n.mark?.line ?? 0)):\((n.mark?.column ?? 0)): \(msg)")
        }
        func mapping(_ n: Node, _ what: String, allowed: Set<String>, required: Set<String>) throws -> [String: Node] {
            guard let m = n.mapping else { throw at(n, "\(what) must be a mapping") }
            var out: [String: Node] = [:]
            for (k, v) in m {
                guard let key = k.string else { throw at(k, "\(what): keys must be strings") }
                guard allowed.contains(key) else {
                    throw at(k, "\(what): unknown field \"\(key)\" (expected \(allowed.sorted().joined(separator: ", ")))")
                }
                guard out[key] == nil else { throw at(k, "\(what): \"\(key)\" given twice") }
                out[key] = v
            }
            for r in required.sorted() where out[r] == nil { throw at(n, "\(what): missing \"\(r)\"") }
            return out
        }
        func scalar(_ n: Node, _ what: String) throws -> String {
            guard let s = n.scalar?.string else { throw at(n, "\(what) must be a scalar") }
            return s
        }
        func list(_ n: Node, _ what: String) throws -> [Node] {
            guard let s = n.sequence else { throw at(n, "\(what) must be a list") }
            return Array(s)
        }
        let top = try mapping(root, "the file", allowed: ["apiVersion", "kind", "spec"], required: ["apiVersion", "kind", "spec"])
        guard try scalar(top["apiVersion"]!, "apiVersion") == "sluice/v1" else { throw at(top["apiVersion"]!, "apiVersion must be sluice/v1") }
        guard try scalar(top["kind"]!, "kind") == "Cluster" else { throw at(top["kind"]!, "kind must be Cluster") }
        let spec = try mapping(top["spec"]!, "spec", allowed: ["routers"], required: ["routers"])
        var entries: [RouterEntry] = []
        for (i, r) in try list(spec["routers"]!, "spec.routers").enumerated() {
            let what = "spec.routers[\(i)]"
            let m = try mapping(r, what, allowed: ["name", "fabric", "lids", "addresses"], required: ["name", "fabric", "lids", "addresses"])
            let name = try scalar(m["name"]!, "\(what).name")
            guard isDNSLabel(name) else { throw at(m["name"]!, "\(what).name \"\(name)\" is not a DNS label (a-z, 0-9, -; up to 63)") }
            let fabricText = try scalar(m["fabric"]!, "\(what).fabric")
            guard let ep = RouterAddress.parseEndpoint(fabricText) else {
                throw at(m["fabric"]!, "\(what).fabric \"\(fabricText)\" is not a literal address:port (e.g. 10.99.0.1:7470 or [fd00::1]:7470)")
            }
            var lids: [ClosedRange<UInt16>] = []
            for l in try list(m["lids"]!, "\(what).lids") {
                let t = try scalar(l, "\(what).lids")
                guard let range = parseLIDRange(t) else {
                    throw at(l, "\(what).lids: \"\(t)\" is not a LID or a range LOW-HIGH within 1...49151")
                }
                lids.append(range)
            }
            var pools: [IPv4Pool] = []
            for a in try list(m["addresses"]!, "\(what).addresses") {
                let t = try scalar(a, "\(what).addresses")
                switch IPv4Pool.parse(t) {
                case .success(let p): pools.append(p)
                case .failure(let e): throw at(a, "\(what).addresses: \(e)")
                }
            }
            entries.append(RouterEntry(address: RouterAddress(name: name, host: ep.host, port: ep.port), lids: lids, addresses: pools))
        }
        return try StaticDirectory(routers: entries, path: path)
    }

    static func validate(_ routers: [RouterEntry], _ path: String) throws {
        guard !routers.isEmpty else { throw DirectoryError("\(path): spec.routers lists no router") }
        for (i, a) in routers.enumerated() {
            guard !a.lids.isEmpty else { throw DirectoryError("\(path): router \(a.name) owns no LIDs") }
            guard !a.addresses.isEmpty else { throw DirectoryError("\(path): router \(a.name) owns no addresses") }
            for b in routers[..<i] {
                if a.name == b.name { throw DirectoryError("\(path): router name \(a.name) appears twice") }
                if a.address.endpoint == b.address.endpoint {
                    throw DirectoryError("\(path): routers \(b.name) and \(a.name) share the link address \(a.address.endpoint)")
                }
                for x in a.lids { for y in b.lids where x.overlaps(y) {
                    throw DirectoryError("\(path): LIDs \(x.lowerBound)-\(x.upperBound) of \(a.name) overlap \(y.lowerBound)-\(y.upperBound) of \(b.name)")
                } }
                for x in a.addresses { for y in b.addresses where x.contains(y.network) || y.contains(x.network) {
                    throw DirectoryError("\(path): addresses \(x) of \(a.name) overlap \(y) of \(b.name)")
                } }
            }
            // Within one router, its own ranges may not overlap either.
            for (j, x) in a.lids.enumerated() { for y in a.lids[..<j] where x.overlaps(y) {
                throw DirectoryError("\(path): router \(a.name) lists LIDs \(x.lowerBound)-\(x.upperBound) twice")
            } }
        }
    }

    public static func parseLIDRange(_ t: String) -> ClosedRange<UInt16>? {
        let parts = t.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 1 || parts.count == 2, let lo = UInt16(parts[0]), let hi = UInt16(parts.last!),
              lo >= 1, hi <= 0xbfff, lo <= hi else { return nil }
        return lo...hi
    }

    public static func isDNSLabel(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count), u.first != UInt8(ascii: "-"), u.last != UInt8(ascii: "-") else { return false }
        return u.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 45 }
    }
}
