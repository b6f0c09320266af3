import Foundation
import XCTest
import SluiceVerbs

/// The verbs API of libsluice-verbs, driven from Swift against a real router:
/// every operation's data is checked byte for byte.
final class VerbsTests: XCTestCase {
    var router: RouterProcess!
    var a: VerbsEndpoint!
    var b: VerbsEndpoint!

    override func setUpWithError() throws {
        router = try RouterProcess()
        a = try VerbsEndpoint(socket: router.socket("alpha"))
        b = try VerbsEndpoint(socket: router.socket("alpha"))
    }

    override func tearDownWithError() throws {
        a = nil
        b = nil
        XCTAssertEqual(router.stop(), 0, "router exit status; stderr: \(router.stderrText())")
    }

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    /// A connected pair of QPs, a on one session and b on the other.
    func pair(useGID: Bool = false, inline: UInt32 = 0) throws -> (UnsafeMutablePointer<ibv_qp>, UnsafeMutablePointer<ibv_qp>) {
        let qa = try a.createQP(inline: inline)
        let qb = try b.createQP(inline: inline)
        try a.connect(qa, to: qb, of: b, access: rw, useGID: useGID)
        try b.connect(qb, to: qa, of: a, access: rw, useGID: useGID)
        return (qa, qb)
    }

    func testDeviceAttributes() throws {
        var attr = ibv_device_attr()
        XCTAssertEqual(ibv_query_device(a.context, &attr), 0)
        XCTAssertEqual(attr.phys_port_cnt, 1)
        XCTAssertGreaterThan(attr.max_qp, 0)
        var port = ibv_port_attr()
        XCTAssertEqual(___ibv_query_port(a.context, 1, &port), 0)
        XCTAssertEqual(port.state, IBV_PORT_ACTIVE)
        XCTAssertEqual(port.link_layer, UInt8(IBV_LINK_LAYER_INFINIBAND))
        XCTAssertNotEqual(a.lid, 0)
        XCTAssertNotEqual(a.lid, b.lid, "each session is its own endpoint")
        XCTAssertNotEqual(___ibv_query_port(a.context, 2, &port), 0, "only port 1 exists")
        var g = ibv_gid()
        XCTAssertNotEqual(ibv_query_gid(a.context, 1, 1, &g), 0, "only GID index 0 exists")
        withUnsafeBytes(of: a.gid) { XCTAssertEqual(Array($0[10..<13]), [0xff, 0xff, 10], "GID 0 is ::ffff:<virtual IPv4>") }
    }

