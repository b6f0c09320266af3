import CSeccomp
import Foundation
import XCTest
@testable import SluiceSandbox

/// The data file's format: strict parsing with errors that name the place,
/// compilation to libseccomp rules, and the `--print-seccomp` rendering.
final class SeccompPolicyTests: XCTestCase {
    func testTheEmbeddedFileIsTheCheckedInFile() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/SluiceSandbox/router.seccomp.json").path
        XCTAssertEqual(PackageResources.router_seccomp_json, Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    func testTheRouterFileParsesAndEverySyscallResolves() throws {
        let policy = try SeccompPolicy.embedded()
        XCTAssertGreaterThan(policy.syscalls.count, 40)
        for name in policy.syscalls.map(\.name) + policy.forbidden.map(\.name) {
            XCTAssertNotNil(SandboxSystem.live.resolveSyscallName(name), name)
        }
        XCTAssertEqual(policy.syscall(named: "clone3")?.action, .errno(ENOSYS, name: "ENOSYS"))
        for name in ["execve", "ptrace", "mount", "setns", "bpf", "keyctl", "add_key", "request_key", "unshare",
                     "process_vm_readv", "process_vm_writev", "init_module", "kexec_load", "perf_event_open", "userfaultfd"] {
            XCTAssert(policy.forbidden.contains { $0.name == name }, "\(name) is forbidden explicitly")
        }
    }

    // MARK: compilation

    func testA32BitEqualityComparesTheLowBitsOnly() throws {
        let rules = try SeccompPolicy.embedded().compile(features: [], ownPID: 77).filter { $0.syscall == "socket" }
        XCTAssertEqual(rules, [CompiledRule(syscall: "socket", action: .allow, comparisons: [
            .init(index: 0, operation: SCMP_CMP_MASKED_EQ, datumA: 0xffff_ffff, datumB: UInt64(AF_UNIX)),
        ])])
    }

    func testSeveralValuesBecomeAlternativesAndFeaturesAddRules() throws {
        let policy = try SeccompPolicy.embedded()
        XCTAssertEqual(try policy.compile(features: [], ownPID: 1).filter { $0.syscall == "fcntl" }.count, 6)
        let inet = try policy.compile(features: ["multiHost"], ownPID: 1).filter { $0.syscall == "socket" }
        XCTAssertEqual(inet.map { $0.comparisons[0].datumB }, [UInt64(AF_UNIX), UInt64(AF_INET), UInt64(AF_INET6)])
    }

    func testCloneFlagsAreComparedOnAll64Bits() throws {
        let clone = try SeccompPolicy.embedded().compile(features: [], ownPID: 1).filter { $0.syscall == "clone" }
        XCTAssertEqual(clone.count, 1)
        XCTAssertEqual(clone[0].comparisons, [.init(index: 0, operation: SCMP_CMP_MASKED_EQ, datumA: 0x7e03_4000, datumB: 0x10000)])
    }

    func testSelfIsTheLoadingProcessPid() throws {
        let tgkill = try SeccompPolicy.embedded().compile(features: [], ownPID: 4242).filter { $0.syscall == "tgkill" }
        XCTAssertEqual(tgkill.first?.comparisons.first?.datumB, 4242)
    }

    // MARK: strictness

    private func parse(_ json: String) throws -> SeccompPolicy {
        try SeccompPolicy(json: Array(json.utf8), source: "test.json")
    }

    private func assertError(_ body: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        let json = """
            {"comment": "c", "format": "sluice-seccomp/1", "features": {"multiHost": "m"},
             "groups": [{"name": "g", "comment": "c", "syscalls": [\(body)]}], "forbidden": [{"name": "ptrace", "comment": "c"}]}
            """
        XCTAssertThrowsError(try parse(json), file: file, line: line) { error in
            XCTAssertEqual("\(error)", expected, file: file, line: line)
        }
    }

    func testMistakesAreNamedWithTheirPlace() {
        assertError(#"{"name": "read"}"#, "test.json: groups[0].syscalls[0]: missing \"comment\"")
        assertError(#"{"name": "read", "comment": "  "}"#, "test.json: groups[0].syscalls[0].comment: the comment is empty; say why")
        assertError(#"{"name": "read", "comment": "c", "colour": 1}"#,
                    "test.json: groups[0].syscalls[0].colour: unknown key; expected one of action, comment, name, rules")
        assertError(#"{"name": "read", "comment": "c"}, {"name": "read", "comment": "again"}"#,
                    "test.json: groups[0].syscalls[1].name: read is already listed at groups[0].syscalls[0]")
        assertError(#"{"name": "ptrace", "comment": "c"}"#,
                    "test.json: forbidden[0].name: ptrace is both forbidden and listed at groups[0].syscalls[0]")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "eq", "value": "AF_UNICORN", "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[0].value: unknown constant \"AF_UNICORN\"; add it to SeccompConstants with its header")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "ne", "value": 2, "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[0].op: \"ne\" on a 32-bit argument could be passed by setting the high bits the kernel ignores; use eq or maskedEq (or width 64 for a long or pointer)")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "equals", "value": 2, "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[0].op: unknown op \"equals\"; expected one of eq, maskedEq, ne, lt, le, gt, ge")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "when": "teleport", "args": [{"index": 0, "op": "eq", "value": 2, "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].when: unknown feature \"teleport\"; declare it under \"features\"")
        assertError(#"{"name": "socket", "comment": "c", "rules": []}"#,
                    "test.json: groups[0].syscalls[0].rules: an empty rule list would allow nothing; list the syscall under \"forbidden\" instead")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "eq", "value": true, "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[0].value: expected an integer")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "eq", "value": "0x100000000", "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[0].value: 0x100000000 does not fit a 32-bit argument")
        assertError(#"{"name": "socket", "comment": "c", "rules": [{"comment": "c", "args": [{"index": 0, "op": "eq", "value": 1, "comment": "c"}, {"index": 0, "op": "eq", "value": 2, "comment": "c"}]}]}"#,
                    "test.json: groups[0].syscalls[0].rules[0].args[1].index: argument 0 is already compared in this rule")
        assertError(#"{"name": "clone3", "comment": "c", "action": {"errno": "EWHATEVER"}}"#,
                    "test.json: groups[0].syscalls[0].action.errno: unknown errno \"EWHATEVER\"; expected one of EACCES, EINVAL, ENOSYS, EOPNOTSUPP, EPERM")
    }

    func testAMisspeltSyscallIsAnErrorWhenTheFilterIsBuilt() throws {
        let policy = try parse("""
            {"comment": "c", "format": "sluice-seccomp/1", "groups": [{"name": "g", "comment": "c",
             "syscalls": [{"name": "raed", "comment": "c"}]}], "forbidden": []}
            """)
        let rules = try policy.compile(features: [], ownPID: 1)
        XCTAssertThrowsError(try SeccompFilter.resolve(rules, system: .live)) { error in
            XCTAssertEqual("\(error)", "cannot sandbox (the seccomp filter): libseccomp does not know the syscall \"raed\" on this architecture")
        }
    }

    // MARK: --print-seccomp

    func testTheRenderingShowsEverySyscallRuleAndReason() throws {
        let policy = try SeccompPolicy.embedded()
        let text = policy.render(mode: .enforce, features: [])
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[0], "seccomp filter from router.seccomp.json (\(policy.syscalls.count) syscalls listed)")
        XCTAssertEqual(lines[1], "mode: enforce; any other syscall: trap: report the call on stderr, then die by SIGSYS")
        XCTAssert(lines.contains("features: multiHost off, nestedVerbs off, verbsDevice off"), "\(lines.filter { $0.hasPrefix("features") })")
        for sc in policy.syscalls {
            XCTAssert(lines.contains { $0.hasPrefix("  \(sc.name) ") && $0.hasSuffix(sc.comment) }, sc.name)
        }
        XCTAssert(lines.contains { $0.contains("- arg0 (domain) == AF_UNIX (1)  (tenant listeners are unix sockets)") }, text)
        XCTAssert(lines.contains { $0.contains("- [multiHost, off] arg0 (domain) == one of AF_INET (2), AF_INET6 (0xa)") }, text)
        XCTAssert(lines.contains { $0.contains("- arg2 (prot) & PROT_EXEC (4) == 0") }, text)
        XCTAssert(lines.contains { $0.contains("- arg1 (mode) == 0o666 (0x1b6)") }, text)
        XCTAssert(lines.contains { $0.hasPrefix("  clone3 ") && $0.contains("fail with ENOSYS (38): ") }, text)
        XCTAssert(lines.contains { $0.contains("arg0 (tgid: the router's own pid) == the router's own pid") }, text)
        XCTAssert(lines.contains { $0.hasPrefix("  execve ") && $0.hasSuffix("The router never runs another program.") }, text)
        XCTAssert(policy.render(mode: .enforce, features: ["multiHost"]).contains("- [multiHost] arg0 (domain)"))
    }
}
