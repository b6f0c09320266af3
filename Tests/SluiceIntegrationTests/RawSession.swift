import Foundation
import XCTest
import SluiceWire
import CSluiceSys

/// A tenant that speaks the wire protocol by hand, to send what the library
/// never would: bad framing, foreign handles, unsealed memfds, garbage rings.
final class RawSession {
    let fd: Int32
    private var seq: UInt32 = 0
    /// The doorbell's write end from OPEN: wakes a sleeping router.
    var doorbell: Int32 = -1
    /// The session page from OPEN, mapped: where posted-QP hints go.
    var page: UnsafeMutablePointer<sluice_session_page>?

    init(socket path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard r == 0 else { throw NSError(domain: "raw", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "connect \(path): \(errno)"]) }
    }

    deinit {
        close(fd)
        if doorbell >= 0 { close(doorbell) }
        if let page { munmap(page, Int(SLUICE_SESSION_PAGE_SIZE)) }
    }

    /// What the library does after publishing a producer index: the QP's
    /// posted-QP hint (the router looks at a QP when hinted), then the
    /// doorbell of a router that may sleep.
    func ring(hint handle: UInt32? = nil) {
        if let handle, let page { sluice_hint_posted(page, handle) }
        var one: UInt64 = 1
        _ = write(doorbell, &one, 8)
    }

    struct Answer {
        var bytes: [UInt8]
        var fds: [Int32]
        var header: sluice_reply_hdr { bytes.withUnsafeBytes { $0.loadUnaligned(as: sluice_reply_hdr.self) } }
        var status: Int32 { header.status }
        var reason: String {
            withUnsafeBytes(of: header.reason) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        func body<T>(_: T.Type) -> T { bytes.withUnsafeBytes { $0.loadUnaligned(as: T.self) } }
    }

    /// Fills in a correct header unless the caller already set the magic.
    func header<T>(_ req: inout T, opcode: UInt32) {
        seq += 1
        withUnsafeMutableBytes(of: &req) { raw in
            var h = sluice_msg_hdr()
            h.magic = SLUICE_WIRE_MAGIC
            h.version = UInt16(SLUICE_WIRE_VERSION)
            h.opcode = UInt16(opcode)
            h.length = UInt32(raw.count)
            h.seq = seq
            withUnsafeBytes(of: h) { raw.copyMemory(from: $0) }
        }
    }

    func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) -> Answer? {
        let n = bytes.withUnsafeBytes { b in fds.withUnsafeBufferPointer { sluice_send_fds(fd, b.baseAddress, b.count, $0.baseAddress, Int32($0.count)) } }
        guard n >= 0 else { return nil }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, 5000) == 1 else { return nil }
        var buf = [UInt8](repeating: 0, count: Int(SLUICE_MSG_MAX))
        var got: [Int32] = [-1, -1, -1, -1]
        var nfds: Int32 = 0, trunc: Int32 = 0
        let r = buf.withUnsafeMutableBytes { sluice_recv_fds(fd, $0.baseAddress, $0.count, &got, 4, &nfds, &trunc) }
        guard r >= MemoryLayout<sluice_reply_hdr>.size else { return nil }
        return Answer(bytes: Array(buf[0..<Int(r)]), fds: Array(got.prefix(Int(nfds))))
    }

    func request<T>(_ req: T, opcode: UInt32, fds: [Int32] = []) -> Answer? {
        var r = req
        header(&r, opcode: opcode)
        return sendRaw(withUnsafeBytes(of: r) { Array($0) }, fds: fds)
    }

    /// OPEN; returns the reply body.
    func open() throws -> sluice_open_rep {
        var req = sluice_open_req()
        req.abi_version = SLUICE_WIRE_VERSION
        guard let a = request(req, opcode: SLUICE_OP_OPEN.rawValue), a.status == 0 else { throw XCTSkip("open failed") }
        XCTAssertEqual(a.fds.count, 3, "OPEN passes the session page, the doorbell and the async event pipe")
        if a.fds.count == 3 {
            if let p = mmap(nil, Int(SLUICE_SESSION_PAGE_SIZE), PROT_READ | PROT_WRITE, MAP_SHARED, a.fds[0], 0), p != MAP_FAILED {
                page = p.assumingMemoryBound(to: sluice_session_page.self)
            }
            close(a.fds[0])
            doorbell = a.fds[1]
            close(a.fds[2])
        }
        return a.body(sluice_open_rep.self)
    }

    func allocPD() -> UInt32? {
        guard let a = request(sluice_alloc_pd_req(), opcode: SLUICE_OP_ALLOC_PD.rawValue), a.status == 0 else { return nil }
        return a.body(sluice_handle_rep.self).handle
    }

    func handleOp(_ opcode: UInt32, _ handle: UInt32) -> Answer? {
        var req = sluice_handle_req()
        req.handle = handle
        return request(req, opcode: opcode)
    }
}