    func testRDMAWriteIntoUnalignedRegions() throws {
        let (qa, _) = try pair()
        let src = TestBuffer(pages: 4), dst = TestBuffer(pages: 4)
        let len = 10_000
        src.fill(7, len, seed: 3)
        dst.fill(0, dst.size, seed: 0)
        let before = dst.bytes(0, dst.size)
        let smr = try a.register(src.base + 7, len, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue))
        let dmr = try b.register(dst.base + 13, len, rw)
        XCTAssertEqual(dst.bytes(0, dst.size), before, "registration keeps the buffer's contents")
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base + 7, len, smr)], remote: (addr(dst.base + 13), dmr.pointee.rkey))
        let wc = a.poll(1)
        XCTAssertEqual(wc.count, 1)
        XCTAssertEqual(wc.first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(wc.first?.opcode, IBV_WC_RDMA_WRITE)
        XCTAssertEqual(wc.first?.wr_id, 1)
        XCTAssertEqual(dst.bytes(13, len), src.bytes(7, len), "data landed byte for byte")
        XCTAssertEqual(dst.bytes(0, 13), Array(before[0..<13]), "bytes before the region untouched")
        XCTAssertEqual(dst.bytes(13 + len, 100), Array(before[(13 + len)..<(13 + len + 100)]), "bytes after the region untouched")
        b.assertQuiet()
    }

    func testWriteWithImmediateConsumesAReceive() throws {
        let (qa, qb) = try pair(useGID: true)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1), rbuf = TestBuffer(pages: 1)
        src.fill(0, 512, seed: 9)
        let smr = try a.register(src.base, 512, rw)
        let dmr = try b.register(dst.base + 100, 512, rw)
        let rmr = try b.register(rbuf.base, 64, rw)
        try b.postRecv(qb, id: 77, [sge(rbuf.base, 64, rmr)])
        try a.postSend(qa, id: 5, IBV_WR_RDMA_WRITE_WITH_IMM, [sge(src.base, 512, smr)],
                       remote: (addr(dst.base + 100), dmr.pointee.rkey), imm: 0x1234_5678)
        let wa = a.poll(1), wb = b.poll(1)
        XCTAssertEqual(wa.first?.status, IBV_WC_SUCCESS)
        let r = try XCTUnwrap(wb.first)
        XCTAssertEqual(r.status, IBV_WC_SUCCESS)
        XCTAssertEqual(r.opcode, IBV_WC_RECV_RDMA_WITH_IMM)
        XCTAssertEqual(r.wr_id, 77)
        XCTAssertEqual(r.byte_len, 512)
        XCTAssertEqual(UInt32(bigEndian: r.imm_data), 0x1234_5678)
        XCTAssertNotEqual(r.wc_flags & UInt32(IBV_WC_WITH_IMM.rawValue), 0)
        XCTAssertNotEqual(r.wc_flags & UInt32(IBV_WC_GRH.rawValue), 0, "GID-addressed traffic carries a GRH")
        XCTAssertEqual(r.qp_num, qb.pointee.qp_num)
        XCTAssertEqual(r.src_qp, qa.pointee.qp_num)
        XCTAssertEqual(dst.bytes(100, 512), src.bytes(0, 512))
    }

    func testRDMARead() throws {
        let (qa, _) = try pair()
        let remote = TestBuffer(pages: 3), local = TestBuffer(pages: 3)
        remote.fill(5, 9000, seed: 42)
        let rmr = try b.register(remote.base + 5, 9000, rw)
        let lmr = try a.register(local.base + 1, 9000, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue))
        // Two local SGEs: the read scatters.
        try a.postSend(qa, id: 9, IBV_WR_RDMA_READ, [sge(local.base + 1, 4000, lmr), sge(local.base + 4001, 5000, lmr)],
                       remote: (addr(remote.base + 5), rmr.pointee.rkey))
        let wc = a.poll(1)
        XCTAssertEqual(wc.first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(wc.first?.opcode, IBV_WC_RDMA_READ)
        XCTAssertEqual(wc.first?.byte_len, 9000)
        XCTAssertEqual(local.bytes(1, 9000), remote.bytes(5, 9000))
    }

    func testSendGathersSeveralSGEsAndScattersIntoSeveral() throws {
        let (qa, qb) = try pair()
        let s1 = TestBuffer(pages: 1), s2 = TestBuffer(pages: 2), r = TestBuffer(pages: 2)
        s1.fill(0, 4096, seed: 1)
        s2.fill(0, 8192, seed: 2)
        let m1 = try a.register(s1.base, 4096, rw)
        let m2 = try a.register(s2.base, 8192, rw)
        let mr = try b.register(r.base, 8192, rw)
        try b.postRecv(qb, id: 100, [sge(r.base, 3000, mr), sge(r.base + 4000, 4000, mr)])
        try a.postSend(qa, id: 1, IBV_WR_SEND, [sge(s1.base + 10, 1000, m1), sge(s2.base + 3, 3000, m2), sge(s1.base + 2000, 2000, m1)])
        let wb = b.poll(1)
        XCTAssertEqual(wb.first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(wb.first?.opcode, IBV_WC_RECV)
        XCTAssertEqual(wb.first?.byte_len, 6000)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        let sent = s1.bytes(10, 1000) + s2.bytes(3, 3000) + s1.bytes(2000, 2000)
        let received = r.bytes(0, 3000) + r.bytes(4000, 3000)
        XCTAssertEqual(received, sent)
    }

    func testInlineAndUnsignaledSends() throws {
        let (qa, qb) = try pair(inline: 64)
        let r = TestBuffer(pages: 1)
        let mr = try b.register(r.base, 4096, rw)
        for i in 0..<16 { try b.postRecv(qb, id: UInt64(i), [sge(r.base + i * 64, 64, mr)]) }
        // Inline data comes from unregistered memory and may be reused at once.
        var scratch = [UInt8](repeating: 0, count: 48)
        for i in 0..<16 {
            for k in 0..<48 { scratch[k] = UInt8(truncatingIfNeeded: i * 31 + k) }
            let last = i == 15
            try scratch.withUnsafeMutableBytes { p in
                let s = ibv_sge(addr: addr(p.baseAddress!), length: 48, lkey: 0)
                try a.postSend(qa, id: UInt64(1000 + i), IBV_WR_SEND, [s],
                               flags: ibv_send_flags(IBV_SEND_INLINE.rawValue | (last ? IBV_SEND_SIGNALED.rawValue : 0)))
            }
            scratch = scratch.map { _ in 0xee }
        }
        let wb = b.poll(16)
        XCTAssertEqual(wb.count, 16)
        XCTAssertEqual(wb.map(\.wr_id), (0..<16).map(UInt64.init), "receives complete in order")
        let wa = a.poll(1)
        XCTAssertEqual(wa.map(\.wr_id), [1015], "only the signaled send completes")
        a.assertQuiet()
        for i in 0..<16 {
            XCTAssertEqual(r.bytes(i * 64, 48), (0..<48).map { UInt8(truncatingIfNeeded: i * 31 + $0) }, "message \(i)")
        }
    }

    func testOverlappingRegistrationsKeepZeroCopy() throws {
        let (qa, _) = try pair()
        let buf = TestBuffer(pages: 4)
        buf.fill(0, buf.size, seed: 5)
        let before = buf.bytes(0, buf.size)
        // First a small region in page 0, then one that overlaps it and runs
        // into page 2, then one entirely inside the second.
        let m1 = try b.register(buf.base + 100, 100, rw)
        let m2 = try b.register(buf.base + 150, 9000, rw)
        let m3 = try b.register(buf.base + 5000, 10, rw)
        XCTAssertEqual(buf.bytes(0, buf.size), before, "re-backing preserved every byte on the pages")
        let src = TestBuffer(pages: 1)
        src.fill(0, 4096, seed: 77)
        let smr = try a.register(src.base, 4096, rw)
        // Writes through each region's rkey land in the memory the tenant sees.
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 100, smr)], remote: (addr(buf.base + 100), m1.pointee.rkey))
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(src.base + 200, 3000, smr)], remote: (addr(buf.base + 6000), m2.pointee.rkey))
        try a.postSend(qa, id: 3, IBV_WR_RDMA_WRITE, [sge(src.base + 300, 10, smr)], remote: (addr(buf.base + 5000), m3.pointee.rkey))
        let wc = a.poll(3)
        XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertEqual(buf.bytes(100, 100), src.bytes(0, 100))
        XCTAssertEqual(buf.bytes(6000, 3000), src.bytes(200, 3000))
        XCTAssertEqual(buf.bytes(5000, 10), src.bytes(300, 10))
        XCTAssertEqual(buf.bytes(0, 100), Array(before[0..<100]))
    }

    func testTwoHundredQueuePairsInOneProcess() throws {
        var pairs: [(UnsafeMutablePointer<ibv_qp>, UnsafeMutablePointer<ibv_qp>)] = []
        for _ in 0..<100 {
            let qa = try a.createQP(sendDepth: 4, recvDepth: 4, sge: 1)
            let qb = try b.createQP(sendDepth: 4, recvDepth: 4, sge: 1)
            try a.connect(qa, to: qb, of: b, access: rw)
            try b.connect(qb, to: qa, of: a, access: rw)
            pairs.append((qa, qb))
        }
        XCTAssertEqual(Set(pairs.flatMap { [$0.0.pointee.qp_num, $0.1.pointee.qp_num] }).count, 200, "200 distinct QPNs")
        let s = TestBuffer(pages: 1), r = TestBuffer(pages: 4)
        let smr = try a.register(s.base, 4096, rw)
        let rmr = try b.register(r.base, 4 * 4096, rw)
        for i in 0..<100 {
            s.base.storeBytes(of: UInt32(i * 3 + 1), toByteOffset: i * 4, as: UInt32.self)
            try b.postRecv(pairs[i].1, id: UInt64(i), [sge(r.base + i * 64, 64, rmr)])
        }
        for i in 0..<100 {
            try a.postSend(pairs[i].0, id: UInt64(i), IBV_WR_SEND, [sge(s.base + i * 4, 4, smr)])
        }
        XCTAssertEqual(a.poll(100).filter { $0.status == IBV_WC_SUCCESS }.count, 100)
        let wb = b.poll(100)
        XCTAssertEqual(wb.count, 100)
        for wc in wb {
            let i = Int(wc.wr_id)
            XCTAssertEqual(wc.qp_num, pairs[i].1.pointee.qp_num)
            XCTAssertEqual(wc.src_qp, pairs[i].0.pointee.qp_num)
            XCTAssertEqual(r.base.load(fromByteOffset: i * 64, as: UInt32.self), UInt32(i * 3 + 1))
        }
        let objects = try router.objects()
        XCTAssertEqual(objects["qp"], 200)
    }

    func testABadRemoteKeyFailsAndFlushesTheRest() throws {
        let (qa, _) = try pair()
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let smr = try a.register(src.base, 4096, rw)
        let dmr = try b.register(dst.base, 4096, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 64, smr)], remote: (addr(dst.base), dmr.pointee.rkey ^ 0x5a5a))
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(src.base, 64, smr)], remote: (addr(dst.base), dmr.pointee.rkey))
        let wc = a.poll(2)
        XCTAssertEqual(wc.map(\.wr_id), [1, 2])
        XCTAssertEqual(wc.map(\.status), [IBV_WC_REM_ACCESS_ERR, IBV_WC_WR_FLUSH_ERR])
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        // Out of bounds by one byte, on a fresh pair, is refused the same way.
        let (qa2, _) = try pair()
        try a.postSend(qa2, id: 3, IBV_WR_RDMA_WRITE, [sge(src.base, 64, smr)], remote: (addr(dst.base) + 4096 - 63, dmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        let denials = router.auditRecords().filter { ($0["event"] as? String) == "datapath" }
        XCTAssertGreaterThanOrEqual(denials.count, 2)
    }

    func testADeregisteredRegionsKeysAreDead() throws {
        let (qa, _) = try pair()
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let smr = try a.register(src.base, 4096, rw)
        let dmr = try b.register(dst.base, 4096, rw)
        let rkey = dmr.pointee.rkey
        b.deregister(dmr)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 64, smr)], remote: (addr(dst.base), rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
    }

    func testReceiverNotReadyHonoursRNRRetry() throws {
        let qa = try a.createQP()
        let qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, rnrRetry: 2)
        try b.connect(qb, to: qa, of: a, access: rw)
        let s = TestBuffer(pages: 1)
        let smr = try a.register(s.base, 4096, rw)
        try a.postSend(qa, id: 4, IBV_WR_SEND, [sge(s.base, 8, smr)])
        // min_rnr_timer 1 (10 µs) and 2 retries: the error comes quickly.
        let wc = a.poll(1)
        XCTAssertEqual(wc.first?.status, IBV_WC_RNR_RETRY_EXC_ERR)
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
    }

    func testConnectingToAnotherTenantIsRefused() throws {
        let c = try VerbsEndpoint(socket: router.socket("beta"))
        let qa = try a.createQP()
        let qc = try c.createQP()
        XCTAssertThrowsError(try a.connect(qa, to: qc, of: c, access: rw)) { error in
            XCTAssertTrue("\(error)".contains("Permission denied"), "\(error)")
        }
        XCTAssertThrowsError(try a.connect(try a.createQP(), to: qc, of: b, access: rw), "a QPN at the wrong address is not found")
    }
}

