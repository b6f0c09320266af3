import Foundation
import XCTest

/// Hosts for a test: network namespaces joined by veth pairs to a bridge in
/// a "switch" namespace of their own, on a private /24 the lab chooses (one
/// no address or route of this machine uses). Nothing is created in the
/// machine's own namespace, and everything is removed on teardown, also when
/// the test fails. Needs root and `ip` (iproute2); otherwise the test is
/// skipped with the reason.
final class NetnsLab {
    static var ipTool: String? { ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } }
    static let prefix = "sluicetest"

    let ip: String
    let tag: String
    let switchNS: String
    let hosts: [String]
    /// The first three octets of the lab's /24; host i is .<i+1>.
    let subnet: String
    private var processes: [Process] = []
    private var torn = false

    init(hosts count: Int) throws {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root (run the tests as root, e.g. in CI's container)") }
        guard let ip = NetnsLab.ipTool else { throw XCTSkip("iproute2's ip is not installed") }
        self.ip = ip
        NetnsLab.removeLeftovers(ip)
        let tag = "\(getpid())-\(String(UInt32.random(in: 0...0xffff), radix: 16))"
        self.tag = tag
        switchNS = "\(NetnsLab.prefix)-\(tag)-sw"
        hosts = (0..<count).map { "\(NetnsLab.prefix)-\(tag)-h\($0)" }
        subnet = try NetnsLab.chooseSubnet(ip)
        do {
            let probe = try NetnsLab.run(ip, ["netns", "add", switchNS])
            guard probe.status == 0 else {
                throw XCTSkip("`ip netns add` fails here (\(probe.output.trimmingCharacters(in: .whitespacesAndNewlines))): no network namespaces on this machine")
            }
            try sh(["-n", switchNS, "link", "set", "lo", "up"])
            try sh(["-n", switchNS, "link", "add", "br0", "type", "bridge"])
            try sh(["-n", switchNS, "link", "set", "br0", "up"])
            for (i, h) in hosts.enumerated() {
                try sh(["netns", "add", h])
                // Both ends are made inside the namespaces: never in ours.
                try sh(["-n", switchNS, "link", "add", "port\(i)", "type", "veth", "peer", "name", "eth0", "netns", h])
                try sh(["-n", switchNS, "link", "set", "port\(i)", "master", "br0", "up"])
                try sh(["-n", h, "link", "set", "lo", "up"])
                try sh(["-n", h, "addr", "add", "\(address(i))/24", "dev", "eth0"])
                try sh(["-n", h, "link", "set", "eth0", "up"])
            }
        } catch {
            teardown()
            throw error
        }
    }

    deinit { teardown() }

    func address(_ i: Int) -> String { "\(subnet).\(i + 1)" }

    /// Cuts host i off the switch (its veth down), or reconnects it.
    func setConnected(_ i: Int, _ up: Bool) throws {
        try sh(["-n", switchNS, "link", "set", "port\(i)", up ? "up" : "down"])
    }

    /// The command line that runs `argv` inside host i.
    func inHost(_ i: Int, _ argv: [String]) -> [String] { [ip, "netns", "exec", hosts[i]] + argv }

    /// Kills what the lab started, then removes its namespaces (their veths go with them).
    func teardown() {
        guard !torn else { return }
        torn = true
        for p in processes where p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        for ns in hosts + [switchNS] { _ = try? NetnsLab.run(ip, ["netns", "del", ns]) }
    }

    /// A process the lab kills on teardown.
    func adopt(_ p: Process) { processes.append(p) }

    @discardableResult
    private func sh(_ args: [String]) throws -> String {
        let r = try NetnsLab.run(ip, args)
        guard r.status == 0 else {
            throw NSError(domain: "netns", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: "ip \(args.joined(separator: " ")): \(r.output)"])
        }
        return r.output
    }

    static func run(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// A 10.x.y.0/24 that no address or route of this machine mentions.
    static func chooseSubnet(_ ip: String) throws -> String {
        let used = ((try? run(ip, ["-4", "-o", "addr"]).output) ?? "") + ((try? run(ip, ["-4", "route"]).output) ?? "")
        for _ in 0..<100 {
            let s = "10.\(Int.random(in: 160...250)).\(Int.random(in: 0...255))"
            if !used.contains(s + ".") && !used.contains("10.\(s.split(separator: ".")[1]).0.0/16") { return s }
        }
        throw XCTSkip("no free private /24 for the lab")
    }

    /// Namespaces an earlier run of these tests left behind (killed before
    /// teardown): named with our prefix and a pid no longer alive.
    static func removeLeftovers(_ ip: String) {
        guard let list = try? run(ip, ["netns", "list"]).output else { return }
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count >= 3, parts[0] == prefix, let pid = Int32(parts[1]), pid != getpid(),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            _ = try? run(ip, ["netns", "del", name])
        }
    }
}

extension RouterProcess {
    /// The state of this router's link to `peer` in `sluice status`: up,
    /// connecting, down (wanted, not linked) or idle (nothing needs it).
    func fabricState(_ peer: String) -> String? {
        (((try? status())?["cluster"] as? [String: Any])?["peers"] as? [String: [String: Any]])?[peer]?["state"] as? String
    }
}
