import Foundation
import XCTest
import SluiceWire
import CSluiceSys

/// Garbage written straight into the shared rings: an error completion, the
/// QP in ERR, and a router that keeps going.
final class RingAttackTests: XCTestCase {
    var router: RouterProcess!
    var s: RawSession!
    var lid: UInt16 = 0
    var cqRing: UnsafeMutableRawPointer!
    var cqSize = 0
    var qpRing: UnsafeMutableRawPointer!
    var qpSize = 0
    var layout = sluice_qp_layout()
    var sqCap: UInt32 = 0
    var qpn: UInt32 = 0
    var qpHandle: UInt32 = 0

    override func setUpWithError() throws {
        router = try RouterProcess()
        s = try RawSession(socket: router.socket("alpha"))
        lid = try s.open().lid
        let pd = try XCTUnwrap(s.allocPD())
        var cqReq = sluice_create_cq_req()
        cqReq.cqe = 16
        let cq = try XCTUnwrap(s.request(cqReq, opcode: SLUICE_OP_CREATE_CQ.rawValue))
        XCTAssertEqual(cq.status, 0, cq.reason)
        let cqRep = cq.body(sluice_create_cq_rep.self)
        cqSize = Int(cqRep.ring_size)
        cqRing = mmap(nil, cqSize, PROT_READ | PROT_WRITE, MAP_SHARED, cq.fds[0], 0)
        close(cq.fds[0])
        var qpReq = sluice_create_qp_req()
        qpReq.pd = pd
        qpReq.send_cq = cqRep.handle
        qpReq.recv_cq = cqRep.handle
        qpReq.qp_type = UInt32(SLUICE_QPT_RC)
        qpReq.max_send_wr = 4
        qpReq.max_recv_wr = 4
        qpReq.max_send_sge = 1
        qpReq.max_recv_sge = 1
        let qp = try XCTUnwrap(s.request(qpReq, opcode: SLUICE_OP_CREATE_QP.rawValue))
        XCTAssertEqual(qp.status, 0, qp.reason)
        let qpRep = qp.body(sluice_create_qp_rep.self)
        qpHandle = qpRep.handle
        qpSize = Int(qpRep.ring_size)
        sqCap = qpRep.sq_capacity
        qpn = qpRep.qp_num
        layout = sluice_qp_layout(qpRep.sq_capacity, qpRep.rq_capacity)
        qpRing = mmap(nil, qpSize, PROT_READ | PROT_WRITE, MAP_SHARED, qp.fds[0], 0)
        close(qp.fds[0])
        // Connect the QP to itself: RESET -> INIT -> RTR -> RTS.
        try modify(qpRep.handle, UInt32(SLUICE_QP_STATE | SLUICE_QP_PKEY_INDEX | SLUICE_QP_PORT | SLUICE_QP_ACCESS_FLAGS)) {
            $0.qp_state = UInt32(SLUICE_QPS_INIT); $0.port_num = 1
        }
        try modify(qpRep.handle, UInt32(SLUICE_QP_STATE | SLUICE_QP_AV | SLUICE_QP_PATH_MTU | SLUICE_QP_DEST_QPN | SLUICE_QP_RQ_PSN
                                        | SLUICE_QP_MAX_DEST_RD_ATOMIC | SLUICE_QP_MIN_RNR_TIMER)) {
            $0.qp_state = UInt32(SLUICE_QPS_RTR); $0.path_mtu = 5; $0.dest_qp_num = self.qpn; $0.ah.dlid = self.lid; $0.min_rnr_timer = 1
        }
        try modify(qpRep.handle, UInt32(SLUICE_QP_STATE | SLUICE_QP_TIMEOUT | SLUICE_QP_RETRY_CNT | SLUICE_QP_RNR_RETRY
                                        | SLUICE_QP_SQ_PSN | SLUICE_QP_MAX_QP_RD_ATOMIC)) {
            $0.qp_state = UInt32(SLUICE_QPS_RTS); $0.timeout = 10; $0.retry_cnt = 1; $0.rnr_retry = 0
        }
    }

    func modify(_ handle: UInt32, _ mask: UInt32, _ set: (inout sluice_qp_attr) -> Void) throws {
        var req = sluice_modify_qp_req()
        req.handle = handle
        req.attr_mask = mask
        set(&req.attr)
        let a = try XCTUnwrap(s.request(req, opcode: SLUICE_OP_MODIFY_QP.rawValue))
        XCTAssertEqual(a.status, 0, a.reason)
    }

