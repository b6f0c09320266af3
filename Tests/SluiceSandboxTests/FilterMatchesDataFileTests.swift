import Foundation
import XCTest
@testable import SluiceSandbox

/// The filter the router loads does what `router.seccomp.json` says, proven
/// with the real filter in a child (Firecracker's test_seccomp_validate,
/// bubblewrap's try-syscall): each allowed call with allowed arguments runs
/// or fails on its own; each pinned argument with another value, each
/// forbidden call, and every syscall number the file does not list, is
/// refused. The child's filter answers refusals with EHWPOISON instead of
/// trapping, so one child survives them all and the errno proves the refusal.
final class FilterMatchesDataFileTests: XCTestCase {
    let policy = try! SeccompPolicy.embedded()

    /// The probe catalog and the data file name the same syscalls: adding a
    /// syscall, a pinned argument or a forbidden entry without a probe fails here.
    func testEveryEntryOfTheFileHasProbes() {
        // Every feature on: a feature-gated syscall (connect, setsockopt:
        // multiHost; sendto, poll: nestedVerbs) must have a probe it allows.
        let probes = ProbeCatalog.make(ProbeArena(), multiHost: true, verbsDevice: true, nestedVerbs: true)
        let allowedProbes = Set(probes.filter { $0.expect != .refused }.map(\.syscall))
        let refusedProbes = Set(probes.filter { $0.expect == .refused }.map(\.syscall))
        for sc in policy.syscalls {
            XCTAssert(allowedProbes.contains(sc.name), "\(sc.name) is allowed by the file but no probe tries it")
            if !sc.rules.isEmpty {
                XCTAssert(refusedProbes.contains(sc.name), "\(sc.name) pins arguments but no probe tries a refused value")
            }
        }
        for f in policy.forbidden {
            XCTAssert(refusedProbes.contains(f.name), "\(f.name) is forbidden by the file but no probe tries it")
        }
        let named = Set(policy.syscalls.map(\.name) + policy.forbidden.map(\.name))
        for probe in probes {
            XCTAssert(named.contains(probe.syscall), "probe \(probe.syscall) (\(probe.label)) names a syscall the file does not")
        }
    }

    func testTheRealFilterAllowsAndRefusesWhatTheFileSays() throws {
        let run = try ChildRun.run("probe")
        check(run, multiHost: false)
    }

    func testTheMultiHostFeatureAddsInternetSocketsOnly() throws {
        let run = try ChildRun.run("probe", environment: ["SLUICE_SANDBOX_FEATURES": "multiHost"])
        check(run, multiHost: true)
        let inet = run.values("probe").filter { $0[0] == "socket" && $0[1] == "AF_INET" }
        XCTAssertEqual(inet.count, 1)
        XCTAssertNotEqual(inet.first?[3], String(refusalErrno), "with multiHost, socket(AF_INET) is allowed")
    }

    /// The verbs backend's features add the uverbs ioctl, and the nested
    /// library's doorbell send and liveness poll; nothing else changes.
    func testTheVerbsFeaturesAddTheirCallsOnly() throws {
        let run = try ChildRun.run("probe", environment: ["SLUICE_SANDBOX_FEATURES": "verbsDevice,nestedVerbs"])
        check(run, multiHost: false, verbsDevice: true, nestedVerbs: true)
        for (sc, label) in [("ioctl", "RDMA_VERBS_IOCTL on fd -1 (verbsDevice)"), ("sendto", "MSG_NOSIGNAL|MSG_DONTWAIT on fd -1 (nestedVerbs)"),
                            ("poll", "no fds, timeout 0 (nestedVerbs)")] {
            let r = run.values("probe").filter { $0[0] == sc && $0[1] == label }
            XCTAssertEqual(r.count, 1)
            XCTAssertNotEqual(r.first?[3], String(refusalErrno), "\(sc) is allowed with the verbs features")
        }
    }

    private func check(_ run: ChildRun, multiHost: Bool, verbsDevice: Bool = false, nestedVerbs: Bool = false,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(run.exitStatus, 0, "the child must end normally (exit_group allowed): \(run.summary)", file: file, line: line)
        XCTAssert(run.values("error").isEmpty, "\(run.values("error"))", file: file, line: line)
        let expected = ProbeCatalog.make(ProbeArena(), multiHost: multiHost, verbsDevice: verbsDevice, nestedVerbs: nestedVerbs)
        let results = run.values("probe")
        XCTAssertEqual(results.count, expected.count, "every probe reports: \(run.summary)", file: file, line: line)
        for (probe, result) in zip(expected, results) {
            XCTAssertEqual([probe.syscall, probe.label], Array(result.prefix(2)), file: file, line: line)
            guard result.count == 4, let value = Int(result[2]), let err = Int32(result[3]) else {
                XCTFail("malformed result \(result)", file: file, line: line)
                continue
            }
            let what = "\(probe.syscall) (\(probe.label)): returned \(value), errno \(err)"
            switch probe.expect {
            case .allowed:
                XCTAssertNotEqual(err, refusalErrno, "\(what): the file allows it, the filter refused it", file: file, line: line)
                XCTAssertNotEqual(err, ENOSYS, "\(what)", file: file, line: line)
            case .refused:
                XCTAssertEqual(value, -1, "\(what): the filter let it run", file: file, line: line)
                XCTAssertEqual(err, refusalErrno, "\(what): refused by something other than the filter", file: file, line: line)
            case .filterErrno(let e):
                XCTAssertEqual(err, e, "\(what)", file: file, line: line)
            }
        }
        XCTAssertEqual(run.values("unrefused").map { "\($0[1]) (\($0[0])): \($0[2]) errno \($0[3])" }, [],
                       "syscalls the file does not list must be refused", file: file, line: line)
        XCTAssertGreaterThan(Int(run.value("swept") ?? "0") ?? 0, 300, "the sweep ran over the syscall table", file: file, line: line)
        XCTAssertEqual(run.values("x32").first, ["-1", String(refusalErrno)], "an x32 call is another ABI: refused", file: file, line: line)
    }
}
