import CCap
import CSeccomp
import Foundation
import XCTest
@testable import SluiceSandbox

/// A SandboxSystem that records every call and fails the ones asked to.
/// It touches nothing in the test process (no filter, no capability change).
final class FakeSystem {
    var calls: [String] = []
    /// Call name → errno to fail it with.
    var failing: [String: Int32] = [:]
    var initFails = false
    var capabilitiesReadFails = false
    var held = CapabilitySets(effective: ~0 >> 23, permitted: ~0 >> 23, inheritable: 0) // caps 0...40, as root
    var attrs: [String: UInt32] = [:]
    var defaultAction: UInt32?
    var rulesAdded = 0

    private func record(_ name: String) -> Int32 {
        calls.append(name)
        return failing[name] ?? 0
    }

    var system: SandboxSystem {
        SandboxSystem(
            seccompInit: { [unowned self] action in
                calls.append("seccomp_init")
                defaultAction = action
                return initFails ? nil : UnsafeMutableRawPointer(bitPattern: 0x1000)
            },
            seccompRelease: { [unowned self] _ in calls.append("seccomp_release") },
            seccompAttrSet: { [unowned self] _, attr, value in
                let name = attr == SCMP_FLTATR_CTL_TSYNC ? "TSYNC" : attr == SCMP_FLTATR_ACT_BADARCH ? "BADARCH" : "attr\(attr.rawValue)"
                attrs[name] = value
                return record("seccomp_attr_set(\(name))")
            },
            seccompRuleAdd: { [unowned self] _, _, _, _ in
                rulesAdded += 1
                return failing["seccomp_rule_add_array"] ?? 0
            },
            seccompLoad: { [unowned self] _ in record("seccomp_load") },
            resolveSyscallName: { SandboxSystem.live.resolveSyscallName($0) },
            resolveSyscallNumber: { SandboxSystem.live.resolveSyscallNumber($0) },
            prctl: { [unowned self] option, value in
                record(option == PR_SET_NO_NEW_PRIVS ? "prctl(PR_SET_NO_NEW_PRIVS)" : "prctl(\(option), \(value))")
            },
            capabilities: { [unowned self] in
                calls.append("cap_get_proc")
                return capabilitiesReadFails ? nil : held
            },
            setCapabilities: { [unowned self] sets in
                let e = record("cap_set_proc(\(String(sets.permitted, radix: 16)))")
                if e == 0 { held = sets }
                return e
            },
            capabilityInBoundingSet: { _ in 1 },
            dropBoundingCapability: { [unowned self] cap in record("cap_drop_bound(\(cap))") },
            resetAmbientCapabilities: { [unowned self] in record("cap_reset_ambient") },
            capabilityCount: { 41 },
            capabilityNumber: { SandboxSystem.live.capabilityNumber($0) },
            capabilityName: { SandboxSystem.live.capabilityName($0) },
            lookUpUser: { name in name == "sluice" ? (uid_t(999), gid_t(998)) : nil },
            setGroups: { [unowned self] g in record("setgroups(\(g))") },
            setGID: { [unowned self] g in record("setgid(\(g))") },
            setUID: { [unowned self] u in
                let e = record("setuid(\(u))")
                if e == 0 { held = CapabilitySets() } // as the kernel does without keepcaps
                return e
            },
            installSignalHandler: { [unowned self] sig, _, _ in record("sigaction(\(sig))") },
            restoreSignal: { [unowned self] sig in record("restore(\(sig))") },
            defaultSignalAction: { [unowned self] sig in record("SIG_DFL(\(sig))") },
            signalThread: { [unowned self] tid, sig in record("tgkill(\(tid), \(sig))") },
            processID: { 4242 },
            threadID: { 4242 },
            threadIDs: { [4242] },
            threadStatus: { _ in nil },
            processStatus: { nil },
            sleepMicroseconds: { _ in }
        )
    }

    /// Calls that change the process, in order (reads left out).
    var changes: [String] {
        calls.filter { !["cap_get_proc", "seccomp_release"].contains($0) && !$0.hasPrefix("cap_drop_bound") }
    }
}

/// Every libseccomp, libcap and credential failure makes `apply` throw a
/// SandboxError naming the step and the call, before anything later runs:
/// the router then refuses to serve. Forced through the wrapper, without root.
final class SandboxFailureTests: XCTestCase {
    let policy = try! SeccompPolicy.embedded()

    func apply(_ fake: FakeSystem, mode: SandboxMode = .enforce, user: String? = nil, keep: [String] = [],
               features: Set<String> = []) throws -> SandboxReport {
        var o = Sandbox.Options(mode: mode, keepCapabilities: keep, user: user, features: features)
        o.programName = "sluice-router"
        return try Sandbox.apply(o, policy: policy, system: fake.system)
    }