    override func tearDownWithError() throws {
        if let cqRing { munmap(cqRing, cqSize) }
        if let qpRing { munmap(qpRing, qpSize) }
        s = nil
        XCTAssertEqual(router.stop(), 0, "router exit status; stderr: \(router.stderrText())")
    }

    var qpShared: UnsafeMutablePointer<sluice_qp_shared> { qpRing.assumingMemoryBound(to: sluice_qp_shared.self) }
    var cqShared: UnsafeMutablePointer<sluice_cq_shared> { cqRing.assumingMemoryBound(to: sluice_cq_shared.self) }

    func postRaw(_ fill: (UnsafeMutableRawPointer) -> Void) {
        let prod = sluice_load_relaxed(&qpShared.pointee.sq.prod)
        let slot = qpRing + Int(layout.sq_offset) + Int(prod & (sqCap - 1)) * MemoryLayout<sluice_send_wqe>.stride
        fill(slot)
        sluice_store_release(&qpShared.pointee.sq.prod, prod &+ 1)
        s.ring(hint: qpHandle)
    }

    /// Waits for the first completion in the CQ ring.
    func firstCompletion() -> sluice_cqe? {
        let deadline = Date().addingTimeInterval(5)
        while sluice_load_acquire(&cqShared.pointee.ring.prod) == 0 {
            if Date() > deadline { return nil }
            usleep(1000)
        }
        return (cqRing + Int(sluice_cq_entries_offset())).load(as: sluice_cqe.self)
    }

    func assertRouterServes() throws {
        let status = try router.status()
        XCTAssertEqual(status["sessions"] as? Int, 1, "router alive and serving")
    }

    func testRandomBytesAsAWorkRequest() throws {
        var rng = SystemRandomNumberGenerator()
        postRaw { slot in
            for i in 0..<MemoryLayout<sluice_send_wqe>.size { slot.storeBytes(of: UInt8.random(in: 0...255, using: &rng), toByteOffset: i, as: UInt8.self) }
            // Keep it unmistakably invalid whatever the dice say.
            slot.storeBytes(of: UInt32(0xdead), toByteOffset: 8, as: UInt32.self)
        }
        let c = try XCTUnwrap(firstCompletion(), "no completion for a garbage work request")
        XCTAssertEqual(c.status, UInt32(SLUICE_WC_LOC_QP_OP_ERR))
        XCTAssertEqual(c.qp_num, qpn)
        XCTAssertEqual(sluice_load_acquire(&qpShared.pointee.state), UInt32(SLUICE_QPS_ERR))
        try assertRouterServes()
    }

    func testUnregisteredKeysAndHugeCountsAreLocalErrors() throws {
        postRaw { slot in
            var w = sluice_send_wqe()
            w.wr_id = 7
            w.opcode = UInt32(SLUICE_WR_SEND)
            w.num_sge = 1
            withUnsafeMutableBytes(of: &w.sge) { $0.storeBytes(of: sluice_sge(addr: 0x1000, length: 64, lkey: 0x1234_5678), as: sluice_sge.self) }
            slot.storeBytes(of: w, as: sluice_send_wqe.self)
        }
        let c = try XCTUnwrap(firstCompletion())
        XCTAssertEqual(c.wr_id, 7)
        XCTAssertEqual(c.status, UInt32(SLUICE_WC_LOC_PROT_ERR))
        XCTAssertEqual(sluice_load_acquire(&qpShared.pointee.state), UInt32(SLUICE_QPS_ERR))
        let denied = router.auditRecords().filter { ($0["event"] as? String) == "datapath" && ($0["decision"] as? String) == "deny" }
        XCTAssertTrue(denied.contains { ($0["reason"] as? String ?? "").contains("lkey 0x12345678") }, "\(denied)")
        try assertRouterServes()
    }

    func testACorruptProducerIndexMovesTheQPToError() throws {
        sluice_store_release(&qpShared.pointee.sq.prod, 0x8000_0000)
        s.ring(hint: qpHandle)
        let deadline = Date().addingTimeInterval(5)
        while sluice_load_acquire(&qpShared.pointee.state) != UInt32(SLUICE_QPS_ERR) && Date() < deadline { usleep(1000) }
        XCTAssertEqual(sluice_load_acquire(&qpShared.pointee.state), UInt32(SLUICE_QPS_ERR))
        try assertRouterServes()
    }
}
