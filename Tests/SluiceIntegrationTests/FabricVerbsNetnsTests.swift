import Foundation
import SluiceVerbs
import XCTest

/// RC traffic between routers on two hosts (namespaces): this process is a
/// tenant of both routers (their sockets are files, reachable from any
/// namespace), and every byte it moves crosses the fabric link over veth.
final class FabricVerbsNetnsTests: XCTestCase {
    var lab: NetnsLab!
    var dir: String!
    var routers: [RouterProcess] = []

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
        | IBV_ACCESS_REMOTE_ATOMIC.rawValue)

    override func setUpWithError() throws {
        lab = try NetnsLab(hosts: 2)
        let l = lab!
        addTeardownBlock { l.teardown() }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-fv-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let d = dir!
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        var yaml = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<2 {
            yaml += "    - name: host-\(i)\n      fabric: \(lab.address(i)):7470\n      lids: [\(1 + 1000 * i)-\(1000 + 1000 * i)]\n      addresses: [10.77.\(i).0/24]\n"
        }
        try yaml.write(toFile: dir + "/cluster.yaml", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/cluster.key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                       attributes: [.posixPermissions: 0o600])
        let all = "[send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]"
        let policies = ["alpha": RouterProcess.permissive("alpha", peers: ["beta": all]), "mallory": RouterProcess.permissive("mallory"),
                        "beta": RouterProcess.permissive("beta", peers: ["alpha": all])]
        for i in 0..<2 {
            let r = try RouterProcess(policies: policies,
                                      extraArguments: ["--cluster-key", dir + "/cluster.key", "--router-name", "host-\(i)",
                                                       "--cluster-file", dir + "/cluster.yaml",
                                                       "--fabric-heartbeat-ms", "200", "--fabric-dead-ms", "1000"],
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

    func endpoints() throws -> (VerbsEndpoint, VerbsEndpoint) {
        (try VerbsEndpoint(socket: routers[0].socket("alpha")), try VerbsEndpoint(socket: routers[1].socket("alpha")))
    }

    func testSessionsGetTheirRoutersOwnLIDsAndAddresses() throws {
        let (a, b) = try endpoints()
        XCTAssert((1...1000).contains(a.lid), "\(a.lid)")
        XCTAssert((1001...2000).contains(b.lid), "\(b.lid)")
        withUnsafeBytes(of: a.gid) { XCTAssertEqual(Array($0[10..<14]), [0xff, 0xff, 10, 77]); XCTAssertEqual($0[14], 0) }
        withUnsafeBytes(of: b.gid) { XCTAssertEqual($0[14], 1) }
    }

    func crossHostOperations(useGID: Bool) throws {
        let (a, b) = try endpoints()
        try checkCrossHostOperations(a, b, access: rw, useGID: useGID)
    }

    func testWriteReadSendAndAtomicsAcrossHostsByLID() throws { try crossHostOperations(useGID: false) }

    func testWriteReadSendAndAtomicsAcrossHostsByGID() throws { try crossHostOperations(useGID: true) }

    func testInboundWorkAtTheTargetIsChargedToTheTargetTenantsLane() throws {
        // beta on host 1 posts nothing: only alpha's READs from host 0 make
        // its router work for it. That time is beta's in the scheduler.
        let a = try VerbsEndpoint(socket: routers[0].socket("alpha")), b = try VerbsEndpoint(socket: routers[1].socket("beta"))
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let size = 1 << 20
        let abuf = TestBuffer(pages: size / 4096), bbuf = TestBuffer(pages: size / 4096)
        bbuf.fill(0, size, seed: 5)
        let amr = try a.register(abuf.base, size, rw), bmr = try b.register(bbuf.base, size, rw)
        func betaSeconds() -> Double? {
            (((try? routers[1].status())?["shaping"] as? [String: [String: Any]])?["beta"])?["routerSeconds"] as? Double
        }
        XCTAssertEqual(betaSeconds(), 0, "nothing done for beta yet")
        for i in 0..<4 {
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_READ, [sge(abuf.base, size, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
            XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        }
        XCTAssert(abuf.bytes(0, size) == bbuf.bytes(0, size))
        XCTAssertGreaterThan(betaSeconds() ?? 0, 0, "the READs the target served were charged to beta's lane")
    }

    func testManyQPsShareTheLinkAndEachKeepsItsOrderAndData() throws {
        let (a, b) = try endpoints()
        let count = 8, per = 40, chunk = 8192
        let abuf = TestBuffer(pages: count * per * chunk / 4096), bbuf = TestBuffer(pages: count * per * chunk / 4096)
        let amr = try a.register(abuf.base, abuf.size, rw), bmr = try b.register(bbuf.base, bbuf.size, rw)
        var qps: [UnsafeMutablePointer<ibv_qp>] = []
        for _ in 0..<count {
            let qa = try a.createQP(sendDepth: 64), qb = try b.createQP()
            try a.connect(qa, to: qb, of: b, access: rw)
            try b.connect(qb, to: qa, of: a, access: rw)
            qps.append(qa)
        }
        abuf.fill(0, abuf.size, seed: 17)
        // Every QP posts all its WRITEs at once; they interleave on the link.
        for (q, qa) in qps.enumerated() {
            for i in 0..<per {
                let off = (q * per + i) * chunk
                try a.postSend(qa, id: UInt64(q * 1000 + i), IBV_WR_RDMA_WRITE, [sge(abuf.base + off, chunk, amr)],
                               remote: (addr(bbuf.base + off), bmr.pointee.rkey))
            }
        }
        let wc = a.poll(count * per, seconds: 30)
        XCTAssertEqual(wc.count, count * per)
        XCTAssert(wc.allSatisfy { $0.status == IBV_WC_SUCCESS })
        for q in 0..<count {
            let ids = wc.map(\.wr_id).filter { $0 / 1000 == UInt64(q) }
            XCTAssertEqual(ids, ids.sorted(), "QP \(q) completes in order")
        }
        XCTAssertEqual(bbuf.bytes(0, bbuf.size), abuf.bytes(0, abuf.size))
    }

    /// Requests to another host are pipelined (up to 16 per QP in flight).
    /// Forty SENDs against ten posted receives: the target refuses the
    /// eleventh (RNR) and runs nothing after it until the requester sends
    /// again from there; once more receives are posted every SEND lands
    /// exactly once, in order, and completes in order. A request that
    /// fails a local check behind requests in flight completes after them,
    /// with its error.
    func testPipelinedSendsSurviveAnRNRInTheMiddleAndLandOnceInOrder() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(sendDepth: 64), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, rnrRetry: 7)
        try b.connect(qb, to: qa, of: a, access: rw)
        let n = 40, size = 64
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        for i in 0..<n { (abuf.base + i * size).storeBytes(of: UInt64(1000 + i), as: UInt64.self) }
        for i in 0..<10 { try b.postRecv(qb, id: UInt64(i), [sge(bbuf.base + i * size, size, bmr)]) }
        for i in 0..<n { try a.postSend(qa, id: UInt64(i), IBV_WR_SEND, [sge(abuf.base + i * size, size, amr)]) }
        // The first ten land; the rest wait for receives (RNR, retried).
        let first = b.poll(10, seconds: 20)
        XCTAssertEqual(first.map(\.wr_id), (0..<10).map(UInt64.init))
        usleep(50_000)
        for i in 10..<n { try b.postRecv(qb, id: UInt64(i), [sge(bbuf.base + i * size, size, bmr)]) }
        let rest = b.poll(n - 10, seconds: 30)
        XCTAssertEqual(rest.map(\.wr_id), (10..<n).map(UInt64.init), "every receive used once, in order")
        XCTAssertTrue((first + rest).allSatisfy { $0.status == IBV_WC_SUCCESS && $0.byte_len == UInt32(size) })
        for i in 0..<n {
            XCTAssertEqual((bbuf.base + i * size).load(as: UInt64.self), UInt64(1000 + i), "receive \(i) holds SEND \(i)")
        }
        let sent = a.poll(n, seconds: 20)
        XCTAssertEqual(sent.map(\.wr_id), (0..<n).map(UInt64.init), "completions in the order posted")
        XCTAssertTrue(sent.allSatisfy { $0.status == IBV_WC_SUCCESS })
        b.assertQuiet(seconds: 0.3) // no SEND landed twice
        // Eight WRITEs, then one with an lkey of nothing, then one more:
        // the eight complete, then the bad one with its error, then a flush.
        for i in 0..<8 {
            try a.postSend(qa, id: UInt64(100 + i), IBV_WR_RDMA_WRITE, [sge(abuf.base + i * size, size, amr)],
                           remote: (addr(bbuf.base + 2048 + i * size), bmr.pointee.rkey))
        }
        var bad = sge(abuf.base, size, amr)
        bad.lkey = amr.pointee.lkey ^ 0x5a5a
        try a.postSend(qa, id: 108, IBV_WR_RDMA_WRITE, [bad], remote: (addr(bbuf.base), bmr.pointee.rkey))
        try a.postSend(qa, id: 109, IBV_WR_RDMA_WRITE, [sge(abuf.base, size, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        let tail = a.poll(10, seconds: 20)
        XCTAssertEqual(tail.map(\.wr_id), (100..<110).map(UInt64.init))
        XCTAssertEqual(tail.map(\.status), Array(repeating: IBV_WC_SUCCESS, count: 8) + [IBV_WC_LOC_PROT_ERR, IBV_WC_WR_FLUSH_ERR])
    }

    /// Sixteen 4 MiB SENDs (64 MiB) against two receives: the window keeps
    /// at most 8 MiB of frames per QP, the RNR'd ones are sent again as
    /// receives appear and the link drains, and every SEND lands once, in
    /// order.
    func testLargeSendsAgainstTooFewReceivesLandOnceInOrder() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(sendDepth: 16), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, rnrRetry: 7)
        try b.connect(qb, to: qa, of: a, access: rw)
        let n = 16, size = 4 << 20
        let abuf = TestBuffer(pages: n * size / 4096), bbuf = TestBuffer(pages: n * size / 4096)
        let amr = try a.register(abuf.base, abuf.size, rw), bmr = try b.register(bbuf.base, bbuf.size, rw)
        for i in 0..<n { (abuf.base + i * size).storeBytes(of: UInt64(7000 + i), as: UInt64.self) }
        for i in 0..<2 { try b.postRecv(qb, id: UInt64(i), [sge(bbuf.base + i * size, size, bmr)]) }
        for i in 0..<n { try a.postSend(qa, id: UInt64(i), IBV_WR_SEND, [sge(abuf.base + i * size, size, amr)]) }
        let first = b.poll(2, seconds: 30)
        XCTAssertEqual(first.map(\.wr_id), [0, 1])
        usleep(100_000)
        for i in 2..<n { try b.postRecv(qb, id: UInt64(i), [sge(bbuf.base + i * size, size, bmr)]) }
        let rest = b.poll(n - 2, seconds: 60)
        XCTAssertEqual(rest.map(\.wr_id), (2..<n).map(UInt64.init))
        for i in 0..<n { XCTAssertEqual((bbuf.base + i * size).load(as: UInt64.self), UInt64(7000 + i)) }
        let sent = a.poll(n, seconds: 30)
        XCTAssertEqual(sent.map(\.wr_id), (0..<n).map(UInt64.init))
        XCTAssertTrue(sent.allSatisfy { $0.status == IBV_WC_SUCCESS }, "\(sent.map(\.status.rawValue))")
        b.assertQuiet(seconds: 0.3)
    }

    func testAMessageAboveTheFabricsLimitFailsLocally() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let big = TestBuffer(pages: 2049), dst = TestBuffer(pages: 2049)
        let amr = try a.register(big.base, big.size, rw), bmr = try b.register(dst.base, dst.size, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(big.base, 8 * 1024 * 1024, amr)], remote: (addr(dst.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS, "8 MiB is the limit, and fits")
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(big.base, 8 * 1024 * 1024 + 1, amr)], remote: (addr(dst.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_LOC_LEN_ERR)
    }

    func testTheTargetRouterRefusesBadKeysAndBoundsWithRemoteAccessErrors() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let abuf = TestBuffer(pages: 2), bbuf = TestBuffer(pages: 2)
        bbuf.fill(0, bbuf.size, seed: 77)
        let before = bbuf.bytes(0, bbuf.size)
        let amr = try a.register(abuf.base, abuf.size, rw), bmr = try b.register(bbuf.base, 4096, rw)
        // Out of bounds by one byte: refused at the target, QP to ERR.
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 16, amr)], remote: (addr(bbuf.base + 4096 - 15), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(bbuf.bytes(0, bbuf.size), before)
        let denied = routers[1].auditRecords().filter { $0["event"] as? String == "datapath" && $0["rule"] as? String == "rkey.bounds" }
        XCTAssertEqual(denied.count, 1, "the target router recorded the refusal")
        // A guessed key, on a fresh connection.
        let qa2 = try a.createQP(), qb2 = try b.createQP()
        try a.connect(qa2, to: qb2, of: b, access: rw)
        try b.connect(qb2, to: qa2, of: a, access: rw)
        try a.postSend(qa2, id: 2, IBV_WR_RDMA_READ, [sge(abuf.base, 16, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey ^ 0x5a5a))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        XCTAssertEqual(abuf.bytes(0, 16), [UInt8](repeating: 0, count: 16), "nothing was read")
    }

    func testAQPHijackAcrossHostsGetsNoAnswerAndTouchesNothing() throws {
        // The victim pair (alpha on both hosts), and mallory on host 0
        // pointing a QP at the victim's QP on host 1.
        let (a, b) = try endpoints()
        let m = try VerbsEndpoint(socket: routers[0].socket("mallory"))
        let qa = try a.createQP(), qb = try b.createQP(), qm = try m.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        try m.connect(qm, to: qb, of: b, access: rw, retryCount: 2, timeout: 10)
        let bbuf = TestBuffer(pages: 1), mbuf = TestBuffer(pages: 1)
        bbuf.fill(0, 4096, seed: 1)
        let before = bbuf.bytes(0, 4096)
        let bmr = try b.register(bbuf.base, 4096, rw), mmr = try m.register(mbuf.base, 4096, rw)
        // Mallory even knows the right rkey: the target still refuses, as
        // its QP is connected to alpha's QP, not hers.
        let t0 = Date()
        try m.postSend(qm, id: 1, IBV_WR_RDMA_WRITE, [sge(mbuf.base, 64, mmr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        let wc = m.poll(1, seconds: 10)
        XCTAssertEqual(wc.first?.status, IBV_WC_RETRY_EXC_ERR)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
        XCTAssertEqual(bbuf.bytes(0, 4096), before)
        XCTAssert(routers[1].auditRecords().contains { $0["event"] as? String == "fabric.request" && $0["rule"] as? String == "fabric.connection" })
    }

    func linkUp() -> Bool {
        func up(_ r: RouterProcess, _ p: String) -> Bool {
            ((((try? r.status())?["cluster"] as? [String: Any])?["peers"] as? [String: [String: Any]])?[p]?["state"] as? String) == "up"
        }
        return up(routers[0], "host-1") && up(routers[1], "host-0")
    }

    func testAPartitionFailsQPsWithRetryExceededAndNewConnectionsWorkOnceHealed() throws {
        let (a, b) = try endpoints()
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        let qa = try a.createQP(), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 7, timeout: 14)
        try b.connect(qb, to: qa, of: a, access: rw)
        try lab.setConnected(1, false)
        let t0 = Date()
        abuf.fill(0, 64, seed: 4)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1, seconds: 10).first?.status, IBV_WC_RETRY_EXC_ERR)
        // timeout 14 is 67 ms a try, 8 tries: about 0.54 s.
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3)
        XCTAssertGreaterThan(Date().timeIntervalSince(t0), 0.4, "the QP used its retries before failing")
        // The partition outlasts the links' dead interval: both routers drop
        // the link, then dial again once the cable is back.
        let down = Date().addingTimeInterval(5)
        func state(_ r: RouterProcess, _ p: String) -> String? {
            (((try? r.status())?["cluster"] as? [String: Any])?["peers"] as? [String: [String: Any]])?[p]?["state"] as? String
        }
        while Date() < down && (state(routers[0], "host-1") == "up" || state(routers[1], "host-0") == "up") { usleep(50_000) }
        XCTAssertNotEqual(state(routers[0], "host-1"), "up")
        try lab.setConnected(1, true)
        let end = Date().addingTimeInterval(15)
        while Date() < end && !linkUp() { usleep(50_000) }
        let qa2 = try a.createQP(), qb2 = try b.createQP()
        try a.connect(qa2, to: qb2, of: b, access: rw)
        try b.connect(qb2, to: qa2, of: a, access: rw)
        try a.postSend(qa2, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 64, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(bbuf.bytes(0, 64), abuf.bytes(0, 64))
    }

    func testKillingTheRemoteRouterFailsQPsWithRetryExceededWithinTheirTimeout() throws {
        let (a, b) = try endpoints()
        let qa = try a.createQP(), qb = try b.createQP()
        // timeout 12: 16.8 ms per try, retry_cnt 3: about 70 ms in all.
        try a.connect(qa, to: qb, of: b, access: rw, retryCount: 3, timeout: 12)
        try b.connect(qb, to: qa, of: a, access: rw)
        let abuf = TestBuffer(pages: 1), bbuf = TestBuffer(pages: 1)
        let amr = try a.register(abuf.base, 4096, rw), bmr = try b.register(bbuf.base, 4096, rw)
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        kill(routers[1].process.processIdentifier, SIGKILL)
        routers[1].process.waitUntilExit()
        let t0 = Date()
        try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        try a.postSend(qa, id: 3, IBV_WR_RDMA_WRITE, [sge(abuf.base, 8, amr)], remote: (addr(bbuf.base), bmr.pointee.rkey))
        let wc = a.poll(2, seconds: 10)
        XCTAssertEqual(wc.map(\.status), [IBV_WC_RETRY_EXC_ERR, IBV_WC_WR_FLUSH_ERR])
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3, "never a hang: within the QP's timeout × retries (plus scheduling)")
        XCTAssertEqual(a.state(qa), IBV_QPS_ERR)
        _ = b
    }
}
