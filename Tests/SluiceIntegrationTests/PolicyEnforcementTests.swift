import Foundation
import XCTest
import SluiceVerbs

/// The router enforces each tenant's policy on real verbs: quotas with the
/// documented errnos, mutual consent between tenants, allowed operations on
/// the data path, and reloads that apply at once or not at all.
final class PolicyEnforcementTests: XCTestCase {
    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    static let quotas = """
          quotas:
            protectionDomains: 2
            memoryRegions: 2
            registeredBytes: 12Ki
            largestRegionBytes: 8Ki
            completionQueues: 2
            completionQueueDepth: 64
            queuePairs: 2
            sendQueueDepth: 32
            receiveQueueDepth: 32
            sgesPerRequest: 2
            inlineBytes: 64

        """

    func assertRefused(_ errnoValue: Int32, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(errno, errnoValue, "\(what): errno \(errno) (\(String(cString: strerror(errno))))", file: file, line: line)
    }

    func testEveryQuotaRefusesWithItsErrnoAndTheTenantKeepsWorking() throws {
        let router = try RouterProcess(policies: ["q": RouterProcess.permissive("q", extra: PolicyEnforcementTests.quotas)])
        defer { XCTAssertEqual(router.stop(), 0) }
        let e = try VerbsEndpoint(socket: router.socket("q"), cqDepth: 16)

        // protectionDomains: 2 (the endpoint holds one).
        let pd2 = try XCTUnwrap(ibv_alloc_pd(e.context))
        XCTAssertNil(ibv_alloc_pd(e.context))
        assertRefused(ENOMEM, "third PD")
        XCTAssertEqual(ibv_dealloc_pd(pd2), 0)
        let pd3 = try XCTUnwrap(ibv_alloc_pd(e.context), "a PD fits again once one is freed")
        XCTAssertEqual(ibv_dealloc_pd(pd3), 0)

        // largestRegionBytes 8Ki, registeredBytes 12Ki, memoryRegions 2.
        let buf = TestBuffer(pages: 8)
        XCTAssertNil(ibv_reg_mr(e.pd, buf.base, 8 * 1024 + 1, Int32(rw.rawValue)))
        assertRefused(ENOMEM, "region above largestRegionBytes")
        let m1 = try e.register(buf.base, 8 * 1024, rw)
        XCTAssertNil(ibv_reg_mr(e.pd, buf.base + 16384, 4 * 1024 + 1, Int32(rw.rawValue)))
        assertRefused(ENOMEM, "total above registeredBytes")
        let m2 = try e.register(buf.base + 16384, 4 * 1024, rw)
        XCTAssertNil(ibv_reg_mr(e.pd, buf.base + 24576, 1, Int32(rw.rawValue)))
        assertRefused(ENOMEM, "third region")
        _ = m1

        // completionQueues 2 (the endpoint holds one), completionQueueDepth 64.
        XCTAssertNil(ibv_create_cq(e.context, 65, nil, nil, 0))
        assertRefused(EINVAL, "CQ deeper than completionQueueDepth")
        let cq2 = try XCTUnwrap(ibv_create_cq(e.context, 64, nil, nil, 0))
        XCTAssertNil(ibv_create_cq(e.context, 8, nil, nil, 0))
        assertRefused(ENOMEM, "third CQ")
        XCTAssertEqual(ibv_destroy_cq(cq2), 0)

        // sendQueueDepth, receiveQueueDepth, sgesPerRequest, inlineBytes: EINVAL.
        XCTAssertThrowsError(try e.createQP(sendDepth: 33, recvDepth: 4, sge: 1)) { XCTAssertTrue("\($0)".contains("Invalid argument"), "\($0)") }
        XCTAssertThrowsError(try e.createQP(sendDepth: 4, recvDepth: 33, sge: 1)) { XCTAssertTrue("\($0)".contains("Invalid argument"), "\($0)") }
        XCTAssertThrowsError(try e.createQP(sendDepth: 4, recvDepth: 4, sge: 3)) { XCTAssertTrue("\($0)".contains("Invalid argument"), "\($0)") }
        XCTAssertThrowsError(try e.createQP(sendDepth: 4, recvDepth: 4, sge: 1, inline: 65)) { XCTAssertTrue("\($0)".contains("Invalid argument"), "\($0)") }
        // queuePairs: 2.
        let qa = try e.createQP(sendDepth: 32, recvDepth: 32, sge: 2, inline: 64)
        let qb = try e.createQP(sendDepth: 32, recvDepth: 32, sge: 2, inline: 64)
        XCTAssertThrowsError(try e.createQP(sendDepth: 4, recvDepth: 4, sge: 1)) { XCTAssertTrue("\($0)".contains("Cannot allocate memory"), "\($0)") }

        // Within quota, everything still works: a message between the two QPs.
        try e.connect(qa, to: qb, of: e, access: rw)
        try e.connect(qb, to: qa, of: e, access: rw)
        buf.fill(0, 64, seed: 9)
        try e.postRecv(qb, id: 2, [sge(buf.base + 16384, 64, m2)])
        try e.postSend(qa, id: 1, IBV_WR_SEND, [sge(buf.base, 64, m1)])
        let wc = e.poll(2)
        XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertEqual(buf.bytes(16384, 64), buf.bytes(0, 64))

        let denials = router.auditRecords().filter { ($0["decision"] as? String) == "deny" }
        let rules = Set(denials.compactMap { $0["rule"] as? String })
        for rule in ["quotas.protectionDomains", "quotas.largestRegionBytes", "quotas.registeredBytes", "quotas.memoryRegions",
                     "quotas.completionQueueDepth", "quotas.completionQueues", "quotas.sendQueueDepth",
                     "quotas.receiveQueueDepth", "quotas.sgesPerRequest", "quotas.inlineBytes", "quotas.queuePairs"] {
            XCTAssertTrue(rules.contains(rule), "no denial recorded for \(rule); got \(rules.sorted())")
        }
    }

