import Foundation
import XCTest
import SluiceVerbs

/// The verbs backend, tested without a NIC: an inner router runs
/// `--backend verbs --device sluice0` with libsluice-verbs.so preloaded, as
/// tenant `inner` of an outer router on the software fabric. Every
/// libibverbs call the backend makes is served by the outer router.
///
/// The first tests run whole integration test classes again in a child run
/// of this test binary with SLUICE_TEST_NESTED=1, where every RouterProcess
/// is such a nested pair and the tests talk to the inner one.
final class NestedRouterTests: XCTestCase {
    override func setUpWithError() throws {
        if RouterProcess.nested { throw XCTSkip("already nested") }
    }

    /// Runs `testClass` of this module in a child process, nested.
    private func runNested(_ testClass: String, seconds: Double = 600) throws {
        if testClass == "PingPongTests", Paths.tool("ibv_rc_pingpong") == nil {
            throw XCTSkip("ibv_rc_pingpong is not installed (Debian package ibverbs-utils)")
        }
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        // A file, not a pipe: routers a failed test leaves behind would hold
        // a pipe open.
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-nested-\(testClass)-\(getpid()).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: log) }
        let out = try FileHandle(forWritingTo: log)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["SluiceIntegrationTests.\(testClass)"]
        var env = ProcessInfo.processInfo.environment
        env["SLUICE_TEST_NESTED"] = "1"
        env["SLUICE_VERBS_LIB"] = Paths.verbsLibrary
        p.environment = env
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        try? out.close()
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let summary = text.split(separator: "\n").filter { $0.contains("error:") || $0.contains("Executed") }
        XCTAssertEqual(p.terminationStatus, 0, "\(testClass) through an inner router on the verbs backend:\n"
            + summary.joined(separator: "\n") + "\n--- last output ---\n" + String(text.suffix(4000)))
        XCTAssertTrue(text.contains("Executed") && !text.contains("Executed 0 tests"), "no test ran: \(text.suffix(2000))")
    }

    // The walking skeleton's unmodified ibv_rc_pingpong (LID, GID, events, sizes).
    func testPingPongThroughTheVerbsBackend() throws { try runNested("PingPongTests") }
    // WRITE, READ, SEND, immediate data, SGE lists, RNR, inline, unsignaled, 200 QPs.
    func testVerbsThroughTheVerbsBackend() throws { try runNested("VerbsTests") }
    // Issue 5's attacks, each against the inner router, with its bystander.
    func testAttackSuiteThroughTheVerbsBackend() throws { try runNested("AttackSuiteTests") }
    // Atomics, key scoping and guessing, non-sequential identifiers.
    func testKeyScopeThroughTheVerbsBackend() throws { try runNested("KeyScopeTests") }
    func testPolicyEnforcementThroughTheVerbsBackend() throws { try runNested("PolicyEnforcementTests") }
    func testRingAttacksThroughTheVerbsBackend() throws { try runNested("RingAttackTests") }
    func testShapingThroughTheVerbsBackend() throws { try runNested("ShapingTests") }
    func testRobustnessThroughTheVerbsBackend() throws { try runNested("RobustnessTests") }

    /// `--backend auto` (the default) with a usable device uses it, and
    /// says so: here the device is the outer router's sluice0.
    func testAutoPicksAUsableDeviceAndSaysWhy() throws {
        let outer = try RouterProcess(policies: ["inner": RouterProcess.innerTenantPolicy()], nested: false)
        let (_, env) = RouterProcess.innerArguments(outer: outer)
        let inner = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], environment: env, nested: false)
        let start = inner.auditRecords().first { ($0["event"] as? String) == "router.start" }
        let fields = start?["fields"] as? [String: Any] ?? [:]
        XCTAssertEqual(fields["backend"] as? String, "verbs", "\(fields)")
        XCTAssertTrue((fields["backendReason"] as? String ?? "").hasPrefix("auto: sluice0 port 1 active"), "\(fields)")
        // And it works: a WRITE through it.
        let a = try VerbsEndpoint(socket: inner.socket("alpha")), b = try VerbsEndpoint(socket: inner.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, src.size, rw), dm = try b.register(dst.base, dst.size, rw)
        src.fill(0, 100, seed: 3)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 100, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(dst.bytes(0, 100), src.bytes(0, 100))
        // The outer router saw the inner one's real objects, not the tenant's.
        let outerObjects = try outer.objects()
        XCTAssertEqual(outerObjects["qp"], 2, "\(outerObjects)")
        XCTAssertEqual(inner.stop(), 0)
        let err = inner.stderrText()
        XCTAssertTrue(err.contains("sluice-router: backend: verbs on sluice0 (auto: sluice0 port 1 active"), err)
        XCTAssertTrue(err.contains("features nestedVerbs"), err)
    }

    // MARK: the device failing

    /// The outer router's policy lets the inner router create one QP: the
    /// device refuses the second, and the inner router answers its tenant
    /// with the device's errno (ENOMEM, the count quota's), records the
    /// refusal with rule `device`, and leaves the tenant's other objects
    /// working.
    func testADeviceThatRefusesAQueuePairRefusesTheTenantsVerb() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], nested: true,
                                       outerPolicy: RouterProcess.innerTenantPolicy(extra: "  quotas:\n    queuePairs: 2\n"))
        // The inner router is sandboxed as in production, with the nested
        // backend's extra calls (the sandbox audit record names them).
        let sandbox = router.auditRecords().first { ($0["event"] as? String) == "sandbox" }
        XCTAssertEqual((sandbox?["fields"] as? [String: Any])?["mode"] as? String, "enforce", "\(sandbox ?? [:])")
        XCTAssertTrue((sandbox?["reason"] as? String ?? "").contains("features nestedVerbs"), "\(sandbox ?? [:])")
        XCTAssertEqual((try router.status()["sandbox"] as? [String: Any])?["mode"] as? String, "enforce")
        let a = try VerbsEndpoint(socket: router.socket("alpha"))
        let b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP()
        let qb = try b.createQP()
        XCTAssertThrowsError(try a.createQP()) { e in
            XCTAssertEqual((e as? VerbsError)?.code, ENOMEM, "\(e)")
        }
        let refusals = router.auditRecords().filter { ($0["verb"] as? String) == "create_qp" && ($0["decision"] as? String) == "deny" }
        XCTAssertEqual(refusals.count, 1, "\(refusals)")
        XCTAssertEqual(refusals.first?["rule"] as? String, "device")
        // The outer router refused it for its own reason: its quota.
        let outer = try XCTUnwrap(router.outer)
        let outerRefusals = outer.auditRecords().filter { ($0["verb"] as? String) == "create_qp" && ($0["decision"] as? String) == "deny" }
        XCTAssertEqual(outerRefusals.first?["rule"] as? String, "quotas.queuePairs", "\(outerRefusals)")
        // The two QPs the device did create still carry data.
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, src.size, rw), dm = try b.register(dst.base, dst.size, rw)
        src.fill(0, 256, seed: 9)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 256, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(dst.bytes(0, 256), src.bytes(0, 256))
        XCTAssertEqual(router.stop(), 0, router.stderrText())
    }

    /// The device goes away under the inner router (its outer router is
    /// killed, as a NIC removed): the inner router notices on the device's
    /// async event fd, records it, fails what the device held and every
    /// later request with error completions, moves the QPs to ERR with
    /// IBV_EVENT_QP_FATAL, answers new verbs with EIO, and keeps serving.
    func testADeviceThatDisappearsFailsTheTenantsQueuePairsAndNewVerbs() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], nested: true)
        let a = try VerbsEndpoint(socket: router.socket("alpha"))
        let b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, src.size, rw), dm = try b.register(dst.base, dst.size, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 64, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "control: the device works")

        let outer = try XCTUnwrap(router.outer)
        kill(outer.process.processIdentifier, SIGKILL)
        outer.process.waitUntilExit()
        // The inner router records the loss.
        let deadline = Date().addingTimeInterval(10)
        while !router.auditRecords().contains(where: { ($0["event"] as? String) == "device.lost" }) && Date() < deadline {
            usleep(20_000)
        }
        XCTAssertTrue(router.auditRecords().contains { ($0["event"] as? String) == "device.lost" }, "no device.lost record; \(router.process.isRunning ? "router running" : router.stderrText())")
        // The QP failed, and the tenant is told.
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        var event = ibv_async_event()
        XCTAssertEqual(ibv_get_async_event(a.context, &event), 0)
        XCTAssertEqual(event.event_type, IBV_EVENT_QP_FATAL)
        XCTAssertEqual(event.element.qp, qa)
        ibv_ack_async_event(&event)
        // A request posted now completes with an error (a flush: the QP is in ERR).
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(src.base, 64, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        let c = a.poll(1)
        XCTAssertEqual(c.first?.wr_id, 2)
        XCTAssertEqual(c.first?.status, IBV_WC_WR_FLUSH_ERR)
        // New objects: EIO, as from a removed device.
        XCTAssertThrowsError(try a.createQP()) { e in XCTAssertEqual((e as? VerbsError)?.code, EIO, "\(e)") }
        XCTAssertThrowsError(try a.register(src.base, 64, rw)) { e in XCTAssertEqual((e as? VerbsError)?.code, EIO, "\(e)") }
        // The router itself keeps serving, says why its device is gone, and stops cleanly.
        XCTAssertEqual(try router.status()["sessions"] as? Int, 2)
        let backend = try router.status()["backend"] as? [String: Any]
        XCTAssertEqual(backend?["name"] as? String, "verbs")
        XCTAssertEqual(backend?["device"] as? String, "sluice0")
        XCTAssertFalse((backend?["deviceLost"] as? String ?? "").isEmpty, "\(backend ?? [:])")
        XCTAssertEqual(router.stop(), 0, router.stderrText())
    }

    // MARK: requests the device still holds

    /// The outer router lets the inner one's requests through at 10 a
    /// second: requests the inner router posts stay on its device (the
    /// outer router's queue) for a while, as on a busy or distant NIC.
    static let slowDevice = RouterProcess.innerTenantPolicy(extra: "  rateLimits:\n    tenant:\n      operations: 10/s\n      burstOperations: 1\n")

    /// Waits until the device (the outer router) holds at least `n` of the
    /// inner router's requests that it has not yet run.
    private func waitUntilTheDeviceHolds(_ router: RouterProcess, _ n: Int) throws {
        let outer = try XCTUnwrap(router.outer)
        let st = try outer.waitForStatus { s in
            (((s["shaping"] as? [String: Any])?["inner"] as? [String: Any])?["queueDepth"] as? Int ?? 0) >= n
        }
        let depth = ((st["shaping"] as? [String: Any])?["inner"] as? [String: Any])?["queueDepth"] as? Int ?? 0
        XCTAssertGreaterThanOrEqual(depth, n, "the outer router never held \(n) requests of the inner one: \(st)")
    }

    /// The router refuses a request (an lkey it never minted) while earlier
    /// valid requests of the same QP are still on the device: as a NIC
    /// would, the earlier ones complete first, in order and successfully,
    /// then the error, then flushes for what was posted after it. (Moving
    /// the device's QP to ERR at once flushed the earlier ones.)
    func testARouterErrorBehindRequestsOnTheDeviceComesAfterThem() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], nested: true,
                                       outerPolicy: NestedRouterTests.slowDevice)
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, src.size, rw), dm = try b.register(dst.base, dst.size, rw)
        src.fill(0, 4096, seed: 21)
        func write(_ id: UInt64, lkey: UInt32) throws {
            let off = Int(id) * 64
            try a.postSend(qa, id: id, IBV_WR_RDMA_WRITE, [ibv_sge(addr: addr(src.base + off), length: 64, lkey: lkey)],
                           remote: (addr(dst.base + off), dm.pointee.rkey))
        }
        for id in UInt64(1)...4 { try write(id, lkey: sm.pointee.lkey) }
        try waitUntilTheDeviceHolds(router, 2)
        try write(5, lkey: sm.pointee.lkey ^ 0x5a5a) // never minted: the router's LOC_PROT_ERR
        try write(6, lkey: sm.pointee.lkey)
        try write(7, lkey: sm.pointee.lkey)
        let wc = a.poll(7, seconds: 20)
        XCTAssertEqual(wc.map(\.wr_id), [1, 2, 3, 4, 5, 6, 7])
        XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS,
                                          IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR, IBV_WC_WR_FLUSH_ERR])
        XCTAssertEqual(dst.bytes(64, 4 * 64), src.bytes(64, 4 * 64), "the four valid writes landed")
        XCTAssertEqual(dst.bytes(5 * 64, 3 * 64), [UInt8](repeating: 0, count: 3 * 64), "nothing from the failed one or after it")
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        let denial = router.auditRecords().first { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "lkey" }
        XCTAssertNotNil(denial, "the router's refusal is audited")
        XCTAssertEqual(router.stop(), 0, router.stderrText())
    }

    /// A registration that re-backs an MR's pages (the library's REMAP_MR:
    /// a new region overlapping it and more) while requests using the MR
    /// are on the device: the router registers the new mapping, and keeps
    /// the old registration until those requests completed, so they succeed
    /// (deregistering it at once failed them).
    func testRequestsOnTheDeviceSurviveTheirRegionBeingReBacked() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], nested: true,
                                       outerPolicy: NestedRouterTests.slowDevice)
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(), qb = try b.createQP()
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 2), dst = TestBuffer(pages: 1)
        src.fill(0, 4096, seed: 33)
        let sm = try a.register(src.base, 4096, rw) // page 0 only
        let dm = try b.register(dst.base, dst.size, rw)
        for i in 0..<5 {
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base + i * 256, 256, sm)],
                           remote: (addr(dst.base + i * 256), dm.pointee.rkey))
        }
        try waitUntilTheDeviceHolds(router, 3)
        // Pages 0 and 1 in one region: the library re-backs both with one new
        // memfd and moves `sm` there (REMAP_MR), while the writes wait.
        let wide = try a.register(src.base, 8192, rw)
        let wc = a.poll(5, seconds: 20)
        XCTAssertEqual(wc.map(\.wr_id), [0, 1, 2, 3, 4])
        XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS, IBV_WC_SUCCESS],
                       "\(router.auditRecords().filter { ($0["decision"] as? String) == "deny" })")
        XCTAssertEqual(dst.bytes(0, 5 * 256), src.bytes(0, 5 * 256))
        let remaps = router.auditRecords().filter { ($0["verb"] as? String) == "remap_mr" }
        XCTAssertEqual(remaps.count, 1, "one REMAP_MR: \(remaps)")
        XCTAssertEqual(remaps.first?["decision"] as? String, "allow")
        // The region works through its new registration, and through the wide one.
        src.fill(0, 4096, seed: 34)
        try a.postSend(qa, id: 5, IBV_WR_RDMA_WRITE, [sge(src.base, 256, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        try a.postSend(qa, id: 6, IBV_WR_RDMA_WRITE, [sge(src.base + 4096 + 256, 256, wide)],
                       remote: (addr(dst.base + 2048), dm.pointee.rkey))
        XCTAssertEqual(a.poll(2, seconds: 20).map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertEqual(dst.bytes(0, 256), src.bytes(0, 256))
        XCTAssertEqual(dst.bytes(2048, 256), src.bytes(4096 + 256, 256))
        // Once nothing uses the old registration, the device has it no more:
        // the outer router holds the inner one's three live MRs.
        let outerObjects = try XCTUnwrap(router.outer).objects()
        XCTAssertEqual(outerObjects["mr"], 3, "\(outerObjects)")
        XCTAssertEqual(router.stop(), 0, router.stderrText())
    }
}
