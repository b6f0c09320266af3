import Foundation
import XCTest

/// `--backend software|verbs|auto`: the router says which backend it runs
/// on and why, and refuses to start on a device it cannot use.
final class BackendSelectionTests: XCTestCase {
    /// True when the kernel lists an RDMA device: then `auto` would rightly
    /// choose it, and the tests about a machine without one do not apply.
    private var hostHasRDMADevice: Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/class/infiniband")) ?? []).isEmpty == false
    }

    func testAutoPicksTheSoftwareFabricWithoutADeviceAndSaysWhy() throws {
        if hostHasRDMADevice { throw XCTSkip("this host has an RDMA device: auto would use it") }
        // No --backend: auto is the default.
        let router = try RouterProcess(tenants: ["alpha"])
        let start = router.auditRecords().first { ($0["event"] as? String) == "router.start" }
        let fields = start?["fields"] as? [String: Any] ?? start ?? [:]
        XCTAssertEqual(fields["backend"] as? String, "software", "\(start ?? [:])")
        let reason = fields["backendReason"] as? String ?? ""
        XCTAssertTrue(reason.hasPrefix("auto: no RDMA device"), reason)
        let status = try router.status()["backend"] as? [String: Any]
        XCTAssertEqual(status?["name"] as? String, "software")
        XCTAssertEqual(status?["reason"] as? String, reason)
        XCTAssertEqual(router.stop(), 0)
        let err = router.stderrText()
        XCTAssertTrue(err.contains("sluice-router: backend: software fabric (auto: no RDMA device"), err)
    }

    func testVerbsWithoutThatDeviceRefusesToStart() throws {
        let (status, err) = try runRouter(["--backend", "verbs", "--device", "nosuch0"])
        XCTAssertEqual(status, 1, err)
        XCTAssertTrue(err.contains("cannot use the verbs backend: no RDMA device"), err)
        XCTAssertFalse(err.contains("serving"), err)
    }

    /// `auto` with a `--device` that is not there still starts (on the
    /// software fabric), but says the named device was the reason.
    func testAutoWithAMissingDeviceSaysSo() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")], extraArguments: ["--device", "nosuch0"])
        let status = try router.status()["backend"] as? [String: Any]
        XCTAssertEqual(status?["name"] as? String, "software")
        let reason = status?["reason"] as? String ?? ""
        XCTAssertTrue(reason.hasPrefix("auto: --device nosuch0 is not usable"), reason)
        XCTAssertEqual(router.stop(), 0)
        XCTAssertTrue(router.stderrText().contains("backend: software fabric (auto: --device nosuch0 is not usable"), router.stderrText())
    }

    func testSoftwareTakesNoDevice() throws {
        let (status, err) = try runRouter(["--backend", "software", "--device", "mlx5_0"])
        XCTAssertEqual(status, 1, err)
        XCTAssertTrue(err.contains("--device mlx5_0 needs --backend verbs or auto"), err)
    }

    func testHelpDescribesTheBackends() throws {
        let (status, out) = try runRouter(["--help"], policies: false)
        XCTAssertEqual(status, 0, out)
        XCTAssertTrue(out.contains("--backend <software|verbs|auto>"), out)
        XCTAssertTrue(out.contains("--device <name>"), out)
    }

    /// Runs sluice-router to completion (it must exit by itself) and
    /// returns its status and its output.
    private func runRouter(_ args: [String], policies: Bool = true) throws -> (Int32, String) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-backend-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: base) }
        let dir = base.appendingPathComponent("policies").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try RouterProcess.permissive("alpha").write(toFile: dir + "/alpha.yaml", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.router)
        p.arguments = (policies ? ["--runtime-dir", base.appendingPathComponent("run").path, "--policies", dir,
                                   "--audit-log", base.appendingPathComponent("audit.log").path] : []) + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        // Its output is a few lines (--help a few KB): it fits the pipe.
        let deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