    func testMemoryAccessFlagsOutsideThePolicyAreRefused() throws {
        let yaml = RouterProcess.permissive("ro").replacingOccurrences(
            of: "memoryAccess: [localWrite, remoteWrite, remoteRead, remoteAtomic]", with: "memoryAccess: [localWrite, remoteRead]")
        let router = try RouterProcess(policies: ["ro": yaml])
        defer { XCTAssertEqual(router.stop(), 0) }
        let e = try VerbsEndpoint(socket: router.socket("ro"))
        let buf = TestBuffer(pages: 1)
        XCTAssertNil(ibv_reg_mr(e.pd, buf.base, 4096, Int32(rw.rawValue)))
        assertRefused(EACCES, "remoteWrite is not in memoryAccess")
        XCTAssertNotNil(try e.register(buf.base, 4096, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)))
    }

    func gammaDelta(deltaConsents: Bool) -> [String: String] {
        [
            "gamma": RouterProcess.permissive("gamma", peers: ["delta": "[send]"]),
            "delta": RouterProcess.permissive("delta", peers: deltaConsents ? ["gamma": "[send]"] : [:]),
        ]
    }

    func testCrossTenantTrafficNeedsBothSidesConsent() throws {
        let router = try RouterProcess(policies: gammaDelta(deltaConsents: false))
        defer { XCTAssertEqual(router.stop(), 0) }
        let g = try VerbsEndpoint(socket: router.socket("gamma"))
        let d = try VerbsEndpoint(socket: router.socket("delta"))
        let qg = try g.createQP(), qd = try d.createQP()
        XCTAssertThrowsError(try g.connect(qg, to: qd, of: d, access: rw), "delta did not consent") {
            XCTAssertTrue("\($0)".contains("Permission denied"), "\($0)")
        }
        let refused = router.auditRecords().filter { ($0["decision"] as? String) == "deny" && ($0["verb"] as? String) == "modify_qp" }
        XCTAssertEqual(refused.last?["rule"] as? String, "delta:peers")
        XCTAssertTrue((refused.last?["reason"] as? String ?? "").contains("delta does not list gamma"),
                      "the audit record keeps the full reason (the tenant is told only the rule)")

        // delta consents: reload, and the same connection goes through.
        try router.writePolicy("delta", gammaDelta(deltaConsents: true)["delta"])
        router.reload()
        let qg2 = try g.createQP(), qd2 = try d.createQP()
        try g.connect(qg2, to: qd2, of: d, access: rw)
        try d.connect(qd2, to: qg2, of: g, access: rw)
        let gb = TestBuffer(pages: 1), db = TestBuffer(pages: 1)
        let gm = try g.register(gb.base, 4096, rw), dm = try d.register(db.base, 4096, rw)
        gb.fill(0, 32, seed: 4)
        try d.postRecv(qd2, id: 1, [sge(db.base, 32, dm)])
        try g.postSend(qg2, id: 1, IBV_WR_SEND, [sge(gb.base, 32, gm)])
        XCTAssertEqual(d.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(g.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(db.bytes(0, 32), gb.bytes(0, 32))

        // Send-only: an RDMA WRITE on the same connection is refused on the data path.
        try g.postSend(qg2, id: 2, IBV_WR_RDMA_WRITE, [sge(gb.base, 32, gm)], remote: (addr(db.base), dm.pointee.rkey))
        let wc = try XCTUnwrap(g.poll(1).first)
        XCTAssertEqual(wc.status, IBV_WC_LOC_QP_OP_ERR, "gamma's own peers entry for delta lacks write")
        XCTAssertEqual(g.state(qg2), IBV_QPS_ERR)
        let denial = router.auditRecords().last { ($0["event"] as? String) == "datapath" }
        XCTAssertEqual(denial?["rule"] as? String, "peers.delta", "\(String(describing: denial))")
        XCTAssertEqual(denial?["decision"] as? String, "deny")
    }

    func testAnOperationOutsideTheTenantsOperationsFailsTheQP() throws {
        let yaml = RouterProcess.permissive("s").replacingOccurrences(
            of: "operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]\n  peers:",
            with: "operations: [send, write]\n  peers:")
        let router = try RouterProcess(policies: ["s": yaml])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("s")), b = try VerbsEndpoint(socket: router.socket("s"))
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let lb = TestBuffer(pages: 1), rb = TestBuffer(pages: 1)
        let lm = try a.register(lb.base, 4096, rw), rm = try b.register(rb.base, 4096, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(lb.base, 16, lm)], remote: (addr(rb.base), rm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "write is allowed")
        try a.postSend(qa, id: 2, IBV_WR_RDMA_READ, [sge(lb.base, 16, lm)], remote: (addr(rb.base), rm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_LOC_QP_OP_ERR, "read is not in operations")
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        let denial = router.auditRecords().last { ($0["event"] as? String) == "datapath" }
        XCTAssertEqual(denial?["rule"] as? String, "operations", "\(String(describing: denial))")
        XCTAssertTrue((denial?["reason"] as? String ?? "").contains("read is not in"), "\(String(describing: denial))")
    }

    func testAReloadThatWithdrawsAPeerMovesItsQPsToError() throws {
        let router = try RouterProcess(policies: gammaDelta(deltaConsents: true))
        defer { XCTAssertEqual(router.stop(), 0) }
        let g = try VerbsEndpoint(socket: router.socket("gamma")), d = try VerbsEndpoint(socket: router.socket("delta"))
        let qg = try g.createQP(), qd = try d.createQP()
        try g.connect(qg, to: qd, of: d, access: rw)
        try d.connect(qd, to: qg, of: g, access: rw)
        // And a connection inside gamma that the reload must leave alone.
        let g2 = try VerbsEndpoint(socket: router.socket("gamma"))
        let qx = try g.createQP(), qy = try g2.createQP()
        try g.connect(qx, to: qy, of: g2, access: rw)
        try g2.connect(qy, to: qx, of: g, access: rw)

        try router.writePolicy("delta", gammaDelta(deltaConsents: false)["delta"])
        router.reload()
        XCTAssertEqual(g.state(qg), IBV_QPS_ERR, "gamma's QP toward delta")
        XCTAssertEqual(d.state(qd), IBV_QPS_ERR, "delta's QP toward gamma")
        XCTAssertEqual(g.state(qx), IBV_QPS_RTS, "a connection the reload still allows is untouched")
        // And each tenant hears of it as hardware would tell it: IBV_EVENT_QP_FATAL.
        for (e, qp) in [(g, qg), (d, qd)] {
            var p = pollfd(fd: e.context.pointee.async_fd, events: Int16(POLLIN), revents: 0)
            XCTAssertEqual(poll(&p, 1, 5000), 1, "an async event is pending")
            var ev = ibv_async_event()
            XCTAssertEqual(ibv_get_async_event(e.context, &ev), 0)
            XCTAssertEqual(ev.event_type, IBV_EVENT_QP_FATAL)
            XCTAssertEqual(ev.element.qp, qp)
            ibv_ack_async_event(&ev)
        }
        var p = pollfd(fd: g.context.pointee.async_fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 100), 0, "one event per QP, and none for the untouched connection")
        let enforced = router.auditRecords().filter { ($0["event"] as? String) == "policy.enforce" }
        XCTAssertEqual(enforced.count, 2)
    }

    func testAReloadWithABrokenFileChangesNothing() throws {
        guard let sluice = Paths.sluiceCLI else { throw XCTSkip("the sluice binary was not built") }
        let router = try RouterProcess(policies: gammaDelta(deltaConsents: true))
        defer { XCTAssertEqual(router.stop(), 0) }
        let g = try VerbsEndpoint(socket: router.socket("gamma")), d = try VerbsEndpoint(socket: router.socket("delta"))
        let qg = try g.createQP(), qd = try d.createQP()
        try g.connect(qg, to: qd, of: d, access: rw)
        try d.connect(qd, to: qg, of: g, access: rw)

        // Withdraw delta's consent AND break another file: nothing may change.
        try router.writePolicy("delta", gammaDelta(deltaConsents: false)["delta"])
        try router.writePolicy("epsilon", "apiVersion: sluice/v1\nkind: TenantPolicy\nmetadata:\n  name: epsilon\nspec:\n  identity:\n    uids: [root]\n")
        let cli = try runTool(sluice, ["policy", "reload", "--runtime-dir", router.runtimeDir])
        XCTAssertEqual(cli.status, 1)
        XCTAssertTrue(cli.stderr.contains("epsilon.yaml:7:12: spec.identity.uids[0]: Invalid value: \"root\""), cli.stderr)
        XCTAssertTrue(cli.stderr.contains("kept its old policies"), cli.stderr)
        XCTAssertEqual(g.state(qg), IBV_QPS_RTS, "the old policy stays in force")
        XCTAssertFalse(FileManager.default.fileExists(atPath: router.socket("epsilon")))
        let reloads = router.auditRecords().filter { ($0["event"] as? String) == "policy.reload" }
        XCTAssertEqual(reloads.last?["decision"] as? String, "deny")

        // Fixed: the reload goes through, through the real CLI.
        try router.writePolicy("epsilon", RouterProcess.permissive("epsilon"))
        let ok = try runTool(sluice, ["policy", "reload", "--runtime-dir", router.runtimeDir])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("epsilon"), ok.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: router.socket("epsilon")), "a new tenant gets its socket")
        XCTAssertEqual(g.state(qg), IBV_QPS_ERR, "and what it withdraws applies")
    }
}

