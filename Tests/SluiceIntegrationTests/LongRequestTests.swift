import Foundation
import XCTest
import SluiceVerbs
import SluiceRouter

/// Requests longer than the router's piece size (256 KiB) move in pieces,
/// one per visit of their QP. Every byte must land where one copy would
/// have put it, across SGE boundaries that fall inside and across pieces,
/// and the completions must be those of one request each, in order.
final class LongRequestTests: XCTestCase {
    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    func testLongWriteReadAndSendMoveEveryByteAcrossSGEsAndPieces() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")])
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let pages = 1100 // 4.3 MiB each side
        let local = TestBuffer(pages: pages), remote = TestBuffer(pages: pages)
        let lm = try a.register(local.base, pages * 4096, rw), rm = try b.register(remote.base, pages * 4096, rw)
        defer { withExtendedLifetime((a, b)) {} }
        // Uneven SGEs: boundaries at odd offsets, one inside the first
        // piece, one just past a piece boundary, one deep in the message.
        let lengths = [100_003, 262_144 - 100_003 + 17, 1_500_001, 2_300_000]
        let total = lengths.reduce(0, +)
        var offsets: [Int] = []
        var at = 13
        for n in lengths {
            offsets.append(at)
            at += n + 4099 // gaps between the local pieces
        }
        XCTAssertLessThanOrEqual(at, pages * 4096)
        func sges(_ buf: TestBuffer, _ mr: UnsafeMutablePointer<ibv_mr>) -> [ibv_sge] {
            zip(offsets, lengths).map { sge(buf.base + $0.0, $0.1, mr) }
        }
        func gathered(_ buf: TestBuffer) -> [UInt8] { zip(offsets, lengths).flatMap { buf.bytes($0.0, $0.1) } }

        // WRITE: four local SGEs into one remote range at an odd offset.
        for (o, n) in zip(offsets, lengths) { local.fill(o, n, seed: UInt8(truncatingIfNeeded: o)) }
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, sges(local, lm), remote: (addr(remote.base) + 7, rm.pointee.rkey))
        // READ it back into a zeroed local range (the same SGE shapes).
        let back = TestBuffer(pages: pages)
        let bm = try a.register(back.base, pages * 4096, rw)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_READ, sges(back, bm), remote: (addr(remote.base) + 7, rm.pointee.rkey))
        let wcs = a.poll(2, seconds: 20)
        XCTAssertEqual(wcs.map(\.wr_id), [1, 2])
        XCTAssertEqual(wcs.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertEqual(wcs.last?.byte_len, UInt32(total))
        let sent = gathered(local)
        XCTAssertTrue(remote.bytes(7, total) == sent, "the WRITE's bytes, in order, at the target")
        XCTAssertTrue(gathered(back) == sent, "the READ brings the same bytes back through the same SGEs")
        XCTAssertEqual(remote.bytes(0, 7), [UInt8](repeating: 0, count: 7), "nothing before the range")
        XCTAssertEqual(remote.bytes(7 + total, 64), [UInt8](repeating: 0, count: 64), "nothing after it")

        // SEND: the same four SGEs into a receive of three other shapes.
        let recvLengths = [777_777, 262_144, total - 777_777 - 262_144]
        var recvSGEs: [ibv_sge] = []
        var r = 1
        for n in recvLengths {
            recvSGEs.append(sge(back.base + r, n, bm))
            r += n + 1
        }
        memset(back.base, 0, pages * 4096)
        try b.postRecv(qb, id: 9, [sge(remote.base + 3, total, rm)])
        try a.postRecv(qa, id: 10, recvSGEs)
        try a.postSend(qa, id: 3, IBV_WR_SEND, sges(local, lm))
        // ... and, once it has arrived (the echo sends what it received:
        // posted earlier, its pieces could overtake the first SEND's on
        // the other QP), one back into the uneven receive.
        let got = b.poll(1, seconds: 20)
        XCTAssertEqual(got.map(\.wr_id), [9])
        XCTAssertEqual(got.map(\.status), [IBV_WC_SUCCESS])
        XCTAssertEqual(got.first?.byte_len, UInt32(total))
        try b.postSend(qb, id: 4, IBV_WR_SEND, [sge(remote.base + 3, total, rm)])
        XCTAssertEqual(b.poll(1, seconds: 20).map(\.status), [IBV_WC_SUCCESS])
        XCTAssertEqual(a.poll(2, seconds: 20).map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertTrue(remote.bytes(3, total) == sent, "the SEND scattered in order")
        var r2 = 1
        var echoed: [UInt8] = []
        for n in recvLengths {
            echoed += back.bytes(r2, n)
            XCTAssertEqual(back.bytes(r2 + n, 1), [0], "nothing between the receive SGEs")
            r2 += n + 1
        }
        XCTAssertTrue(echoed == sent, "the echo scattered over the uneven receive")
        XCTAssertEqual(router.stop(), 0)
    }
}
