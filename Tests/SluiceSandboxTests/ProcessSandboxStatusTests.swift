import Foundation
import XCTest
@testable import SluiceSandbox

/// The /proc/<pid>/status reader `sluice status` uses.
final class ProcessSandboxStatusTests: XCTestCase {
    func testReadsThisProcessAsTheKernelWritesIt() throws {
        let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let st = try ProcessSandboxStatus.read()
        func field(_ name: String) -> String {
            text.split(separator: "\n").first { $0.hasPrefix(name + ":") }!.split(separator: "\t").last.map(String.init)!
        }
        XCTAssertEqual(st.seccomp, Int(field("Seccomp")))
        XCTAssertEqual(st.noNewPrivileges, field("NoNewPrivs") == "1")
        XCTAssertEqual(ProcessSandboxStatus.hex(st.capEff), field("CapEff"))
        XCTAssertEqual(ProcessSandboxStatus.hex(st.capBnd), field("CapBnd"))
        XCTAssertEqual(st.uids[0], getuid())
        XCTAssertEqual(st.gids[1], getegid())
    }

    func testTheStatusJSONCarriesTheKernelsFields() throws {
        let st = try ProcessSandboxStatus(statusText: """
            Name:\tsluice-router
            Uid:\t999\t999\t999\t999
            Gid:\t998\t998\t998\t998
            CapInh:\t0000000000000000
            CapPrm:\t0000000000000000
            CapEff:\t0000000000000000
            CapBnd:\t0000000000000000
            CapAmb:\t0000000000000000
            NoNewPrivs:\t1
            Seccomp:\t2
            Seccomp_filters:\t1
            """)
        XCTAssertEqual(st.seccompDescription, "filter (1 filter)")
        let obj = st.jsonObject
        XCTAssertEqual(obj["seccomp"] as? Int, 2)
        XCTAssertEqual(obj["noNewPrivs"] as? Int, 1)
        XCTAssertEqual(obj["capEff"] as? String, "0000000000000000")
        XCTAssertEqual(obj["uid"] as? Int, 999)
        XCTAssertEqual(ProcessSandboxStatus.capabilityNames(st.capEff), "none")
        XCTAssertEqual(ProcessSandboxStatus.capabilityNames(0x2001), "cap_chown,cap_net_raw")
    }

    func testAMissingOrMalformedFieldIsNamed() {
        XCTAssertThrowsError(try ProcessSandboxStatus(statusText: "Name:\tx\nSeccomp:\t2\n", source: "/proc/1/status")) {
            XCTAssertEqual("\($0)", "/proc/1/status: no NoNewPrivs field")
        }
        XCTAssertThrowsError(try ProcessSandboxStatus(statusText: "Seccomp:\ttwo\n")) {
            XCTAssertEqual("\($0)", "status: Seccomp is not a number")
        }
        XCTAssertThrowsError(try ProcessSandboxStatus.read(pid: -5)) {
            XCTAssertEqual("\($0)", "/proc/-5/status: cannot be read")
        }
    }
}
