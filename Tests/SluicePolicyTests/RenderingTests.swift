import XCTest
@testable import SluicePolicy

/// The minijail-style rendering: headline, source line, caret under the token.
final class RenderingTests: XCTestCase {
    func testCaretUnderAPlainScalar() {
        XCTAssertEqual(errors(policy("  quotas:\n    queuePairs: -1")), ["""
            t.yaml:10:17: spec.quotas.queuePairs: Invalid value: -1: must be >= 0
                    queuePairs: -1
                                ^^
            """])
    }

    func testCaretCoversAQuotedScalarWithItsQuotes() {
        XCTAssertEqual(errors(policy(#"  quotas: {inlineBytes: "8Gi"}"#)), [#"""
            t.yaml:9:25: spec.quotas.inlineBytes: Invalid value: "8Gi": must be <= 4294967295 bytes
                  quotas: {inlineBytes: "8Gi"}
                                        ^^^^^
            """#])
    }

    func testCaretUnderAnUnknownKey() {
        XCTAssertEqual(errors(policy("  colour: red")), ["""
            t.yaml:9:3: spec.colour: Unknown field: supported fields here: addressPool, identity, keyGuessing, memoryAccess, operations, peers, quotas, rateLimits
                  colour: red
                  ^^^^^^
            """])
    }

    func testCaretCoversAFlowCollection() {
        XCTAssertEqual(errors(policy("  quotas: [1, [2]]")), ["""
            t.yaml:9:11: spec.quotas: Invalid type: expected a mapping, got a list
                  quotas: [1, [2]]
                          ^^^^^^^^
            """])
    }

    func testABlockCollectionGetsOneCaret() {
        XCTAssertEqual(errors(policy("  operations:\n    send: true")), ["""
            t.yaml:10:5: spec.operations: Invalid type: expected a list of operations, got a mapping
                    send: true
                    ^
            """])
    }

    func testTabsInTheSourceLineKeepTheCaretAligned() {
        // The tab before the value stays a tab under it, so a terminal lines
        // the caret up whatever its tab stops.
        let source = "  quotas: {queuePairs:\t-1}"
        let caret = String(repeating: " ", count: 22) + "\t^^"
        XCTAssertEqual(errors(policy(source)),
                       ["t.yaml:9:24: spec.quotas.queuePairs: Invalid value: -1: must be >= 0\n    \(source)\n    \(caret)"])
    }

    func testColumnsCountUnicodeScalars() {
        // "é" is one scalar, two UTF-8 bytes: the caret still lands on the value.
        let text = validPolicy.replacingOccurrences(of: "uids: [0, 1000]", with: "uids: [0, 1000] # équipe\n    gids: [x]")
            .replacingOccurrences(of: "    gids: [2000]\n", with: "")
        XCTAssertEqual(errors(text), [#"""
            t.yaml:8:12: spec.identity.gids[0]: Invalid value: "x": must be an integer
                    gids: [x]
                           ^
            """#])
    }

    func testAWholeFileErrorHasNoSourceLine() {
        XCTAssertEqual(PolicyError(file: "p.yaml", message: "cannot read the file").description, "p.yaml: cannot read the file")
    }

    func testAnErrorPastTheLastLineHasNoSourceLine() {
        XCTAssertEqual(errors("apiVersion: sluice/v1\nkind: [TenantPolicy"),
                       ["t.yaml:3:1: Invalid YAML: while parsing a flow sequence, did not find expected ',' or ']'"])
    }

    func testALoadErrorRendersEachErrorInTurn() {
        let e = PolicyLoadError([
            PolicyError(file: "a.yaml", line: 1, column: 3, field: "x", message: "m1", sourceLine: "a: b", tokenLength: 1),
            PolicyError(file: "b.yaml", message: "m2"),
        ])
        XCTAssertEqual(e.description, "a.yaml:1:3: x: m1\n    a: b\n      ^\nb.yaml: m2")
    }

    func testTheCaretNeverRunsPastTheLine() {
        let e = PolicyError(file: "a.yaml", line: 1, column: 4, field: "", message: "m", sourceLine: "a: b", tokenLength: 40)
        XCTAssertEqual(e.description, "a.yaml:1:4: m\n    a: b\n       ^")
    }
}
