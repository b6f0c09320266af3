#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys

/// The operator side of `<runtime-dir>/control.sock`.
public enum OperatorClient {
    /// Asks the router for its status; returns the JSON bytes.
    public static func status(socketPath: String) throws -> [UInt8] {
        let answer = try request(socketPath: socketPath, opcode: SLUICE_OP_STATUS.rawValue)
        guard answer.status == 0 else { throw SystemError("router refused the status request: \(answer.reason)", answer.status) }
        return answer.body
    }

    /// Asks the router to reload its policy directory. Returns whether it
    /// did and the router's message (every error, when it did not).
    public static func reloadPolicies(socketPath: String) throws -> (ok: Bool, message: String) {
        let answer = try request(socketPath: socketPath, opcode: SLUICE_OP_RELOAD_POLICY.rawValue)
        return (answer.status == 0, String(decoding: answer.body, as: UTF8.self))
    }

    /// Lifts the key-guessing quarantine of a tenant. Returns the router's message.
    public static func clearQuarantine(socketPath: String, tenant: String) throws -> String {
        var name = Array(tenant.utf8)
        guard name.count < 64, !name.contains(0) else { throw SystemError("tenant name \"\(tenant)\" is too long", EINVAL) }
        name += [UInt8](repeating: 0, count: 64 - name.count) // sluice_tenant_req.tenant
        let answer = try request(socketPath: socketPath, opcode: SLUICE_OP_CLEAR_QUARANTINE.rawValue, payload: name)
        guard answer.status == 0 else { throw SystemError("router refused: \(answer.reason)", answer.status) }
        return String(decoding: answer.body, as: UTF8.self)
    }

    public struct Answer {
        public var status: Int32
        public var reason: String
        public var body: [UInt8]
    }

    static func request(socketPath: String, opcode: UInt32, payload: [UInt8] = []) throws -> Answer {
        let fd = try Sys.retrying("socket") { socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        defer { Sys.close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(socketPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw SystemError("connect(\(socketPath))", ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let r = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { throw SystemError("connect(\(socketPath))", errno) }
        var hdr = sluice_msg_hdr()
        hdr.magic = SLUICE_WIRE_MAGIC
        hdr.version = UInt16(SLUICE_WIRE_VERSION)
        hdr.opcode = UInt16(opcode)
        hdr.length = UInt32(MemoryLayout<sluice_msg_hdr>.size + payload.count)
        hdr.seq = 1
        let message = withUnsafeBytes(of: hdr) { Array($0) } + payload
        let sent = message.withUnsafeBytes { sluice_send_fds(fd, $0.baseAddress, $0.count, nil, 0) }
        guard sent >= 0 else { throw SystemError("send", errno) }
        let cap = MemoryLayout<sluice_reply_hdr>.size + Int(SLUICE_STATUS_MAX)
        var buf = [UInt8](repeating: 0, count: cap)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 30_000) == 1 else { throw SystemError("no answer within 30 s", ETIMEDOUT) }
        var fds: [Int32] = [-1, -1, -1, -1]
        var nfds: Int32 = 0, truncated: Int32 = 0
        let n = buf.withUnsafeMutableBytes { sluice_recv_fds(fd, $0.baseAddress, $0.count, &fds, 0, &nfds, &truncated) }
        guard n >= MemoryLayout<sluice_reply_hdr>.size, truncated == 0 else { throw SystemError("short or oversized answer", EPROTO) }
        let rep = buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_reply_hdr.self) }
        let reason = withUnsafeBytes(of: rep.reason) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return Answer(status: rep.status, reason: reason, body: Array(buf[MemoryLayout<sluice_reply_hdr>.size..<Int(n)]))
    }
}