extension VerbsTests {
    /// Once a completion is polled its send-queue slot is free, as on
    /// hardware: a one-deep queue can post again at once, every time.
    func testAPolledCompletionFreesItsSendSlot() throws {
        let qa = try a.createQP(sendDepth: 1, recvDepth: 1, sge: 1)
        let qb = try b.createQP(sendDepth: 1, recvDepth: 1, sge: 1)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, 4096, rw), dm = try b.register(dst.base, 4096, rw)
        // Busy-poll, and post the moment the completion shows: the window
        // between a completion and its slot's release is what is tested.
        var wc = ibv_wc()
        for i in 0..<20000 {
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey))
            var spins = 0
            while ibv_poll_cq(a.cq, 1, &wc) == 0 {
                spins += 1
                if spins > 100_000_000 { return XCTFail("no completion for write \(i)") }
            }
            XCTAssertEqual(wc.status, IBV_WC_SUCCESS, "write \(i)")
            if wc.status != IBV_WC_SUCCESS { break }
        }
    }
}

extension VerbsTests {
    /// A zero-byte WRITE_WITH_IMM carries only its immediate: as on a NIC,
    /// its rkey is not checked (here 0), and the receiver is notified.
    func testAZeroLengthWriteWithImmediateNeedsNoKey() throws {
        let (qa, qb) = try pair()
        let r = TestBuffer(pages: 1)
        let rm = try b.register(r.base, 64, rw)
        try b.postRecv(qb, id: 9, [sge(r.base, 64, rm)])
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE_WITH_IMM, [], remote: (0, 0), imm: 0xfeed)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        let wc = try XCTUnwrap(b.poll(1).first)
        XCTAssertEqual(wc.opcode, IBV_WC_RECV_RDMA_WITH_IMM)
        XCTAssertEqual(wc.byte_len, 0)
        XCTAssertEqual(UInt32(bigEndian: wc.imm_data), 0xfeed)
    }
}

