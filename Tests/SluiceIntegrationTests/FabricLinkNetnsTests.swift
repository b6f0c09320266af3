import Foundation
import SluiceVerbs
import XCTest

/// Routers on separate hosts (network namespaces): the fabric link, its
/// authentication, and what a partition does to it. Real routers, sandboxed
/// (enforce), real TCP over veth. Links are made on first use: a QP
/// connected to a QP on the other host is what asks for one here.
final class FabricLinkNetnsTests: XCTestCase {
    var lab: NetnsLab!
    var dir: String!

    override func setUpWithError() throws {
        lab = try NetnsLab(hosts: 3)
        let l = lab!
        addTeardownBlock { l.teardown() }
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-fabric-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let d = dir!
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
        var yaml = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<3 {
            yaml += "    - name: host-\(i)\n      fabric: \(lab.address(i)):7470\n      lids: [\(1 + 1000 * i)-\(1000 + 1000 * i)]\n      addresses: [10.77.\(i).0/24]\n"
        }
        try yaml.write(toFile: dir + "/cluster.yaml", atomically: true, encoding: .utf8)
        try writeKey("cluster.key")
        try writeKey("other.key")
    }

    override func tearDown() {
        lab = nil
    }

    func writeKey(_ name: String) throws {
        let path = "\(dir!)/\(name)"
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        FileManager.default.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: 0o600])
    }

    func router(_ i: Int, key: String = "cluster.key", extra: [String] = []) throws -> RouterProcess {
        let r = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")],
                                  extraArguments: ["--cluster-key", "\(dir!)/\(key)", "--router-name", "host-\(i)",
                                                   "--cluster-file", "\(dir!)/cluster.yaml"] + extra,
                                  launcher: lab.inHost(i, []))
        lab.adopt(r.process)
        return r
    }

    func peers(_ r: RouterProcess) -> [String: [String: Any]] {
        ((try? r.status())?["cluster"] as? [String: Any])?["peers"] as? [String: [String: Any]] ?? [:]
    }

    func state(_ r: RouterProcess, _ peer: String) -> String? { peers(r)[peer]?["state"] as? String }

    func waitFor(_ seconds: Double, _ what: String, _ done: () -> Bool) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if done() { return }
            usleep(50_000)
        }
        XCTFail("timed out: \(what)")
    }

    func records(_ r: RouterProcess, _ event: String) -> [[String: Any]] {
        r.auditRecords().filter { $0["event"] as? String == event }
    }

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)

    /// Connects a QP of `x` to a QP of `y` (one direction): `x`'s router
    /// then needs a link to `y`'s, and dials it.
    @discardableResult
    func connectQP(_ x: VerbsEndpoint, to y: VerbsEndpoint) throws -> (UnsafeMutablePointer<ibv_qp>, UnsafeMutablePointer<ibv_qp>) {
        let qx = try x.createQP(), qy = try y.createQP()
        try x.connect(qx, to: qy, of: y, access: rw)
        return (qx, qy)
    }

    func testRoutersInTwoNamespacesAuthenticateAndAWrongKeyRouterIsRefused() throws {
        let a = try router(0), b = try router(1), stranger = try router(2, key: "other.key")
        // No link before anything needs one.
        usleep(300_000)
        for (r, p) in [(a, "host-1"), (a, "host-2"), (b, "host-0"), (stranger, "host-0")] {
            XCTAssertEqual(state(r, p), "idle", "no link before first use")
        }
        XCTAssertEqual(((try a.status())["cluster"] as? [String: Any])?["connections"] as? Int, 0)
        let ea = try VerbsEndpoint(socket: a.socket("alpha")), eb = try VerbsEndpoint(socket: b.socket("alpha"))
        let es = try VerbsEndpoint(socket: stranger.socket("alpha"))
        // A QP on host-0 connected to one on host-1: the link is made.
        let (qa, qb) = try connectQP(ea, to: eb)
        try eb.connect(qb, to: qa, of: ea, access: rw)
        waitFor(15, "host-0 and host-1 linked") { state(a, "host-1") == "up" && state(b, "host-0") == "up" }
        // QPs on host-0 and host-1 connected to QPs on the stranger, and one
        // of the stranger's to host-0: each side dials, and is refused.
        try connectQP(ea, to: es)
        try connectQP(eb, to: es)
        try connectQP(es, to: ea)

        // The link crossed the namespaces: host-1 accepted it from host-0's address.
        let accepted = records(b, "fabric.link.up").first
        XCTAssertEqual((accepted?["fields"] as? [String: String])?["peer"], "host-0")
        XCTAssert(((accepted?["fields"] as? [String: String])?["address"] ?? "").hasPrefix(lab.address(0) + ":"), "\(accepted ?? [:])")
        XCTAssertEqual((accepted?["fields"] as? [String: String])?["direction"], "accepted")

        // The stranger holds another key: both sides refuse it, and audit why.
        waitFor(15, "the stranger refused by both") {
            !records(a, "fabric.link.refused").isEmpty && !records(b, "fabric.link.refused").isEmpty
        }
        XCTAssertNotEqual(state(a, "host-2"), "up")
        XCTAssertNotEqual(state(b, "host-2"), "up")
        XCTAssertNotEqual(state(stranger, "host-0"), "up")
        let refusal = records(a, "fabric.link.refused").first
        XCTAssertEqual(refusal?["decision"] as? String, "deny")
        XCTAssertEqual(refusal?["rule"] as? String, "clusterKey")
        XCTAssert(records(a, "fabric.link.refused").contains { ($0["reason"] as? String ?? "").contains("does not hold the cluster key") },
                  "\(records(a, "fabric.link.refused"))")
        XCTAssertGreaterThan(((try a.status())["cluster"] as? [String: Any])?["refusals"] as? Int ?? 0, 0)
        XCTAssertFalse(records(stranger, "fabric.link.refused").isEmpty, "the stranger records its refusals too")
        XCTAssert(records(stranger, "fabric.link.up").isEmpty, "the stranger never linked")

        // The good link was never disturbed by the stranger.
        XCTAssertEqual(records(a, "fabric.link.up").count, 1)
        XCTAssertEqual(state(a, "host-1"), "up")
        XCTAssertEqual(state(a, "host-2"), "down", "wanted, refused: down, with the failure")
        XCTAssertNotNil(peers(a)["host-2"]?["lastFailure"])
        // Each router stays sandboxed with the multiHost feature, and alive.
        let sandbox = (try a.status())["sandbox"] as? [String: Any]
        XCTAssertEqual(sandbox?["mode"] as? String, "enforce")
        for r in [a, b, stranger] { XCTAssertEqual(r.stop(), 0, r.stderrText()) }
    }

    func testAPartitionTakesTheLinkDownWithinTheDeadlineAndItReturnsWhenHealed() throws {
        let fast = ["--fabric-heartbeat-ms", "100", "--fabric-dead-ms", "800"]
        let a = try router(0, extra: fast), b = try router(1, extra: fast)
        // Connected QPs on both sides need the link: it is made, and made
        // again after the partition (by either side).
        let ea = try VerbsEndpoint(socket: a.socket("alpha")), eb = try VerbsEndpoint(socket: b.socket("alpha"))
        let (qa, qb) = try connectQP(ea, to: eb)
        try eb.connect(qb, to: qa, of: ea, access: rw)
        waitFor(15, "linked") { state(a, "host-1") == "up" && state(b, "host-0") == "up" }
        try lab.setConnected(1, false)
        let cut = Date()
        waitFor(5, "both sides notice the partition") { state(a, "host-1") != "up" && state(b, "host-0") != "up" }
        XCTAssertLessThan(Date().timeIntervalSince(cut), 4, "the link must fail within its dead interval, not TCP's minutes")
        XCTAssert((records(a, "fabric.link.down").last?["reason"] as? String ?? "").contains("nothing heard"))
        XCTAssertNotEqual(state(a, "host-1"), "idle", "still needed by the QP: down or connecting, not idle")
        try lab.setConnected(1, true)
        waitFor(15, "linked again after the partition healed") { state(a, "host-1") == "up" && state(b, "host-0") == "up" }
        XCTAssertGreaterThanOrEqual(records(a, "fabric.link.up").count, 2)
        for r in [a, b] { XCTAssertEqual(r.stop(), 0, r.stderrText()) }
    }
}
