import XCTest
@testable import SluicePolicy

/// `spec.keyGuessing`: the detector's threshold, window and quarantine.
final class KeyGuessingFieldTests: XCTestCase {
    func testDefaultsWhenOmitted() throws {
        let p = try PolicySet.parseFile(validPolicy, file: "t.yaml")
        XCTAssertEqual(p.keyGuessing, KeyGuessing(maxFailures: 32, windowSeconds: 10, quarantine: false))
    }

    func testAllFields() throws {
        let p = try PolicySet.parseFile(policy("  keyGuessing:\n    maxFailures: 5\n    windowSeconds: 30\n    quarantine: true\n"),
                                        file: "t.yaml")
        XCTAssertEqual(p.keyGuessing, KeyGuessing(maxFailures: 5, windowSeconds: 30, quarantine: true))
        let q = try PolicySet.parseFile(policy("  keyGuessing:\n    quarantine: false\n"), file: "t.yaml")
        XCTAssertEqual(q.keyGuessing, KeyGuessing(maxFailures: 32, windowSeconds: 10, quarantine: false), "unset fields keep defaults")
    }

    func testErrors() {
        XCTAssertEqual(headlines(policy("  keyGuessing:\n    maxFailures: 0\n")),
                       ["t.yaml:10:18: spec.keyGuessing.maxFailures: Invalid value: 0: must be >= 1"])
        XCTAssertEqual(headlines(policy("  keyGuessing:\n    windowSeconds: 86401\n")),
                       ["t.yaml:10:20: spec.keyGuessing.windowSeconds: Invalid value: 86401: must be <= 86400"])
        XCTAssertEqual(headlines(policy("  keyGuessing:\n    quarantine: yes\n")),
                       [#"t.yaml:10:17: spec.keyGuessing.quarantine: Invalid type: expected true or false, got "yes""#])
        XCTAssertEqual(headlines(policy("  keyGuessing:\n    quarantine: \"true\"\n")),
                       ["t.yaml:10:17: spec.keyGuessing.quarantine: Invalid type: expected true or false, got a string"])
        XCTAssertEqual(headlines(policy("  keyGuessing:\n    threshold: 3\n")),
                       ["t.yaml:10:5: spec.keyGuessing.threshold: Unknown field: supported fields here: maxFailures, quarantine, windowSeconds"])
        XCTAssertEqual(headlines(policy("  keyGuessing: 3\n")),
                       ["t.yaml:9:16: spec.keyGuessing: Invalid type: expected a mapping, got an integer"])
    }
}