extension VerbsTests {
    /// rnr_retry 0 fails at the first RNR NAK, without retrying: a receive
    /// posted after the NAK but well before the RNR timer (655 ms for
    /// min_rnr_timer 0) must not rescue the send.
    func testRNRRetryZeroMeansNoRetry() throws {
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, rnrRetry: 0)
        try b.connect(qb, to: qa, of: a, access: rw)
        var attr = ibv_qp_attr()
        attr.min_rnr_timer = 0 // 655.36 ms between RNR retries
        try b.modify(qb, &attr, [IBV_QP_MIN_RNR_TIMER])
        let s = TestBuffer(pages: 1), r = TestBuffer(pages: 1)
        let sm = try a.register(s.base, 4096, rw), rm = try b.register(r.base, 4096, rw)
        try a.postSend(qa, id: 1, IBV_WR_SEND, [sge(s.base, 8, sm)])
        usleep(50_000)
        try b.postRecv(qb, id: 2, [sge(r.base, 64, rm)])
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_RNR_RETRY_EXC_ERR)
    }
}

extension VerbsTests {
    /// More signaled requests than either CQ holds, posted without polling:
    /// those that do not fit wait (at the head of the send queue, or in the
    /// router) until the tenant polls, even with the router asleep, and
    /// every completion arrives once, in order. On the verbs backend the
    /// device must not be handed more than the rings can take.
    func testCompletionsBeyondTheCQArriveInOrderOncePolled() throws {
        let x = try VerbsEndpoint(socket: router.socket("alpha"), cqDepth: 4)
        let y = try VerbsEndpoint(socket: router.socket("alpha"), cqDepth: 4)
        let qx = try x.createQP(sendDepth: 32, recvDepth: 32, sge: 1)
        let qy = try y.createQP(sendDepth: 32, recvDepth: 32, sge: 1)
        try x.connect(qx, to: qy, of: y, access: rw)
        try y.connect(qy, to: qx, of: x, access: rw)
        // Receives take the first page of dst, WRITEs the second.
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 2)
        let sm = try x.register(src.base, 4096, rw), dm = try y.register(dst.base, 8192, rw)
        let total = 30, sends = 15 // both CQs hold 8; x's send queue 32
        for i in 0..<sends { try y.postRecv(qy, id: UInt64(1000 + i), [sge(dst.base + 64 * i, 64, dm)]) }
        for i in 0..<total {
            src.base.storeBytes(of: UInt8(i), toByteOffset: 64 * i, as: UInt8.self)
            let isSend = i % 2 == 0
            let deadline = Date().addingTimeInterval(10)
            while true {
                do {
                    if isSend {
                        try x.postSend(qx, id: UInt64(i), IBV_WR_SEND, [sge(src.base + 64 * i, 8, sm)])
                    } else {
                        try x.postSend(qx, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base + 64 * i, 8, sm)],
                                       remote: (addr(dst.base + 4096 + 64 * i), dm.pointee.rkey))
                    }
                    break
                } catch let e as VerbsError where e.code == ENOMEM && Date() < deadline {
                    usleep(1000) // the send queue is full: the router takes requests as the CQ has room
                }
            }
        }
        // Long enough for the router to finish everything it can and sleep.
        usleep(500_000)
        // Both CQs at once: SENDs beyond y's CQ wait for it, and x's
        // completions behind them.
        var wcs: [ibv_wc] = [], rcs: [ibv_wc] = []
        let deadline = Date().addingTimeInterval(10)
        while (wcs.count < total || rcs.count < sends) && Date() < deadline {
            wcs += x.poll(1, seconds: 0.01)
            rcs += y.poll(1, seconds: 0.01)
        }
        XCTAssertEqual(wcs.map(\.wr_id), (0..<UInt64(total)).map { $0 }, "send completions, once each, in order")
        XCTAssertTrue(wcs.allSatisfy { $0.status == IBV_WC_SUCCESS }, "statuses \(wcs.map(\.status.rawValue))")
        XCTAssertEqual(rcs.map(\.wr_id), (0..<UInt64(sends)).map { 1000 + $0 }, "receive completions, once each, in order")
        XCTAssertTrue(rcs.allSatisfy { $0.status == IBV_WC_SUCCESS && $0.byte_len == 8 })
        for i in 0..<total {
            // SEND i lands in receive i/2's buffer; WRITE i in the second page.
            let at = i % 2 == 0 ? 64 * (i / 2) : 4096 + 64 * i
            XCTAssertEqual(dst.bytes(at, 1), [UInt8(i)], "request \(i)")
        }
        x.assertQuiet()
        y.assertQuiet()
    }
}

