#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Foundation

/// A small etcd v3 client over its JSON gateway (gRPC-gateway): HTTP/1.1
/// POSTs of JSON to /v3/kv/put, /v3/kv/range, /v3/kv/deleterange,
/// /v3/lease/grant, /v3/lease/keepalive, /v3/lease/revoke and /v3/watch, on
/// plain TCP. Keys and values travel base64-encoded; 64-bit integers as
/// decimal strings. Blocking, with socket timeouts: it runs on the
/// directory's own thread, never on the router's event loop.
public final class EtcdClient {
    public let host: String
    public let port: UInt16
    public var timeoutMillis: Int32 = 2000

    public init(endpoint: String) throws {
        guard let ep = RouterAddress.parseEndpoint(endpoint) else {
            throw EtcdError("etcd endpoint \"\(endpoint)\" is not a literal address:port")
        }
        host = ep.host
        port = ep.port
    }

    public struct KeyValue: Equatable {
        public var key: String
        public var value: [UInt8]
        public var modRevision: Int64
        public var lease: Int64
    }

    public struct WatchEvent: Equatable {
        public enum Kind: Equatable { case put, delete }
        public var kind: Kind
        public var kv: KeyValue
    }

    // MARK: requests

    /// Puts `value` at `key`, attached to `lease` if given; returns the revision.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64? = nil) throws -> Int64 {
        var body: [String: Any] = ["key": b64(key), "value": Data(value).base64EncodedString()]
        if let lease { body["lease"] = String(lease) }
        return revision(try call("/v3/kv/put", body))
    }

    /// The keys under `prefix` (or exactly `key` when `prefix` is false),
    /// and the store's revision at the time.
    public func range(_ key: String, prefix: Bool = false) throws -> (kvs: [KeyValue], revision: Int64) {
        var body: [String: Any] = ["key": b64(key)]
        if prefix { body["range_end"] = Data(EtcdClient.prefixEnd(key)).base64EncodedString() }
        let r = try call("/v3/kv/range", body)
        let kvs = try (r["kvs"] as? [[String: Any]] ?? []).map(EtcdClient.keyValue)
        return (kvs, revision(r))
    }

    @discardableResult
    public func delete(_ key: String, prefix: Bool = false) throws -> Int64 {
        var body: [String: Any] = ["key": b64(key)]
        if prefix { body["range_end"] = Data(EtcdClient.prefixEnd(key)).base64EncodedString() }
        return revision(try call("/v3/kv/deleterange", body))
    }

    /// A new lease of `ttl` seconds; returns its id and granted TTL.
    public func grantLease(ttl: Int) throws -> (id: Int64, ttl: Int) {
        let r = try call("/v3/lease/grant", ["TTL": String(ttl)])
        guard let id = int64(r["ID"]), id != 0 else { throw EtcdError("lease grant: no ID in \(r)") }
        return (id, Int(int64(r["TTL"]) ?? 0))
    }

    /// Refreshes a lease; returns the remaining TTL, 0 when the lease is gone.
    public func keepAlive(lease: Int64) throws -> Int {
        let r = try call("/v3/lease/keepalive", ["ID": String(lease)])
        let result = r["result"] as? [String: Any] ?? r
        return Int(int64(result["TTL"]) ?? 0)
    }

    public func revoke(lease: Int64) throws {
        _ = try call("/v3/lease/revoke", ["ID": String(lease)])
    }

    // MARK: watch

    /// A watch stream on `key` (a prefix when `prefix`) from `startRevision`.
    /// `next` waits up to the client's timeout for events; a closed or
    /// cancelled stream throws, and the caller watches again.
    public final class Watch {
        let fd: Int32
        var http: HTTPResponseReader
        var lines: [UInt8] = []
        public private(set) var created = false

        init(fd: Int32, http: HTTPResponseReader) {
            self.fd = fd
            self.http = http
        }

        deinit { close(fd) }

        /// Events that arrived (possibly none, after the timeout).
        public func next() throws -> [WatchEvent] {
            var events: [WatchEvent] = []
            while true {
                // Whole lines first: each gateway message ends with a newline.
                if let nl = lines.firstIndex(of: 10) {
                    let line = Array(lines[..<nl])
                    lines.removeSubrange(...nl)
                    if line.allSatisfy({ $0 == 32 || $0 == 13 }) { continue }
                    guard let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                        throw EtcdError("watch: not JSON: \(String(decoding: line.prefix(200), as: UTF8.self))")
                    }
                    if let err = obj["error"] { throw EtcdError("watch: \(err)") }
                    let result = obj["result"] as? [String: Any] ?? [:]
                    if result["created"] as? Bool == true { created = true }
                    if result["canceled"] as? Bool == true {
                        throw EtcdError("watch cancelled: \(result["cancel_reason"] ?? "")\(result["compact_revision"].map { " (compacted at \($0))" } ?? "")")
                    }
                    for e in result["events"] as? [[String: Any]] ?? [] {
                        let kv = try EtcdClient.keyValue(e["kv"] as? [String: Any] ?? [:])
                        events.append(WatchEvent(kind: (e["type"] as? String) == "DELETE" ? .delete : .put, kv: kv))
                    }
                    continue
                }
                if !events.isEmpty { return events }
                var buf = [UInt8](repeating: 0, count: 16384)
                let n = read(fd, &buf, buf.count)
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return events }
                if n <= 0 { throw EtcdError("watch stream closed by etcd") }
                lines += try http.feed(Array(buf.prefix(n)))
                if http.complete && lines.isEmpty { throw EtcdError("watch stream ended") }
            }
        }
    }

    public func watch(_ key: String, prefix: Bool, startRevision: Int64) throws -> Watch {
        var create: [String: Any] = ["key": b64(key), "start_revision": String(startRevision)]
        if prefix { create["range_end"] = Data(EtcdClient.prefixEnd(key)).base64EncodedString() }
        let fd = try open()
        do {
            try send(fd, path: "/v3/watch", json: ["create_request": create])
            var http = HTTPResponseReader()
            var early: [UInt8] = []
            // Read the status line and headers (and whatever body came with them).
            while !http.headersDone {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = read(fd, &buf, buf.count)
                if n <= 0 { throw EtcdError("watch: etcd closed the connection (\(n < 0 ? String(cString: strerror(errno)) : "EOF"))") }
                early += try http.feed(Array(buf.prefix(n)))
            }
            guard http.status == 200 else { throw EtcdError("watch: HTTP \(http.status)") }
            let w = Watch(fd: fd, http: http)
            w.lines = early
            return w
        } catch {
            close(fd)
            throw error
        }
    }

    // MARK: plumbing

    /// One POST on a fresh connection (Connection: close).
    public func call(_ path: String, _ json: [String: Any]) throws -> [String: Any] {
        let fd = try open()
        defer { close(fd) }
        try send(fd, path: path, json: json)
        var http = HTTPResponseReader()
        var body: [UInt8] = []
        while !http.complete {
            var buf = [UInt8](repeating: 0, count: 16384)
            let n = read(fd, &buf, buf.count)
            if n < 0 { throw EtcdError("\(path): \(String(cString: strerror(errno)))") }
            if n == 0 {
                if http.headersDone && http.untilClose { break }
                throw EtcdError("\(path): etcd closed the connection mid-response")
            }
            body += try http.feed(Array(buf.prefix(n)))
            if body.count > 64 << 20 { throw EtcdError("\(path): response above 64 MiB") }
        }
        let obj = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        guard http.status == 200, let obj else {
            let text = String(decoding: body.prefix(300), as: UTF8.self)
            throw EtcdError("\(path): HTTP \(http.status): \(text)")
        }
        return obj
    }

    func open() throws -> Int32 {
        let fd = sluice_net_connect_timeout(host, port, timeoutMillis)
        guard fd >= 0 else { throw EtcdError("etcd at \(host):\(port): \(String(cString: strerror(errno)))") }
        return fd
    }

    func send(_ fd: Int32, path: String, json: [String: Any]) throws {
        let body = try JSONSerialization.data(withJSONObject: json)
        let head = "POST \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let bytes = Array(head.utf8) + Array(body)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { sluice_net_send_blocking(fd, $0.baseAddress, $0.count) }
            if n <= 0 { throw EtcdError("\(path): send: \(String(cString: strerror(errno)))") }
            off += n
        }
    }

    private func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    private func revision(_ r: [String: Any]) -> Int64 { int64((r["header"] as? [String: Any])?["revision"]) ?? 0 }

    static func keyValue(_ o: [String: Any]) throws -> KeyValue {
        guard let k = o["key"] as? String, let key = Data(base64Encoded: k) else { throw EtcdError("a key-value without a key: \(o)") }
        let value = (o["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
        return KeyValue(key: String(decoding: key, as: UTF8.self), value: Array(value),
                        modRevision: int64(o["mod_revision"]) ?? 0, lease: int64(o["lease"]) ?? 0)
    }

    /// The end of a prefix range: the prefix with its last byte incremented.
    static func prefixEnd(_ key: String) -> [UInt8] {
        var b = Array(key.utf8)
        while let last = b.last {
            if last < 0xff {
                b[b.count - 1] = last + 1
                return b
            }
            b.removeLast()
        }
        return [0]
    }
}

func int64(_ any: Any?) -> Int64? {
    if let s = any as? String { return Int64(s) }
    if let n = any as? NSNumber { return n.int64Value }
    return nil
}

public struct EtcdError: Error, CustomStringConvertible {
    public let description: String
    public init(_ s: String) { description = s }
}

/// An HTTP/1.1 response, fed bytes as they come: the status line, headers,
/// then a body by Content-Length, chunked encoding, or until close. Every
/// size is bounded.
struct HTTPResponseReader {
    private(set) var status = 0
    private(set) var headersDone = false
    private(set) var complete = false
    private(set) var untilClose = false
    private var head: [UInt8] = []
    private var chunked = false
    private var remaining = 0 // Content-Length left, or the current chunk's bytes left
    private var chunkState = 0 // 0 size line, 1 data, 2 CRLF after data, 3 trailers
    private var line: [UInt8] = []

    /// Returns the body bytes in `bytes`.
    mutating func feed(_ bytes: [UInt8]) throws -> [UInt8] {
        var input = bytes[...]
        if !headersDone {
            head += input
            guard head.count <= 64 * 1024 else { throw EtcdError("HTTP headers above 64 KiB") }
            guard let end = head.firstRange(of: [13, 10, 13, 10]) else { return [] }
            let text = String(decoding: head[..<end.lowerBound], as: UTF8.self)
            input = head[end.upperBound...]
            head = []
            let lines = text.components(separatedBy: "\r\n")
            let parts = lines[0].split(separator: " ")
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else {
                throw EtcdError("not an HTTP response: \(lines[0].prefix(100))")
            }
            status = code
            var length: Int?
            for l in lines.dropFirst() {
                guard let colon = l.firstIndex(of: ":") else { continue }
                let name = l[..<colon].lowercased(), value = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if name == "transfer-encoding" && value.lowercased().contains("chunked") { chunked = true }
                if name == "content-length" { length = Int(value) }
            }
            headersDone = true
            if !chunked {
                if let length { remaining = length; complete = length == 0 } else { untilClose = true }
            }
        }
        var out: [UInt8] = []
        if !chunked {
            if untilClose { return Array(input) }
            let take = min(remaining, input.count)
            out += input.prefix(take)
            remaining -= take
            if remaining == 0 { complete = true }
            return out
        }
        var i = input.startIndex
        while i < input.endIndex && !complete {
            switch chunkState {
            case 1:
                let take = min(remaining, input.endIndex - i)
                out += input[i..<i + take]
                i += take
                remaining -= take
                if remaining == 0 { chunkState = 2 }
            default:
                let b = input[i]
                i += 1
                if b != 10 {
                    line.append(b)
                    guard line.count < 1024 else { throw EtcdError("HTTP chunk line above 1 KiB") }
                    continue
                }
                let text = String(decoding: line.filter { $0 != 13 }, as: UTF8.self)
                line = []
                switch chunkState {
                case 0:
                    let sizeText = text.split(separator: ";").first.map(String.init) ?? ""
                    guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0, size <= 64 << 20 else {
                        throw EtcdError("bad HTTP chunk size \"\(text.prefix(40))\"")
                    }
                    if size == 0 { chunkState = 3 } else { remaining = size; chunkState = 1 }
                case 2:
                    chunkState = 0
                default: // trailers end with an empty line
                    if text.isEmpty { complete = true }
                }
            }
        }
        return out
    }
}