    func assertFails(_ fake: FakeSystem, user: String? = nil, keep: [String] = [], features: Set<String> = [],
                     _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try apply(fake, user: user, keep: keep, features: features), file: file, line: line) { error in
            XCTAssertEqual("\(error)", expected, file: file, line: line)
        }
    }

    func testTheStepsRunInOrderWithTSYNCAndTrapInEnforceMode() throws {
        let fake = FakeSystem()
        let report = try apply(fake, user: "sluice")
        XCTAssertEqual(fake.changes, [
            "sigaction(\(SIGSYS))",
        ] + [SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV].map { "SIG_DFL(\($0))" } + [
            "prctl(PR_SET_NO_NEW_PRIVS)",
            "cap_reset_ambient",
            "cap_set_proc(c0)", // CAP_SETGID and CAP_SETUID, until the user switch is done
            "setgroups([])", "setgid(998)", "setuid(999)",
            "cap_set_proc(0)",
            "seccomp_init",
            "seccomp_attr_set(BADARCH)", "seccomp_attr_set(TSYNC)", "seccomp_attr_set(attr9)",
            "seccomp_load",
        ])
        XCTAssertEqual(fake.attrs["TSYNC"], 1, "the filter is synchronized to every thread")
        XCTAssertEqual(fake.defaultAction, SCMP_ACT_TRAP)
        XCTAssertEqual(fake.attrs["BADARCH"], SCMP_ACT_TRAP, "other ABIs get the same action")
        XCTAssertEqual(fake.calls.filter { $0.hasPrefix("cap_drop_bound") }.count, 41, "the whole bounding set goes")
        XCTAssertEqual(report.rulesLoaded, fake.rulesAdded)
        // Syscalls whose every rule belongs to a feature that is off
        // (connect, setsockopt: multiHost; sendto, poll: the nested verbs
        // backend's) are not allowed.
        XCTAssertEqual(report.syscallsAllowed, policy.syscalls.filter {
            $0.action == .allow && ($0.rules.isEmpty || $0.rules.contains { $0.feature == nil })
        }.count)
        XCTAssertEqual(report.user, "sluice")
    }

    func testLogModeLogsInsteadOfTrappingAndInstallsNoReport() throws {
        let fake = FakeSystem()
        _ = try apply(fake, mode: .log)
        XCTAssertEqual(fake.defaultAction, SCMP_ACT_LOG)
        XCTAssertFalse(fake.calls.contains("sigaction(\(SIGSYS))"))
        XCTAssertFalse(fake.calls.contains { $0.hasPrefix("SIG_DFL") }, "log mode lets Swift's backtracer run")
        XCTAssert(fake.calls.contains("seccomp_load"))
    }

    func testOffModeChangesNothing() throws {
        let fake = FakeSystem()
        let report = try apply(fake, mode: .off)
        XCTAssertEqual(fake.changes, [])
        XCTAssertEqual(report.notes, ["--sandbox off: no seccomp filter and no capabilities dropped; for development only"])
    }

    func testNoNewPrivsFailureStopsEverything() {
        let fake = FakeSystem()
        fake.failing["prctl(PR_SET_NO_NEW_PRIVS)"] = EINVAL
        assertFails(fake, "cannot sandbox (no_new_privs): prctl(PR_SET_NO_NEW_PRIVS): Invalid argument")
        XCTAssertFalse(fake.calls.contains { $0.hasPrefix("cap_set_proc") || $0 == "seccomp_load" })
    }

    func testCapabilityFailuresStopBeforeTheFilter() {
        for (call, expected) in [
            ("cap_reset_ambient", "cannot sandbox (capabilities): cap_reset_ambient: Operation not permitted"),
            ("cap_drop_bound(0)", "cannot sandbox (capabilities): cap_drop_bound(cap_chown): Operation not permitted"),
            ("cap_set_proc(0)", "cannot sandbox (capabilities): cap_set_proc: Operation not permitted"),
        ] {
            let fake = FakeSystem()
            fake.failing[call] = EPERM
            assertFails(fake, expected)
            XCTAssertFalse(fake.calls.contains("seccomp_init"), call)
        }
        let unreadable = FakeSystem()
        unreadable.capabilitiesReadFails = true
        assertFails(unreadable, "cannot sandbox (capabilities): cap_get_proc failed: cannot read this thread's capabilities")
    }

    func testKeepingACapabilityTheRouterLacksOrDoesNotExistIsAnError() {
        let fake = FakeSystem()
        fake.held = CapabilitySets()
        assertFails(fake, keep: ["cap_net_raw"], "cannot sandbox (capabilities): cannot keep cap_net_raw: the router does not hold it")
        assertFails(FakeSystem(), keep: ["cap_flying"], "cannot sandbox (capabilities): unknown capability \"cap_flying\" (libcap names, such as cap_net_raw)")
    }

    func testAKeptCapabilitySurvivesTheUserSwitch() throws {
        let fake = FakeSystem()
        _ = try apply(fake, user: "sluice", keep: ["cap_net_raw"])
        XCTAssertEqual(fake.changes.filter { $0.hasPrefix("prctl(") || $0.hasPrefix("cap_set_proc") || $0.hasPrefix("setuid") }, [
            "prctl(PR_SET_NO_NEW_PRIVS)",
            "cap_set_proc(20c0)",           // net_raw (13), setuid, setgid
            "prctl(\(PR_SET_KEEPCAPS), 1)",
            "setuid(999)",
            "cap_set_proc(2000)",           // net_raw only
            "prctl(\(PR_SET_KEEPCAPS), 0)",
        ])
    }

    func testUserFailures() {
        assertFails(FakeSystem(), user: "nosuchuser", "cannot sandbox (switching user): no user named \"nosuchuser\"")
        for (call, expected) in [
            ("setgroups([])", "cannot sandbox (switching user): setgroups([]): Operation not permitted"),
            ("setgid(998)", "cannot sandbox (switching user): setgid(998): Operation not permitted"),
            ("setuid(999)", "cannot sandbox (switching user): setuid(999): Operation not permitted"),
        ] {
            let fake = FakeSystem()
            fake.failing[call] = EPERM
            assertFails(fake, user: "sluice", expected)
            XCTAssertFalse(fake.calls.contains("seccomp_load"), call)
        }
    }

    func testLibseccompFailures() {
        let noInit = FakeSystem()
        noInit.initFails = true
        assertFails(noInit, "cannot sandbox (the seccomp filter): seccomp_init failed (does the kernel support the default action trap?)")
        for (call, errno, expected) in [
            ("seccomp_attr_set(TSYNC)", EOPNOTSUPP, "cannot sandbox (the seccomp filter): seccomp_attr_set(SCMP_FLTATR_CTL_TSYNC): Operation not supported"),
            ("seccomp_rule_add_array", EINVAL, "cannot sandbox (the seccomp filter): seccomp_rule_add_array(epoll_wait): Invalid argument"),
            ("seccomp_load", ESRCH, "cannot sandbox (the seccomp filter): seccomp_load: No such process"),
        ] {
            let fake = FakeSystem()
            fake.failing[call] = errno
            assertFails(fake, expected)
            XCTAssert(fake.calls.contains("seccomp_release"), "the context is released after \(call) fails")
        }
    }

    func testTheViolationReportMustBeInstalled() {
        let fake = FakeSystem()
        fake.failing["sigaction(\(SIGSYS))"] = EINVAL
        assertFails(fake, "cannot sandbox (the violation report): sigaction(SIGSYS): Invalid argument")
        XCTAssertFalse(fake.calls.contains("prctl(PR_SET_NO_NEW_PRIVS)"))
    }

    func testAnUnknownFeatureChangesNothing() {
        let fake = FakeSystem()
        assertFails(fake, features: ["warpDrive"], "cannot sandbox (the seccomp data file): router.seccomp.json: features: unknown feature \"warpDrive\"; the file declares multiHost, nestedVerbs, verbsDevice")
        XCTAssertEqual(fake.changes, [])
    }

    func testWithoutCAPSETPCAPTheBoundingSetIsLeftAndSaidSo() throws {
        let fake = FakeSystem()
        fake.held = CapabilitySets()
        let report = try apply(fake)
        XCTAssertFalse(fake.calls.contains { $0.hasPrefix("cap_drop_bound") })
        XCTAssertEqual(report.notes.count, 1)
        XCTAssert(report.notes[0].hasPrefix("the bounding set is left as it is"))
    }

    /// The report's name table is filled from libseccomp when the handler is installed.
    func testTheReportNamesSyscallsFromLibseccomp() throws {
        let fake = FakeSystem()
        try ViolationReport.install(program: "t", extraFD: nil, system: fake.system)
        XCTAssertEqual(fake.calls, ["sigaction(\(SIGSYS))"])
        XCTAssertEqual(ViolationReport.reportedName(101), "ptrace")
        XCTAssertEqual(ViolationReport.reportedName(59), "execve")
        XCTAssertEqual(ViolationReport.reportedName(435), "clone3")
        XCTAssertNil(ViolationReport.reportedName(511))
    }
}
