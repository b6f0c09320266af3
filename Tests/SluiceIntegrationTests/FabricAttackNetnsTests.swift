import Foundation
import SluiceVerbs
import XCTest

/// The attacks that apply across hosts, against a target router whose
/// sending peer skips its own checks (`--test-unchecked-sender`, debug
/// builds): stale rkey, another tenant's rkey, out of bounds, a QP hijack,
/// an operation the policies forbid, and (`--test-forge-tenant`,
/// `--test-forge-source-lid`) a forged tenant name and a forged source
/// address. Each is refused at the target, audited there, and leaves the
/// victim's bytes as they were.
final class FabricAttackNetnsTests: XCTestCase {
    var lab: NetnsLab!
    var routers: [RouterProcess] = []

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    static let sendOnly = """
        apiVersion: sluice/v1
        kind: TenantPolicy
        metadata:
          name: sendonly
        spec:
          identity:
            uids: [\(getuid())]
          memoryAccess: [localWrite, remoteWrite, remoteRead]
          operations: [send]
          peers:
            - tenant: alpha
              operations: [send]
        """

    override func setUpWithError() throws {
        lab = try NetnsLab(hosts: 2)
        let l = lab!
        addTeardownBlock { l.teardown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-fa-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        var yaml = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<2 {
            yaml += "    - name: host-\(i)\n      fabric: \(lab.address(i)):7470\n      lids: [\(1 + 1000 * i)-\(1000 + 1000 * i)]\n      addresses: [10.77.\(i).0/24]\n"
        }
        try yaml.write(toFile: dir + "/cluster.yaml", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/cluster.key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                       attributes: [.posixPermissions: 0o600])
        // vault takes its addresses from a pool on host 1 only, and lets
        // no other tenant at its memory; impostor's and forger's requests
        // claim what they are not (host 0's router forges them).
        let policies = ["alpha": RouterProcess.permissive("alpha", peers: ["sendonly": "[send, write]", "forger": "[write]"]),
                        "beta": RouterProcess.permissive("beta"), "mallory": RouterProcess.permissive("mallory"),
                        "sendonly": FabricAttackNetnsTests.sendOnly,
                        "vault": RouterProcess.permissive("vault", extra: "  addressPool: 10.77.1.0/25\n"),
                        "impostor": RouterProcess.permissive("impostor"), "forger": RouterProcess.permissive("forger")]
        for i in 0..<2 {
            // Host 0's router is the modified sender.
            let r = try RouterProcess(policies: policies,
                                      extraArguments: ["--cluster-key", dir + "/cluster.key", "--router-name", "host-\(i)",
                                                       "--cluster-file", dir + "/cluster.yaml"] + (i == 0 ? ["--test-unchecked-sender", "--test-forge-tenant", "impostor=vault",
                                                                                      "--test-forge-source-lid", "forger=1500"] : []),
                                      launcher: lab.inHost(i, []))
            lab.adopt(r.process)
            routers.append(r)
        }
        // Links are made on first use: none yet. The tests' first
        // connection dials it.
        XCTAssertEqual(routers[0].fabricState("host-1"), "idle")
        XCTAssertEqual(routers[1].fabricState("host-0"), "idle")
    }

    override func tearDown() {
        routers = []
        lab = nil
    }

    /// A connected pair: `a` on host 0 (the modified sender), `b` on host 1.
    func pair(_ a: VerbsEndpoint, _ b: VerbsEndpoint) throws -> (UnsafeMutablePointer<ibv_qp>, UnsafeMutablePointer<ibv_qp>) {
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        return (qa, qb)
    }

    func targetDenials(_ rule: String) -> Int {
        routers[1].auditRecords().filter { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == rule }.count
    }

    func testAStaleRkeyAnotherTenantsRkeyAndOutOfBoundsAreRefusedAtTheTarget() throws {
        let a = try VerbsEndpoint(socket: routers[0].socket("alpha")), b = try VerbsEndpoint(socket: routers[1].socket("alpha"))
        let beta = try VerbsEndpoint(socket: routers[1].socket("beta"))
        let abuf = TestBuffer(pages: 2), victim = TestBuffer(pages: 2), betaBuf = TestBuffer(pages: 2)
        victim.fill(0, victim.size, seed: 21)
        betaBuf.fill(0, betaBuf.size, seed: 22)
        let victimBefore = victim.bytes(0, victim.size), betaBefore = betaBuf.bytes(0, betaBuf.size)
        let amr = try a.register(abuf.base, abuf.size, rw)
        abuf.fill(0, 64, seed: 99)

        // Control: the valid key works, so the refusals below are the checks'.
        let live = try b.register(victim.base + 4096, 4096, rw)
        var (qa, _) = try pair(a, b)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_READ, [sge(abuf.base + 1024, 64, amr)], remote: (addr(victim.base + 4096), live.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(abuf.bytes(1024, 64), victim.bytes(4096, 64))

        // Stale: a key whose region was deregistered.
        let stale = try b.register(victim.base, 4096, rw)
        let staleKey = stale.pointee.rkey
        b.deregister(stale)
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(victim.base), staleKey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(targetDenials("rkey"), 1)

        // Another tenant's key, valid on that host, in beta's PD.
        let betaMR = try beta.register(betaBuf.base, 4096, rw)
        (qa, _) = try pair(a, b)
        try a.postSend(qa, id: 3, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(betaBuf.base), betaMR.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(targetDenials("rkey"), 2)

        // Out of bounds: the live key, one page further.
        (qa, _) = try pair(a, b)
        try a.postSend(qa, id: 4, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(victim.base + 8192), live.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(targetDenials("rkey.bounds"), 1)

        XCTAssertEqual(victim.bytes(0, victim.size), victimBefore, "no attack changed the victim's memory")
        XCTAssertEqual(betaBuf.bytes(0, betaBuf.size), betaBefore, "nor beta's")
        // The requester's router counts the faults toward key guessing.
        XCTAssertEqual(routers[0].auditRecords().filter { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "rkey" }.count, 3)
    }

    func testAHijackerOnTheModifiedRouterGetsNoAnswer() throws {
        let a = try VerbsEndpoint(socket: routers[0].socket("alpha")), b = try VerbsEndpoint(socket: routers[1].socket("alpha"))
        let m = try VerbsEndpoint(socket: routers[0].socket("mallory"))
        let (_, qb) = try pair(a, b)
        let qm = try m.createQP()
        try m.connect(qm, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        let victim = TestBuffer(pages: 1), mbuf = TestBuffer(pages: 1)
        victim.fill(0, 4096, seed: 3)
        let before = victim.bytes(0, 4096)
        let vmr = try b.register(victim.base, 4096, rw), mmr = try m.register(mbuf.base, 4096, rw)
        try m.postSend(qm, id: 1, IBV_WR_RDMA_WRITE, [sge(mbuf.base, 64, mmr)], remote: (addr(victim.base), vmr.pointee.rkey))
        XCTAssertEqual(m.poll(1).first?.status, IBV_WC_RETRY_EXC_ERR)
        XCTAssertEqual(victim.bytes(0, 4096), before)
        XCTAssertGreaterThan(routers[1].auditRecords().filter { ($0["rule"] as? String) == "fabric.connection" }.count, 0)
    }

    func testAnOperationThePoliciesForbidIsRefusedAtTheTarget() throws {
        // sendonly may only SEND to alpha; its (modified) router lets a WRITE out.
        let s = try VerbsEndpoint(socket: routers[0].socket("sendonly")), b = try VerbsEndpoint(socket: routers[1].socket("alpha"))
        let (qs, qb) = try pair(s, b)
        let sbuf = TestBuffer(pages: 1), victim = TestBuffer(pages: 1)
        victim.fill(0, 4096, seed: 8)
        let before = victim.bytes(0, 4096)
        let smr = try s.register(sbuf.base, 4096, rw), vmr = try b.register(victim.base, 4096, rw)
        // Control: a SEND is allowed.
        try b.postRecv(qb, id: 9, [sge(victim.base + 2048, 64, vmr)])
        try s.postSend(qs, id: 1, IBV_WR_SEND, [sge(sbuf.base, 16, smr)])
        XCTAssertEqual(s.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(b.poll(1).first?.status, IBV_WC_SUCCESS)
        let afterSend = victim.bytes(0, 4096)
        XCTAssertNotEqual(afterSend, before, "the control SEND landed")
        try s.postSend(qs, id: 2, IBV_WR_RDMA_WRITE, [sge(sbuf.base, 64, smr)], remote: (addr(victim.base), vmr.pointee.rkey))
        XCTAssertEqual(s.poll(1).first?.status, IBV_WC_REM_INV_REQ_ERR)
        XCTAssertEqual(victim.bytes(0, 4096), afterSend, "the WRITE changed nothing")
        XCTAssertEqual(targetDenials("operations"), 1, "refused by the target's copy of sendonly's policy")
    }

    func sourceDenials() -> [[String: Any]] {
        routers[1].auditRecords().filter { ($0["event"] as? String) == "datapath" && ($0["rule"] as? String) == "fabric.source" }
    }

    func testATenantNameTheSenderForgesIsRefusedAtTheTarget() throws {
        // impostor's router says its requests come from vault. By vault's
        // consent alone (vault to vault) the WRITE would land; vault's
        // addressPool is what the sender cannot fake.
        let imp = try VerbsEndpoint(socket: routers[0].socket("impostor")), v = try VerbsEndpoint(socket: routers[1].socket("vault"))
        let qi = try imp.createQP(), qv = try v.createQP()
        try imp.connect(qi, to: qv, of: v, access: rw, retryCount: 2, timeout: 10)
        try v.connect(qv, to: qi, of: imp, access: rw)
        let victim = TestBuffer(pages: 1), ibuf = TestBuffer(pages: 1)
        victim.fill(0, 4096, seed: 31)
        ibuf.fill(0, 4096, seed: 32)
        let before = victim.bytes(0, 4096)
        let vmr = try v.register(victim.base, 4096, rw), imr = try imp.register(ibuf.base, 4096, rw)
        try imp.postSend(qi, id: 1, IBV_WR_RDMA_WRITE, [sge(ibuf.base, 64, imr)], remote: (addr(victim.base), vmr.pointee.rkey))
        XCTAssertEqual(imp.poll(1).first?.status, IBV_WC_RETRY_EXC_ERR, "nothing answers a forged request")
        XCTAssert(victim.bytes(0, 4096) == before, "the forged WRITE changed nothing")
        let denials = sourceDenials()
        XCTAssertGreaterThanOrEqual(denials.count, 1)
        XCTAssert((denials.first?["reason"] as? String ?? "").contains("tenant vault's addressPool"), "\(denials)")
        XCTAssertEqual(denials.first?["decision"] as? String, "deny")
    }

    func testASourceAddressThatIsNotTheSendersIsRefusedAtTheTarget() throws {
        // forger's router claims LID 1500, which the directory gives to
        // host 1 (the target itself), not to host 0.
        let f = try VerbsEndpoint(socket: routers[0].socket("forger")), b = try VerbsEndpoint(socket: routers[1].socket("alpha"))
        let qf = try f.createQP(), qb = try b.createQP()
        try f.connect(qf, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        try b.connect(qb, to: qf, of: f, access: rw)
        let victim = TestBuffer(pages: 1), fbuf = TestBuffer(pages: 1)
        victim.fill(0, 4096, seed: 41)
        fbuf.fill(0, 4096, seed: 42)
        let before = victim.bytes(0, 4096)
        let vmr = try b.register(victim.base, 4096, rw), fmr = try f.register(fbuf.base, 4096, rw)
        try f.postSend(qf, id: 1, IBV_WR_RDMA_WRITE, [sge(fbuf.base, 64, fmr)], remote: (addr(victim.base), vmr.pointee.rkey))
        XCTAssertEqual(f.poll(1).first?.status, IBV_WC_RETRY_EXC_ERR)
        XCTAssert(victim.bytes(0, 4096) == before, "the WRITE from a forged address changed nothing")
        let denials = sourceDenials()
        XCTAssertGreaterThanOrEqual(denials.count, 1)
        XCTAssert((denials.first?["reason"] as? String ?? "").contains("source LID 1500 belongs to router host-1, not to the sender host-0"), "\(denials)")
    }
}
