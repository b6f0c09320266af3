import Foundation
import XCTest
import SluiceVerbs
import SluiceRouter

/// Atomics, the key-guessing detector and one connection per QP pair,
/// against a real router (random endpoint numbers: AttackSuiteTests).
final class KeyScopeTests: XCTestCase {
    let atomicAccess = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue
        | IBV_ACCESS_REMOTE_READ.rawValue | IBV_ACCESS_REMOTE_ATOMIC.rawValue)
    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    func lastDenial(_ router: RouterProcess, event: String = "datapath") -> [String: Any]? {
        router.auditRecords().last { ($0["event"] as? String) == event && ($0["decision"] as? String) == "deny" }
    }

    // MARK: atomics

    func testFetchAddAndCompareSwapReturnTheOriginalValue() throws {
        let router = try RouterProcess(tenants: ["alpha"])
        defer { XCTAssertEqual(router.stop(), 0, router.stderrText()) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        var attr = ibv_device_attr()
        XCTAssertEqual(ibv_query_device(a.context, &attr), 0)
        XCTAssertNotEqual(attr.atomic_cap, IBV_ATOMIC_NONE, "the device advertises atomics")
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: atomicAccess)
        try b.connect(qb, to: qa, of: a, access: atomicAccess)
        let local = TestBuffer(pages: 1), remote = TestBuffer(pages: 1)
        let lm = try a.register(local.base, 64, rw), rm = try b.register(remote.base, 4096, atomicAccess)
        let word = remote.base.advanced(by: 64).assumingMemoryBound(to: UInt64.self)
        word.pointee = 40

        try a.postAtomic(qa, id: 1, IBV_WR_ATOMIC_FETCH_AND_ADD, sge(local.base, 8, lm), remote: (addr(remote.base) + 64, rm.pointee.rkey), add: 2)
        var wc = try XCTUnwrap(a.poll(1).first)
        XCTAssertEqual(wc.status, IBV_WC_SUCCESS)
        XCTAssertEqual(wc.opcode, IBV_WC_FETCH_ADD)
        XCTAssertEqual(wc.byte_len, 8)
        XCTAssertEqual(local.base.load(as: UInt64.self), 40, "the original value comes back")
        XCTAssertEqual(word.pointee, 42)

        try a.postAtomic(qa, id: 2, IBV_WR_ATOMIC_CMP_AND_SWP, sge(local.base + 8, 8, lm), remote: (addr(remote.base) + 64, rm.pointee.rkey),
                         add: 41, swap: 7)
        wc = try XCTUnwrap(a.poll(1).first)
        XCTAssertEqual(wc.status, IBV_WC_SUCCESS)
        XCTAssertEqual(wc.opcode, IBV_WC_COMP_SWAP)
        XCTAssertEqual(local.base.load(fromByteOffset: 8, as: UInt64.self), 42)
        XCTAssertEqual(word.pointee, 42, "compare failed: no swap")
        try a.postAtomic(qa, id: 3, IBV_WR_ATOMIC_CMP_AND_SWP, sge(local.base + 16, 8, lm), remote: (addr(remote.base) + 64, rm.pointee.rkey),
                         add: 42, swap: 7)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(local.base.load(fromByteOffset: 16, as: UInt64.self), 42)
        XCTAssertEqual(word.pointee, 7, "compare matched: swapped")
        b.assertQuiet()
    }

    func testAtomicsAreCheckedForAlignmentLengthBoundsAndAccess() throws {
        let router = try RouterProcess(tenants: ["alpha"])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let local = TestBuffer(pages: 1), remote = TestBuffer(pages: 2)
        let lm = try a.register(local.base, 64, rw)
        let rm = try b.register(remote.base, 4096, atomicAccess)
        let noAtomic = try b.register(remote.base + 4096, 4096, rw)
        remote.fill(0, 8192, seed: 5)
        let before = remote.bytes(0, 8192)
        // (what, remote address, rkey, local length, status, rule)
        let cases: [(String, UInt64, UInt32, Int, ibv_wc_status, String)] = [
            ("misaligned", addr(remote.base) + 4, rm.pointee.rkey, 8, IBV_WC_REM_INV_REQ_ERR, "atomic.alignment"),
            ("short local buffer", addr(remote.base), rm.pointee.rkey, 4, IBV_WC_LOC_LEN_ERR, "atomic.length"),
            ("past the end", addr(remote.base) + 4096, rm.pointee.rkey, 8, IBV_WC_REM_ACCESS_ERR, "rkey.bounds"),
            ("wrapping", UInt64.max - 7, rm.pointee.rkey, 8, IBV_WC_REM_ACCESS_ERR, "rkey.bounds"),
            ("no REMOTE_ATOMIC", addr(remote.base) + 4096, noAtomic.pointee.rkey, 8, IBV_WC_REM_ACCESS_ERR, "rkey.access"),
        ]
        for (what, raddr, rkey, len, status, rule) in cases {
            let qa = try a.createQP(), qb = try b.createQP()
            try a.connect(qa, to: qb, of: b, access: atomicAccess)
            try b.connect(qb, to: qa, of: a, access: atomicAccess)
            try a.postAtomic(qa, id: 9, IBV_WR_ATOMIC_FETCH_AND_ADD, sge(local.base, len, lm), remote: (raddr, rkey), add: 1)
            let wc = try XCTUnwrap(a.poll(1).first, what)
            XCTAssertEqual(wc.status, status, what)
            XCTAssertEqual(a.state(qa), IBV_QPS_ERR, what)
            XCTAssertEqual(lastDenial(router)?["rule"] as? String, rule, what)
        }
        // A QP that was not given remote atomic access refuses them too.
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: atomicAccess)
        try b.connect(qb, to: qa, of: a, access: rw)
        try a.postAtomic(qa, id: 10, IBV_WR_ATOMIC_FETCH_AND_ADD, sge(local.base, 8, lm), remote: (addr(remote.base), rm.pointee.rkey), add: 1)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_INV_REQ_ERR)
        XCTAssertEqual(lastDenial(router)?["rule"] as? String, "qp.access")
        XCTAssertEqual(remote.bytes(0, 8192), before, "no refused atomic changed a byte")
    }

    func testAtomicsNeedThePolicysOperations() throws {
        let yaml = RouterProcess.permissive("s").replacingOccurrences(
            of: "operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]\n  peers:",
            with: "operations: [send, write, read, compareSwap]\n  peers:")
        let router = try RouterProcess(policies: ["s": yaml])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("s")), b = try VerbsEndpoint(socket: router.socket("s"))
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: atomicAccess)
        try b.connect(qb, to: qa, of: a, access: atomicAccess)
        let local = TestBuffer(pages: 1), remote = TestBuffer(pages: 1)
        let lm = try a.register(local.base, 64, rw), rm = try b.register(remote.base, 4096, atomicAccess)
        try a.postAtomic(qa, id: 1, IBV_WR_ATOMIC_CMP_AND_SWP, sge(local.base, 8, lm), remote: (addr(remote.base), rm.pointee.rkey), add: 0, swap: 1)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "compareSwap is allowed")
        try a.postAtomic(qa, id: 2, IBV_WR_ATOMIC_FETCH_AND_ADD, sge(local.base, 8, lm), remote: (addr(remote.base), rm.pointee.rkey), add: 1)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_LOC_QP_OP_ERR, "fetchAdd is not in operations")
        XCTAssertEqual(lastDenial(router)?["rule"] as? String, "operations")
        XCTAssertEqual(remote.base.load(as: UInt64.self), 1, "only the allowed atomic ran")
    }

    // MARK: key guessing

    func testKeyGuessingTripsTheDetectorQuarantinesAndAnOperatorClearsIt() throws {
        let guard_ = """
              keyGuessing:
                maxFailures: 4
                windowSeconds: 60
                quarantine: true

            """
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha", extra: guard_)])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let local = TestBuffer(pages: 1), remote = TestBuffer(pages: 1)
        let lm = try a.register(local.base, 64, rw)
        let rm = try b.register(remote.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try b.connect(qb, to: qa, of: a, access: rw)
        for guess in 1...4 {
            // Each failure moves the QP to ERR; the guesser resets and reconnects.
            var reset = ibv_qp_attr()
            reset.qp_state = IBV_QPS_RESET
            try a.modify(qa, &reset, [IBV_QP_STATE])
            try a.connect(qa, to: qb, of: b, access: rw)
            let key = rm.pointee.rkey &+ UInt32(guess) // wrong, but near the real one
            try a.postSend(qa, id: UInt64(guess), IBV_WR_RDMA_WRITE, [sge(local.base, 8, lm)], remote: (addr(remote.base), key))
            XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR, "guess \(guess)")
            XCTAssertEqual(lastDenial(router)?["rule"] as? String, "rkey")
        }
        let alert = try XCTUnwrap(router.auditRecords().last { ($0["event"] as? String) == "alert" }, "the detector tripped")
        XCTAssertEqual(alert["rule"] as? String, "keyGuessing")
        XCTAssertEqual(alert["verb"] as? String, "key_guessing")
        XCTAssertEqual(alert["tenant"] as? String, "alpha")
        XCTAssertEqual((alert["fields"] as? [String: Any])?["queuePairs"] as? String, "0x" + String(qa.pointee.qp_num, radix: 16))
        XCTAssertEqual(try router.status()["quarantined"] as? [String], ["alpha"])

        // Quarantined: no new QP, no new connection; existing traffic of
        // other QPs is not touched (b's QP is still connected).
        XCTAssertThrowsError(try a.createQP()) { XCTAssertEqual(($0 as? VerbsError)?.code, EACCES) }
        XCTAssertEqual(lastDenial(router, event: "control")?["rule"] as? String, "keyGuessing")
        var reset = ibv_qp_attr()
        reset.qp_state = IBV_QPS_RESET
        try a.modify(qa, &reset, [IBV_QP_STATE])
        XCTAssertThrowsError(try a.connect(qa, to: qb, of: b, access: rw)) { XCTAssertEqual(($0 as? VerbsError)?.code, EACCES) }

        // The operator clears it, through the CLI.
        let cli = try XCTUnwrap(Paths.sluiceCLI, "the sluice CLI is built beside the tests")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cli)
        p.arguments = ["quarantine", "clear", "alpha", "--runtime-dir", router.runtimeDir]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertTrue(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("no longer quarantined"))
        XCTAssertEqual(try router.status()["quarantined"] as? [String], [])
        reset.qp_state = IBV_QPS_RESET
        try a.modify(qa, &reset, [IBV_QP_STATE])
        try a.connect(qa, to: qb, of: b, access: rw)
        try a.postSend(qa, id: 99, IBV_WR_RDMA_WRITE, [sge(local.base, 8, lm)], remote: (addr(remote.base), rm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "a cleared tenant works again")
        XCTAssertNotNil(router.auditRecords().last { ($0["verb"] as? String) == "quarantine_clear" }, "the clearing is audited")
    }

    func testFailuresBelowTheThresholdDoNotTrip() throws {
        let extra = "  keyGuessing:\n    maxFailures: 3\n    windowSeconds: 60\n"
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha", extra: extra)])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let local = TestBuffer(pages: 1), remote = TestBuffer(pages: 1)
        let lm = try a.register(local.base, 64, rw), rm = try b.register(remote.base, 4096, rw)
        let qb = try b.createQP()
        for i in 1...2 {
            let qa = try a.createQP()
            try a.connect(qa, to: qb, of: b, access: rw)
            try b.connect(qb, to: qa, of: a, access: rw)
            try a.postSend(qa, id: 1, IBV_WR_RDMA_READ, [sge(local.base, 8, lm)], remote: (addr(remote.base) + 4096, rm.pointee.rkey))
            XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR, "failure \(i)")
            XCTAssertEqual(lastDenial(router)?["rule"] as? String, "rkey.bounds")
            var reset = ibv_qp_attr()
            reset.qp_state = IBV_QPS_RESET
            try b.modify(qb, &reset, [IBV_QP_STATE])
        }
        XCTAssertNil(router.auditRecords().first { ($0["event"] as? String) == "alert" })
        XCTAssertEqual(try router.status()["quarantined"] as? [String], [])
        XCTAssertNoThrow(try a.createQP(), "not quarantined")
    }

    // MARK: connections

    func testASecondQPCannotConnectToAConnectedQP() throws {
        let router = try RouterProcess(policies: [
            "alpha": RouterProcess.permissive("alpha", peers: ["mallory": "[write]"]),
            "mallory": RouterProcess.permissive("mallory", peers: ["alpha": "[write]"]),
        ])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let m = try VerbsEndpoint(socket: router.socket("mallory"))
        let qa = try a.createQP(), qb = try b.createQP(), qm = try m.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        // qb is claimed by qa even before it connects back ...
        XCTAssertThrowsError(try m.connect(qm, to: qb, of: b, access: rw)) { XCTAssertEqual(($0 as? VerbsError)?.code, EINVAL) }
        XCTAssertEqual(lastDenial(router, event: "control")?["rule"] as? String, "connection.exclusive")
        try b.connect(qb, to: qa, of: a, access: rw)
        // ... and after; by LID or by GID, with any traffic class or flow label.
        var reset = ibv_qp_attr()
        reset.qp_state = IBV_QPS_RESET
        try m.modify(qm, &reset, [IBV_QP_STATE])
        XCTAssertThrowsError(try m.connect(qm, to: qb, of: b, access: rw, useGID: true)) { XCTAssertEqual(($0 as? VerbsError)?.code, EINVAL) }
        XCTAssertEqual(lastDenial(router, event: "control")?["rule"] as? String, "connection.exclusive")
        // The connected pair is undisturbed.
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        src.fill(0, 64, seed: 3)
        let sm = try a.register(src.base, 64, rw), dm = try b.register(dst.base, 64, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 64, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(dst.bytes(0, 64), src.bytes(0, 64))
        // Once the pair is torn down (qb reset), the QP is free again.
        try b.modify(qb, &reset, [IBV_QP_STATE])
        try a.modify(qa, &reset, [IBV_QP_STATE])
        try m.modify(qm, &reset, [IBV_QP_STATE])
        XCTAssertNoThrow(try m.connect(qm, to: qb, of: b, access: rw))
    }

    func testAnAddressThatNamesNoQPIsRefused() throws {
        let router = try RouterProcess(tenants: ["alpha"])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        // qb's QPN at a's own address: the QPN exists, but not there.
        XCTAssertThrowsError(try a.connect(qa, to: qb, of: a, access: rw)) { XCTAssertEqual(($0 as? VerbsError)?.code, EINVAL) }
        XCTAssertEqual(lastDenial(router, event: "control")?["rule"] as? String, "connection.address")
        var sgid = ibv_qp_attr()
        sgid.qp_state = IBV_QPS_RTR
        sgid.path_mtu = IBV_MTU_1024
        sgid.dest_qp_num = qb.pointee.qp_num
        sgid.ah_attr.is_global = 1
        sgid.ah_attr.grh.dgid = b.gid
        sgid.ah_attr.grh.sgid_index = 1
        sgid.ah_attr.grh.traffic_class = 0xff
        sgid.ah_attr.grh.flow_label = 0xfffff
        sgid.ah_attr.port_num = 1
        XCTAssertThrowsError(try a.modify(qa, &sgid, [IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                                                       IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER]))
        XCTAssertEqual(lastDenial(router, event: "control")?["rule"] as? String, "connection.address")
    }
}

extension VerbsEndpoint {
    func postAtomic(_ qp: UnsafeMutablePointer<ibv_qp>, id: UInt64, _ opcode: ibv_wr_opcode, _ local: ibv_sge,
                    remote: (UInt64, UInt32), add: UInt64, swap: UInt64 = 0) throws {
        var list = [local]
        try list.withUnsafeMutableBufferPointer { buf in
            var wr = ibv_send_wr()
            wr.wr_id = id
            wr.sg_list = buf.baseAddress
            wr.num_sge = 1
            wr.opcode = opcode
            wr.send_flags = IBV_SEND_SIGNALED.rawValue
            wr.wr.atomic.remote_addr = remote.0
            wr.wr.atomic.rkey = remote.1
            wr.wr.atomic.compare_add = add
            wr.wr.atomic.swap = swap
            var bad: UnsafeMutablePointer<ibv_send_wr>?
            let r = ibv_post_send(qp, &wr, &bad)
            guard r == 0 else { throw VerbsError("ibv_post_send", r) }
        }
    }
}
