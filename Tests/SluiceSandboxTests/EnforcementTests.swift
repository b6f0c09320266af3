import CCap
import Foundation
import XCTest
@testable import SluiceSandbox

/// The modes as a process experiences them: a violation in `enforce` kills
/// by SIGSYS and is named; `log` lets it run; `off` only warns. And what the
/// kernel reports for an enforced process in /proc/<pid>/status.
final class EnforcementTests: XCTestCase {
    func testAForbiddenCallIsNamedThenKillsTheProcessBySIGSYS() throws {
        let reportFile = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-violation-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: reportFile) }
        let run = try ChildRun.run("violation", environment: ["SLUICE_SANDBOX_REPORT_FILE": reportFile])
        XCTAssertEqual(run.killedBySignal, SIGSYS, run.summary)
        XCTAssert(run.lines.contains(["calling ptrace"]), run.summary)
        XCTAssertNil(run.value("survived"), "the forbidden call returned: \(run.summary)")
        let report = "sluice-sandbox-test: seccomp violation: syscall ptrace (101)\n"
        XCTAssert(run.stderr.hasSuffix(report) || run.stderr.contains(report), "stderr: \(run.stderr)")
        XCTAssertEqual(try String(contentsOfFile: reportFile, encoding: .utf8), report, "the report fd gets the same line")
    }

    func testAViolationInAnotherThreadKillsTheWholeProcess() throws {
        let run = try ChildRun.run("violation-in-thread")
        XCTAssertEqual(run.killedBySignal, SIGSYS, run.summary)
        XCTAssertNil(run.value("survived"), run.summary)
        XCTAssert(run.stderr.contains("sluice-sandbox-test: seccomp violation: syscall ptrace (101)\n"), run.stderr)
    }

    /// Swift's backtracer cannot spawn its helper inside the sandbox, so a
    /// runtime trap must end by its own signal with the runtime's message,
    /// not as a confusing SIGSYS.
    func testASwiftRuntimeTrapInsideTheSandboxKillsByItsOwnSignal() throws {
        let run = try ChildRun.run("crash", environment: ["SWIFT_BACKTRACE": "enable=yes"])
        XCTAssert(run.lines.contains(["trapping"]), run.summary)
        XCTAssertNil(run.value("unreachable"))
        XCTAssertEqual(run.killedBySignal, SIGILL, run.summary)
        XCTAssert(run.stderr.contains("Fatal error: Index out of range"), run.stderr)
    }

    func testLogModeLetsAForbiddenCallRunAndStillDropsCapabilities() throws {
        let run = try ChildRun.run("log")
        XCTAssertEqual(run.exitStatus, 0, run.summary)
        let ptrace = try XCTUnwrap(run.values("ptrace").first, run.summary)
        XCTAssertEqual(ptrace[0], "-1")
        XCTAssertNotEqual(ptrace[1], String(refusalErrno))
        XCTAssertNotEqual(ptrace[1], String(ENOSYS), "ptrace ran and failed on its own arguments")
        XCTAssertEqual(run.values("status").first, ["2", "1", "0000000000000000"], "Seccomp 2, NoNewPrivs 1, CapEff 0")
    }

    func testOffModeWarnsAndChangesNothing() throws {
        let before = try ProcessSandboxStatus.read()
        let run = try ChildRun.run("off")
        XCTAssertEqual(run.exitStatus, 0, run.summary)
        XCTAssert(run.stderr.contains("sluice-sandbox-test: warning: --sandbox off: no seccomp filter and no capabilities dropped; for development only\n"), run.stderr)
        XCTAssertEqual(run.values("status").first, [String(before.seccomp), before.noNewPrivileges ? "1" : "0"],
                       "the child is as confined as the test runner, no more")
    }

    func testAnEnforcedProcessShowsTheFilterNoNewPrivsAndNoCapabilities() throws {
        let before = try ProcessSandboxStatus.read()
        var seen: ProcessSandboxStatus?
        let run = try ChildRun.run("wait", waitForReady: true) { pid in
            seen = try ProcessSandboxStatus.read(pid: pid)
        }
        XCTAssertEqual(run.exitStatus, 0, run.summary)
        let st = try XCTUnwrap(seen, run.summary)
        XCTAssertEqual(st.seccomp, 2)
        if let filters = before.seccompFilters {
            XCTAssertEqual(st.seccompFilters, filters + 1, "one filter more than the test runner has")
        }
        XCTAssertTrue(st.noNewPrivileges)
        XCTAssertEqual(st.capEff, 0)
        XCTAssertEqual(st.capPrm, 0)
        XCTAssertEqual(st.capInh, 0)
        XCTAssertEqual(st.capAmb, 0)
        if before.capEff & (1 << UInt64(CAP_SETPCAP)) != 0 {
            XCTAssertEqual(st.capBnd, 0, "with CAP_SETPCAP the bounding set is emptied too")
        } else {
            XCTAssert(run.values("note").contains { $0[0].hasPrefix("the bounding set is left as it is") }, run.summary)
        }
        XCTAssert(run.value("applied")?.hasPrefix("sandbox enforce: ") == true, run.summary)
    }

    func testSwitchingUserDropsSupplementaryGroupsOnEveryThread() throws {
        guard getuid() == 0 else { throw XCTSkip("switching user needs root") }
        guard let nobody = getpwnam("nobody")?.pointee else { throw XCTSkip("no user nobody") }
        var statusText = ""
        var tasks: [ProcessSandboxStatus] = []
        let run = try ChildRun.run("wait", environment: ["SLUICE_SANDBOX_USER": "nobody"], waitForReady: true) { pid in
            statusText = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            for tid in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
                tasks.append(try ProcessSandboxStatus(statusText: String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8)))
            }
        }
        XCTAssertEqual(run.exitStatus, 0, run.summary)
        let st = try ProcessSandboxStatus(statusText: statusText)
        XCTAssertEqual(st.uids, Array(repeating: nobody.pw_uid, count: 4))
        XCTAssertEqual(st.gids, Array(repeating: nobody.pw_gid, count: 4))
        let groups = statusText.split(separator: "\n").first { $0.hasPrefix("Groups:") }
        XCTAssertEqual(groups?.dropFirst("Groups:".count).trimmingCharacters(in: .whitespaces), "", "no supplementary groups")
        XCTAssertFalse(tasks.isEmpty)
        for t in tasks {
            XCTAssertEqual(t.uids, Array(repeating: nobody.pw_uid, count: 4), "thread \(t.name)")
            XCTAssertEqual(t.capPrm, 0, "thread \(t.name)")
            XCTAssertEqual(t.seccomp, 2, "thread \(t.name)")
        }
    }

    /// Capabilities are per thread: a thread started before the sandbox (the
    /// audit writer) must lose them too, and get the filter (TSYNC).
    func testAThreadStartedBeforeTheSandboxIsConfinedToo() throws {
        guard try ProcessSandboxStatus.read().capPrm != 0 else { throw XCTSkip("no capabilities to drop") }
        var tasks: [ProcessSandboxStatus] = []
        let run = try ChildRun.run("thread-started-before", waitForReady: true) { pid in
            for tid in try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") {
                tasks.append(try ProcessSandboxStatus(statusText: String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8)))
            }
        }
        XCTAssertEqual(run.exitStatus, 0, run.summary)
        XCTAssert(tasks.contains { $0.name == "idle-before" }, "\(tasks.map(\.name))")
        for t in tasks {
            XCTAssertEqual(t.seccomp, 2, "thread \(t.name)")
            XCTAssertTrue(t.noNewPrivileges, "thread \(t.name)")
            XCTAssertEqual(t.capEff | t.capPrm | t.capInh | t.capAmb, 0, "thread \(t.name)")
        }
    }

    func testAThreadThatCannotBeReachedMakesApplyingFail() throws {
        guard try ProcessSandboxStatus.read().capPrm != 0 else { throw XCTSkip("no capabilities to drop") }
        let run = try ChildRun.run("thread-blocking-the-drop-signal")
        XCTAssertEqual(run.exitStatus, 3, run.summary)
        let error = try XCTUnwrap(run.value("error"), run.summary)
        XCTAssert(error.hasPrefix("cannot sandbox (capabilities): thread "), error)
        XCTAssert(error.contains("(blocks-sigprof) still holds cap_chown,"), error)
        XCTAssert(error.hasSuffix("start that thread after the sandbox is applied, or pass --user"), error)
    }
}
