import Foundation
import XCTest
import SluiceRouter
import SluiceWire

/// The real router confines itself after start-up (SluiceSandbox): every
/// other integration test runs against a router under `--sandbox enforce`,
/// the default, which proves the allowlist covers real work. These check what
/// the kernel says about it, and that it refuses to serve unconfined.
final class SandboxTests: XCTestCase {
    func testAnEnforcedRouterShowsTheFilterNoNewPrivsAndNoCapabilitiesOnEveryThread() throws {
        let router = try RouterProcess()
        let pid = router.process.processIdentifier
        // The control socket exists before the sandbox is applied; an answer
        // comes from the event loop, which runs only after it.
        let sandbox = try XCTUnwrap(try router.status()["sandbox"] as? [String: Any])
        XCTAssertEqual(sandbox["mode"] as? String, "enforce")
        XCTAssertEqual(sandbox["seccomp"] as? Int, 2)
        XCTAssertEqual(sandbox["noNewPrivs"] as? Int, 1)
        XCTAssertEqual(sandbox["capEff"] as? String, "0000000000000000")
        XCTAssertEqual(sandbox["pid"] as? Int, Int(pid))
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")
        XCTAssertGreaterThanOrEqual(tasks.count, 2, "the event loop and the audit writer")
        for tid in tasks {
            let text = try String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8)
            func field(_ name: String) -> String? {
                text.split(separator: "\n").first { $0.hasPrefix(name + ":") }?.split(separator: "\t").last.map(String.init)
            }
            XCTAssertEqual(field("Seccomp"), "2", "thread \(tid)")
            XCTAssertEqual(field("NoNewPrivs"), "1", "thread \(tid)")
            XCTAssertEqual(field("CapEff"), "0000000000000000", "thread \(tid)")
            XCTAssertEqual(field("CapPrm"), "0000000000000000", "thread \(tid)")
            XCTAssertEqual(field("CapAmb"), "0000000000000000", "thread \(tid)")
        }
        XCTAssertEqual(router.stop(), 0)
        XCTAssert(router.stderrText().contains("sluice-router: sandbox enforce: "), router.stderrText())
    }

    func testARouterThatCannotBeSandboxedRefusesToServe() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-sbx-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/policies", withIntermediateDirectories: true)
        try """
            apiVersion: sluice/v1
            kind: TenantPolicy
            metadata:
              name: alpha
            spec:
              identity:
                uids: [\(getuid())]

            """.write(toFile: dir + "/policies/alpha.yaml", atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.router)
        p.arguments = ["--runtime-dir", dir + "/run", "--policies", dir + "/policies", "--user", "no-such-user-here"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 1)
        XCTAssertEqual(text, "sluice-router: refusing to serve: cannot sandbox (switching user): no user named \"no-such-user-here\"\n")
    }

    func testPrintSeccompShowsTheFilterAndNeedsNoPolicies() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.router)
        p.arguments = ["--print-seccomp"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssert(lines.first?.hasPrefix("seccomp filter from router.seccomp.json (") == true, text)
        XCTAssertEqual(lines[1], "mode: enforce; any other syscall: trap: report the call on stderr, then die by SIGSYS")
        XCTAssert(lines.contains { $0.hasPrefix("  socket ") }, text)
        XCTAssert(lines.contains { $0.contains("- arg0 (domain) == AF_UNIX (1)") }, text)
        XCTAssert(lines.contains { $0.hasPrefix("  execve ") }, text)
    }
}

extension SandboxTests {
    /// A test-only operator request (compiled into debug builds only) makes
    /// the router call mount(2): the enforced filter must kill it by SIGSYS
    /// and the report must name the call.
    func testAForbiddenSyscallKillsTheRouterAndIsNamed() throws {
        let router = try RouterProcess()
        _ = try router.status() // the event loop runs: the sandbox is applied
        let op = try RawSession(socket: router.runtimeDir + "/control.sock")
        XCTAssertNil(op.request(sluice_status_req(), opcode: 0x7e57), "no answer: the router died")
        router.process.waitUntilExit()
        XCTAssertEqual(router.process.terminationReason, .uncaughtSignal)
        XCTAssertEqual(router.process.terminationStatus, SIGSYS)
        XCTAssertTrue(router.stderrText().contains("seccomp violation: syscall mount"), router.stderrText())
    }
}
