import Foundation
import XCTest
import SluiceVerbs
import SluiceWire

/// The real router's audit log: it verifies clean after real work, holds the
/// denials that happened, and survives SIGKILL with at most a torn tail.
final class AuditIntegrationTests: XCTestCase {
    var keyFile: String!

    override func setUpWithError() throws {
        keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-key-\(getpid())-\(UUID().uuidString.prefix(6))").path
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        FileManager.default.createFile(atPath: keyFile, contents: Data(key), attributes: [.posixPermissions: 0o600])
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: keyFile)
    }

    func startRouter() throws -> RouterProcess {
        try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha"), "beta": RouterProcess.permissive("beta")],
                          extraArguments: ["--audit-key", keyFile, "--audit-fsync-ms", "5"])
    }

    func verify(_ router: RouterProcess, _ extra: [String] = []) throws -> (status: Int32, stdout: String, stderr: String) {
        let sluice = try XCTUnwrap(Paths.sluiceCLI, "the sluice binary was not built")
        return try runTool(sluice, ["audit", "verify", router.auditLog, "--checkpoints", router.auditLog + ".checkpoints",
                                    "--key-file", keyFile] + extra)
    }

    func testTheLogOfARealRunVerifiesAndHoldsItsDenials() throws {
        let router = try startRouter()
        let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        do {
            let a = try VerbsEndpoint(socket: router.socket("alpha"))
            let b = try VerbsEndpoint(socket: router.socket("alpha"))
            let c = try VerbsEndpoint(socket: router.socket("beta"))
            let qa = try a.createQP(), qb = try b.createQP(), qc = try c.createQP()
            try a.connect(qa, to: qb, of: b, access: rw)
            try b.connect(qb, to: qa, of: a, access: rw)
            XCTAssertThrowsError(try a.connect(try a.createQP(), to: qc, of: c, access: rw), "alpha may not reach beta")
            let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
            let sm = try a.register(src.base, 4096, rw), dm = try b.register(dst.base, 4096, rw)
            try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey))
            XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
            try a.postSend(qa, id: 2, IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey &+ 1))
            XCTAssertEqual(a.poll(1).first?.status, IBV_WC_REM_ACCESS_ERR)
        }
        XCTAssertEqual(router.stop(), 0)

        let v = try verify(router)
        XCTAssertEqual(v.status, 0, "verify: \(v.stdout) \(v.stderr)")
        XCTAssertTrue(v.stdout.contains("OK"), v.stdout)

        let sluice = try XCTUnwrap(Paths.sluiceCLI)
        let s = try runTool(sluice, ["audit", "search", router.auditLog, "--decision", "deny", "--json"])
        XCTAssertEqual(s.status, 0, s.stderr)
        let denials = s.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertTrue(denials.contains { ($0["rule"] as? String) == "peers" && ($0["verb"] as? String) == "modify_qp" },
                      "the refused connection is in the log: \(denials)")
        XCTAssertTrue(denials.contains { ($0["event"] as? String) == "datapath" && (($0["reason"] as? String) ?? "").contains("rkey") },
                      "the bad rkey is in the log: \(denials)")
        let all = router.auditRecords()
        XCTAssertEqual(all.first?["event"] as? String, "audit.open")
        XCTAssertTrue(all.contains { ($0["event"] as? String) == "summary" && ($0["tenant"] as? String) == "alpha" },
                      "data-path allows are summarized")
        XCTAssertEqual(all.last?["event"] as? String, "audit.close")
        XCTAssertFalse(all.contains { ($0["event"] as? String) == "audit.loss" }, "nothing was lost")
    }

    func testAfterSIGKILLUnderLoadTheLogVerifiesUpToItsLastCompleteRecord() throws {
        guard let tool = Paths.tool("ibv_rc_pingpong") else { throw XCTSkip("ibv_rc_pingpong is not installed") }
        let router = try startRouter()
        // Load: a ping-pong pair, and a tenant hammering the control path
        // with refused requests, so records are being written when it dies.
        let port = String(45000 + Int(getpid() % 5000))
        let (server, client) = try startPingPongPair(tool, ["-d", "sluice0", "-g", "0", "-s", "64", "-n", "100000000", "-p", port],
                                                     socket: router.socket("alpha"))
        let raw = try RawSession(socket: router.socket("beta"))
        _ = try raw.open()
        // Keep refusals coming until a good part of them reached the file,
        // then kill in the middle of the flood.
        let deadline = Date().addingTimeInterval(30)
        var onDisk = 0
        repeat {
            for _ in 0..<200 { _ = raw.handleOp(SLUICE_OP_DEALLOC_PD.rawValue, 999) }
            onDisk = (try? String(contentsOfFile: router.auditLog, encoding: .utf8))?.split(separator: "\n").count ?? 0
        } while onDisk < 1000 && Date() < deadline
        XCTAssertGreaterThanOrEqual(onDisk, 1000, "records reach the file while the router is loaded")
        for _ in 0..<50 { _ = raw.handleOp(SLUICE_OP_DEALLOC_PD.rawValue, 999) }
        kill(router.process.processIdentifier, SIGKILL)
        router.process.waitUntilExit()
        kill(server.process.processIdentifier, SIGKILL)
        kill(client.process.processIdentifier, SIGKILL)
        server.wait()
        client.wait()

        let v = try verify(router, ["--json"])
        let result = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(v.stdout.utf8)) as? [String: Any], v.stdout + v.stderr)
        let problems = result["problems"] as? [[String: Any]] ?? []
        if problems.isEmpty {
            XCTAssertEqual(v.status, 0, v.stdout)
        } else {
            // Only a torn last line is acceptable after a crash, and it is reported.
            XCTAssertEqual(problems.count, 1, "\(problems)")
            XCTAssertEqual(v.status, 1)
            XCTAssertTrue("\(problems[0])".lowercased().contains("torn"), "\(problems[0])")
        }
        XCTAssertGreaterThanOrEqual(router.auditRecords().count, onDisk, "nothing that was on disk is lost")
    }
}
