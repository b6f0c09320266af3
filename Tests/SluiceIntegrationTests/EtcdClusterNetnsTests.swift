import Foundation
import SluiceVerbs
import XCTest

/// Routers that find each other through etcd, and take their tenant
/// policies from it: etcd runs on a host of the lab, each router on another.
final class EtcdClusterNetnsTests: XCTestCase {
    static var etcdBinary: String? { ["/usr/bin/etcd", "/usr/local/bin/etcd"].first { FileManager.default.isExecutableFile(atPath: $0) } }

    func waitFor(_ seconds: Double, _ what: String, _ done: () -> Bool) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if done() { return }
            usleep(50_000)
        }
        XCTFail("timed out: \(what)")
    }

    /// A POST to etcd's JSON gateway from inside host `i` (curl is not
    /// assumed: the router's own client is not linked into this target, so
    /// this speaks HTTP through `ip netns exec` and bash's /dev/tcp).
    func etcdPut(_ lab: NetnsLab, from i: Int, endpoint: String, key: String, value: String) throws {
        let body = "{\"key\":\"\(Data(key.utf8).base64EncodedString())\",\"value\":\"\(Data(value.utf8).base64EncodedString())\"}"
        let parts = endpoint.split(separator: ":")
        let script = "exec 3<>/dev/tcp/\(parts[0])/\(parts[1]); printf 'POST /v3/kv/put HTTP/1.1\\r\\nHost: etcd\\r\\nContent-Length: \(body.utf8.count)\\r\\nConnection: close\\r\\n\\r\\n%s' '\(body)' >&3; cat <&3"
        let r = try NetnsLab.run(lab.ip, ["netns", "exec", lab.hosts[i], "/bin/bash", "-c", script])
        XCTAssert(r.output.hasPrefix("HTTP/1.1 200"), "etcd put: \(r.output)")
    }

    /// A lab of three hosts with etcd on host 2; returns a maker of routers on hosts 0 and 1.
    func etcdLab() throws -> (lab: NetnsLab, endpoint: String, router: (Int) throws -> RouterProcess) {
        guard let etcdBin = EtcdClusterNetnsTests.etcdBinary else {
            throw XCTSkip("etcd is not installed (Debian: etcd-server; `make test` installs it)")
        }
        let lab = try NetnsLab(hosts: 3)
        addTeardownBlock { lab.teardown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-etcd-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/cluster.key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                       attributes: [.posixPermissions: 0o600])

        // etcd on host 2, private data directory.
        let etcdHost = lab.address(2), endpoint = "\(lab.address(2)):2379"
        let etcd = Process()
        etcd.executableURL = URL(fileURLWithPath: lab.ip)
        etcd.arguments = ["netns", "exec", lab.hosts[2], etcdBin, "--name", "lab", "--data-dir", dir + "/etcd",
                          "--listen-client-urls", "http://\(endpoint)", "--advertise-client-urls", "http://\(endpoint)",
                          "--listen-peer-urls", "http://\(etcdHost):2380", "--initial-advertise-peer-urls", "http://\(etcdHost):2380",
                          "--initial-cluster", "lab=http://\(etcdHost):2380", "--log-level", "warn"]
        let etcdLog = FileHandle(forWritingAtPath: "/dev/null")
        etcd.standardOutput = etcdLog
        etcd.standardError = etcdLog
        try etcd.run()
        lab.adopt(etcd)

        func router(_ i: Int) throws -> RouterProcess {
            let r = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")],
                                      extraArguments: ["--cluster-key", dir + "/cluster.key", "--router-name", "host-\(i)",
                                                       "--directory", "etcd", "--etcd", endpoint,
                                                       "--fabric-listen", "\(lab.address(i)):7470",
                                                       "--router-lids", "\(1 + 1000 * i)-\(1000 + 1000 * i)",
                                                       "--router-addresses", "10.77.\(i).0/24"],
                                      launcher: lab.inHost(i, []))
            lab.adopt(r.process)
            return r
        }
        return (lab, endpoint, router)
    }

    func cluster(_ r: RouterProcess) -> [String: Any] { ((try? r.status())?["cluster"] as? [String: Any]) ?? [:] }

    /// `r` has `peer` from etcd and could link with it (links are made on
    /// first use, so "idle" until a QP needs it).
    func linked(_ r: RouterProcess, _ peer: String) -> Bool {
        ((cluster(r)["peers"] as? [String: [String: Any]])?[peer]?["state"] as? String) != nil
    }

    func testRoutersRegisterInEtcdLinkAndReceiveAPolicyWrittenThere() throws {
        let (lab, endpoint, router) = try etcdLab()
        let a = try router(0), b = try router(1)
        // Neither router knows the other's address but from etcd.
        waitFor(20, "the routers found each other in etcd and linked") { linked(a, "host-1") && linked(b, "host-0") }
        XCTAssertEqual((cluster(a)["directory"] as? [String: Any])?["routers"] as? [String], ["host-0", "host-1"])

        // A tenant policy written to etcd reaches both routers: beta's socket appears.
        let beta = RouterProcess.permissive("beta")
        try etcdPut(lab, from: 0, endpoint: endpoint, key: "/sluice/policies/alpha.yaml", value: RouterProcess.permissive("alpha"))
        try etcdPut(lab, from: 0, endpoint: endpoint, key: "/sluice/policies/beta.yaml", value: beta)
        waitFor(15, "beta served by both routers") {
            FileManager.default.fileExists(atPath: a.socket("beta")) && FileManager.default.fileExists(atPath: b.socket("beta"))
        }
        for r in [a, b] {
            let reload = r.auditRecords().last { $0["event"] as? String == "policy.reload" }
            XCTAssertEqual((reload?["fields"] as? [String: String])?["requestedBy"], "etcd")
            XCTAssertEqual((reload?["fields"] as? [String: String])?["tenants"], "alpha,beta")
        }
        // A broken policy in etcd changes nothing, and is audited as refused.
        try etcdPut(lab, from: 0, endpoint: endpoint, key: "/sluice/policies/beta.yaml", value: "apiVersion: sluice/v1\nkind: Nonsense\n")
        waitFor(15, "the bad policy refused by both") {
            [a, b].allSatisfy { r in r.auditRecords().contains { $0["event"] as? String == "policy.reload" && $0["decision"] as? String == "deny" } }
        }
        XCTAssert(FileManager.default.fileExists(atPath: a.socket("beta")), "the old policies stay in force")

        // A stopped router revokes its lease: the other sees it leave.
        XCTAssertEqual(b.stop(), 0, b.stderrText())
        waitFor(10, "host-1 left the directory") {
            (cluster(a)["directory"] as? [String: Any])?["routers"] as? [String] == ["host-0"]
        }
        XCTAssertEqual(a.stop(), 0, a.stderrText())
    }

    func testWhenARoutersLeaseExpiresQPsConnectedToItFailWithQPFatal() throws {
        let (_, _, router) = try etcdLab()
        let a = try router(0), b = try router(1)
        waitFor(20, "linked through etcd") { linked(a, "host-1") && linked(b, "host-0") }
        let ea = try VerbsEndpoint(socket: a.socket("alpha")), eb = try VerbsEndpoint(socket: b.socket("alpha"))
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        let qa = try ea.createQP(), qb = try eb.createQP(), local = try ea.createQP(), local2 = try ea.createQP()
        try ea.connect(qa, to: qb, of: eb, access: rw)
        try eb.connect(qb, to: qa, of: ea, access: rw)
        try ea.connect(local, to: local2, of: ea, access: rw)
        try ea.connect(local2, to: local, of: ea, access: rw)
        // b freezes (its etcd thread too): its lease lapses after its TTL.
        kill(b.process.processIdentifier, SIGSTOP)
        defer { kill(b.process.processIdentifier, SIGCONT) }
        var p = pollfd(fd: ea.context.pointee.async_fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 15_000), 1, "an async event within the lease's TTL")
        var ev = ibv_async_event()
        XCTAssertEqual(ibv_get_async_event(ea.context, &ev), 0)
        XCTAssertEqual(ev.event_type, IBV_EVENT_QP_FATAL)
        XCTAssertEqual(ev.element.qp, qa)
        ibv_ack_async_event(&ev)
        XCTAssertEqual(ea.state(qa), IBV_QPS_ERR)
        XCTAssertEqual(ea.state(local), IBV_QPS_RTS, "a QP connected on this host is untouched")
        XCTAssert(a.auditRecords().contains { ($0["rule"] as? String) == "fabric.directory" })
    }
}
