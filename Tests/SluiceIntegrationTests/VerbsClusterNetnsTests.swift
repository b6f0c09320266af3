import Foundation
import SluiceVerbs
import XCTest

/// A cluster of routers on the verbs backend, without a NIC: on each of two
/// hosts (network namespaces) an OUTER router on the software fabric plays
/// the NIC (device sluice0), and an INNER router runs `--backend verbs
/// --device sluice0` over it (libsluice-verbs.so preloaded, the outer
/// router's tenant `inner`). The outer routers form one cluster (the
/// "wire" between the NICs); the inner routers form their own, with their
/// own key, LIDs, addresses and fabric link, over which they connect their
/// real QPs and hand each other real keys. This process is the tenant of
/// both inner routers; every byte it moves goes inner A -> "NIC" A (outer
/// A) -> outer fabric link -> "NIC" B (outer B) -> inner B's memory.
final class VerbsClusterNetnsTests: XCTestCase {
    var lab: NetnsLab!
    var dir: String!
    var outer: [RouterProcess] = []
    var inner: [RouterProcess] = []

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
        | IBV_ACCESS_REMOTE_ATOMIC.rawValue)

    static func clusterYAML(_ lab: NetnsLab, name: String, port: Int, lidBase: Int, net: String) -> String {
        var yaml = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<2 {
            yaml += "    - name: \(name)-\(i)\n      fabric: \(lab.address(i)):\(port)\n"
                + "      lids: [\(lidBase + 1000 * i)-\(lidBase + 999 + 1000 * i)]\n      addresses: [\(net).\(i).0/24]\n"
        }
        return yaml
    }

    override func setUpWithError() throws {
        if RouterProcess.nested { throw XCTSkip("nests its own routers") }
        lab = try NetnsLab(hosts: 2)
        let l = lab!
        addTeardownBlock { l.teardown() }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-vc-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let d = dir!
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        // The outer cluster: the "NICs" and their wire. Its LIDs are the
        // inner routers' real LIDs.
        try VerbsClusterNetnsTests.clusterYAML(lab, name: "nic", port: 7470, lidBase: 1, net: "10.77")
            .write(toFile: d + "/outer.yaml", atomically: true, encoding: .utf8)
        // The inner cluster: the routers under test, with their own ranges.
        try VerbsClusterNetnsTests.clusterYAML(lab, name: "host", port: 7480, lidBase: 5001, net: "10.88")
            .write(toFile: d + "/inner.yaml", atomically: true, encoding: .utf8)
        for k in ["outer", "inner"] {
            _ = FileManager.default.createFile(atPath: d + "/\(k).key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                           attributes: [.posixPermissions: 0o600])
        }
        for i in 0..<2 {
            let o = try RouterProcess(policies: ["inner": RouterProcess.innerTenantPolicy()],
                                      extraArguments: ["--cluster-key", d + "/outer.key", "--router-name", "nic-\(i)",
                                                       "--cluster-file", d + "/outer.yaml",
                                                       "--fabric-heartbeat-ms", "200", "--fabric-dead-ms", "1000"],
                                      nested: false, launcher: lab.inHost(i, []))
            lab.adopt(o.process)
            outer.append(o)
        }
        // carol may only WRITE to carol's QPs (her own policy's peer rule).
        let carol = RouterProcess.permissive("carol").replacingOccurrences(
            of: "    - tenant: carol\n      operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]",
            with: "    - tenant: carol\n      operations: [write]")
        XCTAssertTrue(carol.contains("operations: [write]"))
        // vault takes its addresses from a pool on host B only; in tests
        // named "Forged", host A's router says impostor's QPs are vault's.
        let policies = ["alpha": RouterProcess.permissive("alpha"), "mallory": RouterProcess.permissive("mallory"), "carol": carol,
                        "vault": RouterProcess.permissive("vault", extra: "  addressPool: 10.88.1.0/25\n"),
                        "impostor": RouterProcess.permissive("impostor")]
        // Tests named "ModifiedSender" run host A's inner router with its
        // own checks skipped (debug builds only): host B's must hold alone.
        let modified = name.contains("ModifiedSender"), mixed = name.contains("MixedBackends")
        for i in 0..<2 {
            var (args, env) = RouterProcess.innerArguments(outer: outer[i])
            if modified && i == 0 { args.append("--test-unchecked-sender") }
            if name.contains("Forged") && i == 0 { args += ["--test-forge-tenant", "impostor=vault"] }
            // "MixedBackends": host B's router is left to --backend auto
            // (with a usable sluice0), which in a cluster means software.
            if mixed && i == 1 { args = ["--device", "sluice0"] }
            let r = try RouterProcess(policies: policies,
                                      extraArguments: args + ["--cluster-key", d + "/inner.key", "--router-name", "host-\(i)",
                                                              "--cluster-file", d + "/inner.yaml",
                                                              "--fabric-heartbeat-ms", "200", "--fabric-dead-ms", "1000"],
                                      environment: env, nested: false, launcher: lab.inHost(i, []))
            lab.adopt(r.process)
            inner.append(r)
        }
        // Links are made on first use: none yet. The tests' first
        // connection dials the inner link, and the inner routers' first
        // real traffic dials the outer one.
        XCTAssertEqual(outer[0].fabricState("nic-1"), "idle")
        XCTAssertEqual(inner[0].fabricState("host-1"), "idle")
        for r in mixed ? [inner[0]] : inner {
            let start = r.auditRecords().first { ($0["event"] as? String) == "router.start" }
            XCTAssertEqual((start?["fields"] as? [String: Any])?["backend"] as? String, "verbs", "the inner router is on the verbs backend: \(start ?? [:])")
            // Sandboxed as in production, with both features a cluster router on a device needs.
            let sandbox = r.auditRecords().first { ($0["event"] as? String) == "sandbox" }
            XCTAssertEqual((sandbox?["fields"] as? [String: Any])?["mode"] as? String, "enforce", "\(sandbox ?? [:])")
            let reason = sandbox?["reason"] as? String ?? ""
            XCTAssertTrue(reason.contains("multiHost") && reason.contains("nestedVerbs"), reason)
        }
    }

    override func tearDown() {
        inner = []
        outer = []
        lab = nil
    }

    func endpoints() throws -> (VerbsEndpoint, VerbsEndpoint) {
        (try VerbsEndpoint(socket: inner[0].socket("alpha")), try VerbsEndpoint(socket: inner[1].socket("alpha")))
    }

    /// The QPNs the outer router created for its tenant (the inner router's real QPs).
    func realQPNs(_ o: RouterProcess) -> Set<UInt32> {
        Set(o.auditRecords().compactMap { r -> UInt32? in
            guard r["verb"] as? String == "create_qp", r["decision"] as? String == "allow",
                  let obj = r["object"] as? String, let hex = obj.split(separator: " ").last?.dropFirst(2) else { return nil }
            return UInt32(hex, radix: 16)
        })
    }

    func crossHostOperations(useGID: Bool) throws {
        let (a, b) = try endpoints()
        XCTAssert((5001...6000).contains(a.lid), "\(a.lid): the inner router's own LIDs")
        XCTAssert((6001...7000).contains(b.lid), "\(b.lid)")
        let (qa, qb, _, bmr) = try checkCrossHostOperations(a, b, access: rw, useGID: useGID)

        // The tenants saw only virtual identifiers: their QPNs are not the
        // real QPs' (the outer routers minted those), and the keys they
        // used were translated by their routers (the "NIC" at B, which
        // refuses any key it did not mint, refused nothing).
        let realA = realQPNs(outer[0]), realB = realQPNs(outer[1])
        XCTAssertEqual(realA.count, 1, "inner A made one real QP: \(realA)")
        XCTAssertFalse(realA.contains(qa.pointee.qp_num))
        XCTAssertFalse(realB.contains(qb.pointee.qp_num))
        for o in outer {
            let denied = o.auditRecords().filter { ($0["decision"] as? String) == "deny" && ($0["event"] as? String) == "datapath" }
            XCTAssertEqual(denied.count, 0, "the NICs refused nothing: \(denied)")
        }
        // The key was handed from router B to router A, audited at B, and
        // only for the virtual key the tenant used.
        let grants = inner[1].auditRecords().filter { ($0["event"] as? String) == "fabric.key" && ($0["decision"] as? String) == "allow" }
        XCTAssertEqual(Set(grants.compactMap { ($0["fields"] as? [String: Any])?["rkey"] as? String }),
                       ["0x" + String(bmr.pointee.rkey, radix: 16)])
        // Both connections were made router to router, audited, and nothing
        // was refused: B's router kept A's message while B's QP was still
        // in RESET (A's tenant connected first).
        for r in inner {
            let records = r.auditRecords().filter { ($0["event"] as? String) == "fabric.connect" }
            XCTAssertTrue(records.contains { ($0["decision"] as? String) == "allow" })
            XCTAssertFalse(records.contains { ($0["decision"] as? String) == "deny" }, "\(records)")
        }
    }

    func testWriteReadSendImmAndAtomicsAcrossHostsOnNICsByLID() throws { try crossHostOperations(useGID: false) }

    func testWriteReadSendImmAndAtomicsAcrossHostsOnNICsByGID() throws { try crossHostOperations(useGID: true) }

    /// A bad virtual key and an out-of-bounds access are refused by the
    /// routers before anything reaches a NIC: the target's router refuses
    /// the key query, the requester's checks the bounds against what the
    /// target told it. Each fails with REM_ACCESS_ERR, audited, and the
    /// victim's bytes stay as they were.
    func testBadKeysAndBoundsAreRefusedByTheRoutersWithRemoteAccessErrors() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 2), bbuf = TestBuffer(pages: 2)
        bbuf.fill(0, bbuf.size, seed: 77)
        let before = bbuf.bytes(0, bbuf.size)
        let amr = try a.register(abuf.base, abuf.size, rw), bmr = try b.register(bbuf.base, 4096, rw)
        // A guessed key.
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 16, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey ^ 0x5a5a))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        XCTAssertTrue(inner[1].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey"
            && (($0["reason"] as? String) ?? "").contains("key query") }, "the target's router refused the key, audited")
        XCTAssertTrue(inner[0].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey" },
                      "the requester's router recorded the failure")
        // Out of bounds by one byte, on a fresh connection, with the right key.
        let qa2 = try a.createQP(), qb2 = try b.createQP()
        try a.connect(qa2, to: qb2, of: b, access: rw)
        try b.connect(qb2, to: qa2, of: a, access: rw)
        try a.postSend(qa2, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 16, amr)], remote: (addr(bbuf.base + 4096 - 15), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertTrue(inner[0].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey.bounds" })
        XCTAssertEqual(bbuf.bytes(0, bbuf.size), before, "nothing was written")
        // Nothing reached the "NICs".
        for o in outer {
            XCTAssertFalse(o.auditRecords().contains { ($0["decision"] as? String) == "deny" && ($0["event"] as? String) == "datapath" })
        }
    }

    /// The target deregisters its region: its router revokes the real key it
    /// handed out, so the requester asks again and is refused (audited at
    /// the target), rather than posting a stale real key.
    func testDeregisteringARegionRevokesItsRealKeyAtThePeerRouter() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        abuf.fill(0, 64, seed: 3)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        let rkey = bmr.pointee.rkey
        b.deregister(bmr)
        // The revocation travels on the link; give it the moment it takes.
        let end = Date().addingTimeInterval(2)
        while Date() < end && !inner[1].auditRecords().contains(where: { ($0["verb"] as? String) == "dereg_mr" }) { usleep(20_000) }
        usleep(200_000)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_REM_ACCESS_ERR)
        let queries = inner[1].auditRecords().filter { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey"
            && (($0["reason"] as? String) ?? "").contains("key query") }
        XCTAssertEqual(queries.count, 1, "the requester asked again after the revocation, and the target refused")
    }

    /// Mallory on host A points a QP at alpha's QP on host B, which is
    /// connected to alpha's on A: B's router refuses the connection
    /// (audited), the real QP is never connected, and her request fails
    /// with RETRY_EXC_ERR after her retry budget, touching nothing.
    func testAQPHijackAcrossHostsIsNeverConnected() throws {
        let (a, b) = try endpoints()
        let m = try VerbsEndpoint(socket: inner[0].socket("mallory"))
        let qa = try a.createQP(), qb = try b.createQP(), qm = try m.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        try m.connect(qm, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        let bbuf = TestBuffer(pages: 1), mbuf = TestBuffer(pages: 1)
        bbuf.fill(0, 4096, seed: 1)
        let before = bbuf.bytes(0, 4096)
        let bmr = try b.register(bbuf.base, 4096, rw), mmr = try m.register(mbuf.base, 4096, rw)
        try m.postSend(qm, id: 1, IBV_WR_RDMA_WRITE, [sge(mbuf.base, 64, mmr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(m.poll(1, seconds: 10).first?.status, IBV_WC_RETRY_EXC_ERR)
        XCTAssertEqual(bbuf.bytes(0, 4096), before)
        XCTAssert(inner[1].auditRecords().contains { $0["event"] as? String == "fabric.connect" && $0["rule"] as? String == "fabric.connection"
            && $0["decision"] as? String == "deny" })
        // The victim's connection still works.
        let abuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw)
        abuf.fill(0, 64, seed: 8)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(bbuf.bytes(0, 64), abuf.bytes(0, 64))
    }

    /// The remote router dies after the connection: its "NIC" reclaims its
    /// real QPs, the requester's real QP gets no answer, and the tenant gets
    /// IBV_WC_RETRY_EXC_ERR from its device within the QP's retry budget
    /// (the real completion mapped to the virtual one), then a flush.
    func testTheRemoteRouterDyingFailsRequestsWithRetryExceeded() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 3, timeout: 12)
        try b.connect(qb, to: qa, of: a, access: rw)
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        kill(inner[1].process.processIdentifier, SIGKILL)
        inner[1].process.waitUntilExit()
        // Its outer router notices its tenant is gone and destroys its QPs.
        let gone = Date().addingTimeInterval(10)
        while Date() < gone && ((try? outer[1].objects())?["qp"] ?? 0) > 0 { usleep(20_000) }
        XCTAssertEqual(try outer[1].objects()["qp"], 0)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        try a.postSend(qa, id: 3, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        let wc = a.poll(2, seconds: 10)
        XCTAssertEqual(wc.map(\.wr_id), [2, 3])
        XCTAssertEqual(wc.map(\.status), [IBV_WC_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR])
        XCTAssertEqual(wc.first?.qp_num, qa.pointee.qp_num)
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        _ = b
    }

    /// Host A's router skips its operation checks (`--test-unchecked-
    /// sender`): carol's policy lets her only WRITE to carol, yet A's
    /// router posts her READ and SEND. B's router refuses the READ's key
    /// (it hands out no key for an access the policies do not allow),
    /// audited; with the key it granted for WRITE, the READ is refused by
    /// B's "NIC", whose QP B's router gave no remote read; and as no
    /// operation carol may post consumes a receive, B's router never gave
    /// carol-B's receives to the device, so the SEND finds none and fails
    /// with RNR_RETRY_EXC_ERR. The WRITE she may do works.
    func testTheTargetRouterHoldsConsentAgainstAModifiedSender() throws {
        let a = try VerbsEndpoint(socket: inner[0].socket("carol")), b = try VerbsEndpoint(socket: inner[1].socket("carol"))
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        bbuf.fill(0, 4096, seed: 21)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, rnrRetry: 1)
        try b.connect(qb, to: qa, of: a, access: rw)
        // A READ as the first use of the key: the key query is refused at B.
        try a.postSend(qa, id: 2, IBV_WR_RDMA_READ, [sge(abuf.base + 1024, 64, amr)], remote: (addr(bbuf.base + 64), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertTrue(inner[1].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey.access" },
                      "B's router refused the key for a READ, audited")
        XCTAssertEqual(abuf.bytes(1024, 64), [UInt8](repeating: 0, count: 64), "nothing was read")
        // The allowed WRITE, on a new connection: B grants the key for it.
        let qa1 = try a.createQP(), qb1 = try b.createQP()
        try a.connect(qa1, to: qb1, of: b, access: rw, rnrRetry: 1)
        try b.connect(qb1, to: qa1, of: a, access: rw)
        abuf.fill(0, 64, seed: 5)
        try a.postSend(qa1, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(bbuf.bytes(0, 64), abuf.bytes(0, 64))
        let before = bbuf.bytes(0, 4096)
        // A READ with that real key: B's "NIC" refuses it (its QP allows no remote read).
        try a.postSend(qa1, id: 4, IBV_WR_RDMA_READ, [sge(abuf.base + 1024, 64, amr)], remote: (addr(bbuf.base + 64), bmr.pointee.rkey))
        let status = a.poll(1, seconds: 20).first?.status
        XCTAssertTrue(status == IBV_WC_REM_INV_REQ_ERR || status == IBV_WC_REM_ACCESS_ERR, "\(String(describing: status))")
        XCTAssertEqual(abuf.bytes(1024, 64), [UInt8](repeating: 0, count: 64), "nothing was read")
        XCTAssertTrue(outer[1].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "qp.access" },
                      "the NIC refused it for the QP's access flags")
        // A SEND, on a fresh connection: no receive on B's device.
        let qa2 = try a.createQP(), qb2 = try b.createQP()
        try a.connect(qa2, to: qb2, of: b, access: rw, rnrRetry: 1)
        try b.connect(qb2, to: qa2, of: a, access: rw)
        try b.postRecv(qb2, id: 78, [sge(bbuf.base + 3072, 1024, bmr)])
        try a.postSend(qa2, id: 3, IBV_WR_SEND, [sge(abuf.base, 64, amr)])
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_RNR_RETRY_EXC_ERR)
        XCTAssertEqual(bbuf.bytes(0, 4096), before, "the victim's memory and receive buffers are unchanged")
        b.assertQuiet()
    }

    /// `--backend auto` in a cluster picks the software fabric and says why,
    /// even with a usable device; a verbs router and a software router in
    /// one cluster refuse each other's messages (audited, rule
    /// `fabric.backend`), and a QP between them fails with RETRY_EXC_ERR
    /// instead of moving bytes wrongly.
    func testMixedBackendsInOneClusterRefuseEachOther() throws {
        let start = inner[1].auditRecords().first { ($0["event"] as? String) == "router.start" }
        let fields = start?["fields"] as? [String: Any] ?? [:]
        XCTAssertEqual(fields["backend"] as? String, "software", "\(fields)")
        XCTAssertTrue((fields["backendReason"] as? String ?? "").hasPrefix("auto in a cluster"), "\(fields)")
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        try b.connect(qb, to: qa, of: a, access: rw, retryCount: 2, timeout: 10)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        try b.postSend(qb, id: 2, IBV_WR_RDMA_WRITE, [sge(bbuf.base, 64, bmr)], remote: (addr(abuf.base), amr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 10).first?.status, IBV_WC_RETRY_EXC_ERR)
        XCTAssertEqual(b.poll(1, seconds: 10).first?.status, IBV_WC_RETRY_EXC_ERR)
        for r in inner {
            XCTAssertTrue(r.auditRecords().contains { ($0["event"] as? String) == "fabric.frame" && ($0["rule"] as? String) == "fabric.backend" },
                          "each router refused the other's messages, audited")
        }
    }

    /// A policy reload at B withdraws alpha's consent to alpha: B's router
    /// fails its cross-host QP (ERR, QP_FATAL, audited), so the device's
    /// QP stops, and A's next request fails instead of landing.
    func testAPolicyReloadWithdrawingConsentFailsTheCrossHostConnection() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        try b.connect(qb, to: qa, of: a, access: rw)
        abuf.fill(0, 64, seed: 6)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        let withdrawn = RouterProcess.permissive("alpha").replacingOccurrences(of: "    - tenant: alpha\n", with: "    - tenant: mallory\n")
        XCTAssertNotEqual(withdrawn, RouterProcess.permissive("alpha"))
        try inner[1].writePolicy("alpha", withdrawn)
        inner[1].reload()
        XCTAssertTrue(inner[1].auditRecords().contains { ($0["event"] as? String) == "policy.enforce" && ($0["decision"] as? String) == "deny" },
                      "B's router withdrew the connection, audited")
        XCTAssertEqual(b.state(qb), IBV_QPS_ERR)
        // The event, without blocking if it never comes.
        var p = pollfd(fd: b.context.pointee.async_fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 5000), 1, "an async event for B's tenant")
        if p.revents & Int16(POLLIN) != 0 {
            var event = ibv_async_event()
            XCTAssertEqual(ibv_get_async_event(b.context, &event), 0)
            XCTAssertEqual(event.event_type, IBV_EVENT_QP_FATAL)
            ibv_ack_async_event(&event)
        }
        let before = bbuf.bytes(0, 4096)
        abuf.fill(0, 64, seed: 7)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertNotEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(bbuf.bytes(0, 4096), before, "nothing landed after the withdrawal")
    }

    /// Debian's unmodified ibv_rc_pingpong, server on host A, client on
    /// host B, each through its host's inner router on the verbs backend.
    func testUnmodifiedPingPongAcrossHostsOnNICs() throws {
        guard let pingpong = Paths.tool("ibv_rc_pingpong") else {
            throw XCTSkip("ibv_rc_pingpong is not installed (Debian package ibverbs-utils)")
        }
        try lab.pingPong(pingpong, server: inner[0].socket("alpha"), client: inner[1].socket("alpha"), basePort: 19000,
                         runs: [(4096, 200, false), (65536, 50, true)], clientSeconds: 120)
    }

    /// Host A's router (modified) says impostor's QP is vault's. By vault's
    /// consent alone (vault to vault) B would connect it; vault's
    /// addressPool, on host B only, is what A cannot fake: B refuses the
    /// connect message (rule fabric.source), the real QP is never
    /// connected, and the WRITE ends in RETRY_EXC_ERR.
    func testATenantNameForgedInTheConnectMessageIsRefusedAtTheTarget() throws {
        let imp = try VerbsEndpoint(socket: inner[0].socket("impostor")), v = try VerbsEndpoint(socket: inner[1].socket("vault"))
        let victim = TestBuffer(pages: 1), ibuf = TestBuffer(pages: 1)
        victim.fill(0, 4096, seed: 41)
        ibuf.fill(0, 4096, seed: 42)
        let before = victim.bytes(0, 4096)
        let vmr = try v.register(victim.base, 4096, rw), imr = try imp.register(ibuf.base, 4096, rw)
        let qi = try imp.createQP(), qv = try v.createQP()
        try imp.connect(qi, to: qv, of: v, access: rw, retryCount: 2, timeout: 10)
        try v.connect(qv, to: qi, of: imp, access: rw)
        try imp.postSend(qi, id: 1, IBV_WR_RDMA_WRITE, [sge(ibuf.base, 64, imr)], remote: (addr(victim.base), vmr.pointee.rkey))
        XCTAssertEqual(imp.poll(1, seconds: 20).first?.status, IBV_WC_RETRY_EXC_ERR, "a forged connection is never made")
        XCTAssert(victim.bytes(0, 4096) == before, "the victim's memory is unchanged")
        let denials = inner[1].auditRecords().filter { ($0["event"] as? String) == "fabric.connect" && ($0["rule"] as? String) == "fabric.source" }
        XCTAssertGreaterThanOrEqual(denials.count, 1)
        XCTAssert((denials.first?["reason"] as? String ?? "").contains("tenant vault's addressPool"), "\(denials)")
        // The resends on every retry are audited once a second, not each.
        XCTAssertLessThanOrEqual(denials.count, 3, "\(denials.count) records for one QP's retries")
        XCTAssertFalse(inner[1].auditRecords().contains { ($0["event"] as? String) == "fabric.key" && ($0["decision"] as? String) == "allow" },
                       "no key was handed to the forger")
    }

    /// The tenant at B narrows its QP's access flags at RTR -> RTS, after
    /// A's router was handed the key for WRITE: the real QP follows, so B's
    /// "NIC" refuses A's next WRITE with the cached key.
    func testAccessFlagsNarrowedAtRTSReachTheRealQP() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        // B's QP by hand: INIT and RTR with remote write.
        try toRTR(b, qb, to: qa, of: a)
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        abuf.fill(0, 64, seed: 7)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS, "a WRITE to a QP at RTR lands")
        XCTAssertEqual(bbuf.bytes(0, 64), abuf.bytes(0, 64))
        // RTR -> RTS without remote write.
        var at = ibv_qp_attr()
        at.qp_state = IBV_QPS_RTS
        at.timeout = 14
        at.retry_cnt = 7
        at.rnr_retry = 7
        at.max_rd_atomic = 1
        at.qp_access_flags = IBV_ACCESS_LOCAL_WRITE.rawValue
        try b.modify(qb, &at, [IBV_QP_STATE, IBV_QP_TIMEOUT, IBV_QP_RETRY_CNT, IBV_QP_RNR_RETRY, IBV_QP_SQ_PSN,
                               IBV_QP_MAX_QP_RD_ATOMIC, IBV_QP_ACCESS_FLAGS])
        let before = bbuf.bytes(0, 4096)
        abuf.fill(0, 64, seed: 8)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        let status = a.poll(1, seconds: 20).first?.status
        XCTAssertTrue(status == IBV_WC_REM_ACCESS_ERR || status == IBV_WC_REM_INV_REQ_ERR, "\(String(describing: status))")
        XCTAssert(bbuf.bytes(0, 4096) == before, "the WRITE after the narrowing changed nothing")
        XCTAssertTrue(outer[1].auditRecords().contains { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "qp.access" },
                      "B's NIC refused it for the QP's access flags")
    }

    /// `qp` of `e` to INIT (with `rw`) and RTR towards `remote`, and no further.
    func toRTR(_ e: VerbsEndpoint, _ qp: UnsafeMutablePointer<ibv_qp>, to remote: UnsafeMutablePointer<ibv_qp>, of peer: VerbsEndpoint) throws {
        var at = ibv_qp_attr()
        at.qp_state = IBV_QPS_INIT
        at.port_num = 1
        at.qp_access_flags = rw.rawValue
        try e.modify(qp, &at, [IBV_QP_STATE, IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_ACCESS_FLAGS])
        at = ibv_qp_attr()
        at.qp_state = IBV_QPS_RTR
        at.path_mtu = IBV_MTU_4096
        at.dest_qp_num = remote.pointee.qp_num
        at.max_dest_rd_atomic = 1
        at.min_rnr_timer = 1
        at.ah_attr.port_num = 1
        at.ah_attr.dlid = peer.lid
        try e.modify(qp, &at, [IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                               IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER])
    }

    /// B's tenant keeps its QP at RTR (a target only). A reload at B that
    /// takes READ away from the connection cannot narrow a device QP at
    /// RTR, so B fails the connection rather than leave its NIC serving
    /// READs with the key A's router holds.
    func testAReloadNarrowingAccessWhileTheDeviceQPIsAtRTRFailsTheConnection() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try toRTR(b, qb, to: qa, of: a)
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        bbuf.fill(0, 64, seed: 12)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_READ, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS, "a READ from a QP at RTR")
        XCTAssertEqual(abuf.bytes(0, 64), bbuf.bytes(0, 64))
        let all = "[send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]"
        let noRead = RouterProcess.permissive("alpha").replacingOccurrences(
            of: "    - tenant: alpha\n      operations: \(all)", with: "    - tenant: alpha\n      operations: [write]")
        XCTAssertNotEqual(noRead, RouterProcess.permissive("alpha"))
        try inner[1].writePolicy("alpha", noRead)
        inner[1].reload()
        XCTAssertEqual(b.state(qb), IBV_QPS_ERR, "B's QP failed")
        XCTAssertTrue(inner[1].auditRecords().contains {
            ($0["event"] as? String) == "policy.enforce" && ($0["reason"] as? String ?? "").contains("while its device QP is at RTR")
        }, "audited with the reason")
        bbuf.fill(0, 64, seed: 13)
        let before = abuf.bytes(0, 4096)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_READ, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertNotEqual(a.poll(1, seconds: 20).first?.status, IBV_WC_SUCCESS, "no READ after the reload")
        XCTAssert(abuf.bytes(0, 4096) == before, "nothing was read")
    }
}
