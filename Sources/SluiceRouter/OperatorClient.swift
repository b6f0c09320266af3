#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys

/// The operator side of `<runtime-dir>/control.sock`.
public enum OperatorClient {
    /// Asks the router for its status; returns the JSON bytes.
    public static func status(socketPath: String) throws -> [UInt8] {
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
        var req = sluice_status_req()
        req.hdr.magic = SLUICE_WIRE_MAGIC
        req.hdr.version = UInt16(SLUICE_WIRE_VERSION)
        req.hdr.opcode = UInt16(SLUICE_OP_STATUS.rawValue)
        req.hdr.length = UInt32(MemoryLayout<sluice_status_req>.size)
        req.hdr.seq = 1
        let sent = withUnsafeBytes(of: req) { sluice_send_fds(fd, $0.baseAddress, $0.count, nil, 0) }
        guard sent >= 0 else { throw SystemError("send", errno) }
        let cap = MemoryLayout<sluice_reply_hdr>.size + Int(SLUICE_STATUS_MAX)
        var buf = [UInt8](repeating: 0, count: cap)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 5000) == 1 else { throw SystemError("no answer within 5 s", ETIMEDOUT) }
        var fds: [Int32] = [-1, -1, -1, -1]
        var nfds: Int32 = 0, truncated: Int32 = 0
        let n = buf.withUnsafeMutableBytes { sluice_recv_fds(fd, $0.baseAddress, $0.count, &fds, 0, &nfds, &truncated) }
        guard n >= MemoryLayout<sluice_reply_hdr>.size, truncated == 0 else { throw SystemError("short or oversized answer", EPROTO) }
        let rep = buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_reply_hdr.self) }
        guard rep.status == 0 else { throw SystemError("router refused the status request", rep.status) }
        return Array(buf[MemoryLayout<sluice_reply_hdr>.size..<Int(n)])
    }
}