/// Runs a program to completion; returns its status and output.
func runTool(_ path: String, _ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

extension PolicyEnforcementTests {
    /// quotas.inlineBytes bounds what a QP reports and what a work request
    /// may carry inline, not only what ibv_create_qp asks for.
    func testTheInlineQuotaIsEnforcedOnWorkRequests() throws {
        let router = try RouterProcess(policies: ["q": RouterProcess.permissive("q", extra: "  quotas:\n    inlineBytes: 16\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("q")), b = try VerbsEndpoint(socket: router.socket("q"))
        let qa = try a.createQP(inline: 0), qb = try b.createQP()
        var attr = ibv_qp_attr(), initAttr = ibv_qp_init_attr()
        XCTAssertEqual(ibv_query_qp(qa, &attr, Int32(IBV_QP_CAP.rawValue), &initAttr), 0)
        XCTAssertEqual(initAttr.cap.max_inline_data, 16, "the QP reports the quota, not the wire's 256")
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let r = TestBuffer(pages: 1)
        let rm = try b.register(r.base, 4096, rw)
        try b.postRecv(qb, id: 1, [sge(r.base, 4096, rm)])
        var data = [UInt8](repeating: 7, count: 16)
        try data.withUnsafeMutableBytes { p in
            try a.postSend(qa, id: 1, IBV_WR_SEND, [ibv_sge(addr: addr(p.baseAddress!), length: 16, lkey: 0)],
                           flags: ibv_send_flags(IBV_SEND_INLINE.rawValue | IBV_SEND_SIGNALED.rawValue))
        }
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "16 inline bytes fit")
        XCTAssertEqual(r.bytes(0, 16), data)
        data = [UInt8](repeating: 8, count: 17)
        XCTAssertThrowsError(try data.withUnsafeMutableBytes { p in
            try a.postSend(qa, id: 2, IBV_WR_SEND, [ibv_sge(addr: addr(p.baseAddress!), length: 17, lkey: 0)],
                           flags: ibv_send_flags(IBV_SEND_INLINE.rawValue | IBV_SEND_SIGNALED.rawValue))
        }, "17 inline bytes are refused by ibv_post_send (EINVAL), as the QP's max_inline_data says")
    }
}