extension VerbsTests {
    /// Mostly unsignaled requests against a CQ far smaller than the send
    /// queue: on the verbs backend every device request is signaled, so
    /// the router must not let the device hold more than its real CQ takes
    /// (a NIC would overrun it: IBV_EVENT_CQ_ERR); they wait and all run.
    func testUnsignaledBurstsBeyondTheCQAllRun() throws {
        let x = try VerbsEndpoint(socket: router.socket("alpha"), cqDepth: 4)
        let y = try VerbsEndpoint(socket: router.socket("alpha"), cqDepth: 4)
        let qx = try x.createQP(sendDepth: 32, recvDepth: 4, sge: 1)
        let qy = try y.createQP(sendDepth: 4, recvDepth: 4, sge: 1)
        try x.connect(qx, to: qy, of: y, access: rw)
        try y.connect(qy, to: qx, of: x, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try x.register(src.base, 4096, rw), dm = try y.register(dst.base, 4096, rw)
        for round in 0..<4 {
            for i in 0..<30 {
                src.base.storeBytes(of: UInt8(truncatingIfNeeded: i + round), toByteOffset: 64 * i, as: UInt8.self)
                try x.postSend(qx, id: UInt64(100 * round + i), IBV_WR_RDMA_WRITE, [sge(src.base + 64 * i, 8, sm)],
                               flags: i % 10 == 9 ? IBV_SEND_SIGNALED : ibv_send_flags(0),
                               remote: (addr(dst.base + 64 * i), dm.pointee.rkey))
            }
            let wcs = x.poll(3)
            XCTAssertEqual(wcs.map(\.wr_id), [9, 19, 29].map { UInt64(100 * round + $0) }, "round \(round)")
            XCTAssertTrue(wcs.allSatisfy { $0.status == IBV_WC_SUCCESS }, "round \(round): \(wcs.map(\.status.rawValue))")
            for i in 0..<30 { XCTAssertEqual(dst.bytes(64 * i, 1), [UInt8(truncatingIfNeeded: i + round)], "round \(round) write \(i)") }
        }
        x.assertQuiet()
    }
}

extension VerbsTests {
    /// A connection reset and made again, in either order of the two ends,
    /// carries traffic both ways each time (on the verbs backend the
    /// router draws new PSNs for each connection, whichever end moves first).
    func testAConnectionResetAndMadeAgainWorksBothWays() throws {
        let qa = try a.createQP(), qb = try b.createQP()
        let s = TestBuffer(pages: 1), r = TestBuffer(pages: 1)
        let sm = try a.register(s.base, 4096, rw), rm = try b.register(r.base, 4096, rw)
        for round in 0..<3 {
            if round > 0 {
                var reset = ibv_qp_attr()
                reset.qp_state = IBV_QPS_RESET
                try a.modify(qa, &reset, [IBV_QP_STATE])
                try b.modify(qb, &reset, [IBV_QP_STATE])
            }
            if round % 2 == 0 {
                try a.connect(qa, to: qb, of: b, access: rw)
                try b.connect(qb, to: qa, of: a, access: rw)
            } else {
                try b.connect(qb, to: qa, of: a, access: rw)
                try a.connect(qa, to: qb, of: b, access: rw)
            }
            s.fill(0, 64, seed: UInt8(round))
            try a.postSend(qa, id: UInt64(round), IBV_WR_RDMA_WRITE, [sge(s.base, 64, sm)], remote: (addr(r.base), rm.pointee.rkey))
            XCTAssertEqual(a.poll(1).map(\.status), [IBV_WC_SUCCESS], "round \(round): a -> b")
            XCTAssertEqual(r.bytes(0, 64), s.bytes(0, 64), "round \(round)")
            try b.postSend(qb, id: UInt64(round), IBV_WR_RDMA_READ, [sge(r.base + 128, 64, rm)], remote: (addr(s.base), sm.pointee.rkey))
            XCTAssertEqual(b.poll(1).map(\.status), [IBV_WC_SUCCESS], "round \(round): b reads a")
            XCTAssertEqual(r.bytes(128, 64), s.bytes(0, 64), "round \(round)")
        }
    }
}

extension VerbsTests {
    /// Access flags a QP gets or loses after RESET->INIT (INIT->INIT,
    /// RTR->RTS, RTS->RTS) take effect for remote requests. On the verbs
    /// backend they must reach the device's QP too: nested, the device is
    /// the outer router, which refuses a WRITE its QP was not granted.
    func testQPAccessFlagsChangedAfterINITTakeEffect() throws {
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, 4096, rw), dm = try b.register(dst.base, 4096, rw)
        let localOnly = IBV_ACCESS_LOCAL_WRITE.rawValue
        enum Change { case initToInit, rtrToRts, rtsToRts }
        // (how the flags change, the responder's flags at INIT, after the change, whether a WRITE may land)
        let cases: [(Change, UInt32, UInt32, Bool)] = [
            (.initToInit, localOnly, rw.rawValue, true),
            (.rtrToRts, localOnly, rw.rawValue, true),
            (.rtsToRts, localOnly, rw.rawValue, true),
            (.rtsToRts, rw.rawValue, localOnly, false),
        ]
        for (n, (change, initial, later, allowed)) in cases.enumerated() {
            let qa = try a.createQP(), qb = try b.createQP()
            try a.connect(qa, to: qb, of: b, access: rw)
            // qb by hand: INIT with `initial`, the change where it is asked.
            var at = ibv_qp_attr()
            at.qp_state = IBV_QPS_INIT
            at.port_num = 1
            at.qp_access_flags = initial
            try b.modify(qb, &at, [IBV_QP_STATE, IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_ACCESS_FLAGS])
            if change == .initToInit {
                at = ibv_qp_attr()
                at.qp_state = IBV_QPS_INIT
                at.qp_access_flags = later
                try b.modify(qb, &at, [IBV_QP_STATE, IBV_QP_ACCESS_FLAGS])
            }
            at = ibv_qp_attr()
            at.qp_state = IBV_QPS_RTR
            at.path_mtu = IBV_MTU_4096
            at.dest_qp_num = qa.pointee.qp_num
            at.max_dest_rd_atomic = 1
            at.min_rnr_timer = 1
            at.ah_attr.port_num = 1
            at.ah_attr.dlid = a.lid
            try b.modify(qb, &at, [IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                                   IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER])
            at = ibv_qp_attr()
            at.qp_state = IBV_QPS_RTS
            at.timeout = 14
            at.retry_cnt = 7
            at.rnr_retry = 7
            at.max_rd_atomic = 1
            var mask = [IBV_QP_STATE, IBV_QP_TIMEOUT, IBV_QP_RETRY_CNT, IBV_QP_RNR_RETRY, IBV_QP_SQ_PSN, IBV_QP_MAX_QP_RD_ATOMIC]
            if change == .rtrToRts {
                at.qp_access_flags = later
                mask.append(IBV_QP_ACCESS_FLAGS)
            }
            try b.modify(qb, &at, mask)
            if change == .rtsToRts {
                at = ibv_qp_attr()
                at.qp_state = IBV_QPS_RTS
                at.qp_access_flags = later
                try b.modify(qb, &at, [IBV_QP_STATE, IBV_QP_ACCESS_FLAGS])
            }
            var q = ibv_qp_attr(), qi = ibv_qp_init_attr()
            XCTAssertEqual(ibv_query_qp(qb, &q, Int32(IBV_QP_ACCESS_FLAGS.rawValue), &qi), 0)
            XCTAssertEqual(q.qp_access_flags, later, "case \(n)")

            memset(dst.base, 0, 4096)
            src.fill(0, 128, seed: UInt8(40 + n))
            try a.postSend(qa, id: UInt64(n), IBV_WR_RDMA_WRITE, [sge(src.base, 128, sm)], remote: (addr(dst.base), dm.pointee.rkey))
            let wc = a.poll(1)
            if allowed {
                XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS], "case \(n) (\(change)): the granted remote write works")
                XCTAssertEqual(dst.bytes(0, 128), src.bytes(0, 128), "case \(n)")
            } else {
                // A NAK for an operation the responder QP does not enable:
                // an invalid request at the responder (as rxe reports it).
                XCTAssertEqual(wc.map(\.status), [IBV_WC_REM_INV_REQ_ERR], "case \(n) (\(change)): the revoked remote write fails")
                XCTAssertEqual(dst.bytes(0, 128), [UInt8](repeating: 0, count: 128), "case \(n): nothing landed")
                XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
            }
        }
    }
}
