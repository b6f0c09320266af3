import XCTest
@testable import SluicePolicy

/// `spec.rateLimits.weight`, `minimumRequestBytes` and `controlVerbs`: values,
/// defaults, and the exact text of each error, line and column included.
final class RateLimitFieldTests: XCTestCase {
    /// The headlines of a policy whose `rateLimits` holds `lines` (from line 10).
    func rateLimits(_ lines: String) -> [String] {
        headlines(policy("  rateLimits:\n" + lines))
    }

    func parsed(_ lines: String) throws -> RateLimits {
        try PolicySet.parseFile(policy("  rateLimits:\n" + lines), file: "t.yaml").rateLimits
    }

    // MARK: defaults and values

    func testDefaults() throws {
        let none = RateLimits()
        XCTAssertEqual(none.weight, 1)
        XCTAssertEqual(none.minimumRequestBytes, 64)
        XCTAssertNil(none.controlVerbs)
        XCTAssertNil(none.tenant)
        XCTAssertNil(none.queuePair)
        XCTAssertEqual(try PolicySet.parseFile(validPolicy, file: "t.yaml").rateLimits, none)
        XCTAssertEqual(try PolicySet.parseFile(policy("  rateLimits: {}"), file: "t.yaml").rateLimits, none)
        let tenantOnly = try parsed("    tenant: {bandwidth: 1GB/s}")
        XCTAssertEqual(tenantOnly, RateLimits(tenant: RateLimit(bandwidth: 1_000_000_000), weight: 1, minimumRequestBytes: 64))
        // The old initializer still reads the same.
        XCTAssertEqual(RateLimits(tenant: RateLimit(operations: 5), queuePair: nil),
                       RateLimits(tenant: RateLimit(operations: 5), queuePair: nil, weight: 1, minimumRequestBytes: 64, controlVerbs: nil))
    }

    func testEveryFieldParses() throws {
        let r = try parsed("""
                tenant: {bandwidth: 10Gbit/s}
                queuePair: {operations: 250K/s}
                weight: 1000
                minimumRequestBytes: 1Mi
                controlVerbs:
                  operations: 500/s
                  burstOperations: 20
            """)
        XCTAssertEqual(r, RateLimits(tenant: RateLimit(bandwidth: 1_250_000_000), queuePair: RateLimit(operations: 250_000),
                                     weight: 1000, minimumRequestBytes: 1 << 20,
                                     controlVerbs: ControlVerbLimit(operations: 500, burstOperations: 20)))
        XCTAssertEqual(r.controlVerbs?.burstOperationsOrDefault, 20)
    }

    func testWeight() throws {
        XCTAssertEqual(try parsed("    weight: 1").weight, 1)
        XCTAssertEqual(try parsed("    weight: 37").weight, 37)
        XCTAssertEqual(RateLimits.weights, 1...1000)
        let cases: [(String, String)] = [
            ("0", "t.yaml:10:13: spec.rateLimits.weight: Invalid value: 0: must be >= 1"),
            ("-1", "t.yaml:10:13: spec.rateLimits.weight: Invalid value: -1: must be >= 1"),
            ("1001", "t.yaml:10:13: spec.rateLimits.weight: Invalid value: 1001: must be <= 1000"),
            ("99999999999999999999", "t.yaml:10:13: spec.rateLimits.weight: Invalid value: 99999999999999999999: must be <= 1000"),
            ("1.5", #"t.yaml:10:13: spec.rateLimits.weight: Invalid value: "1.5": must be an integer"#),
            ("heavy", #"t.yaml:10:13: spec.rateLimits.weight: Invalid value: "heavy": must be an integer"#),
            (#""2""#, "t.yaml:10:13: spec.rateLimits.weight: Invalid type: expected an integer, got a string"),
            ("true", "t.yaml:10:13: spec.rateLimits.weight: Invalid type: expected an integer, got a boolean"),
            ("[2]", "t.yaml:10:13: spec.rateLimits.weight: Invalid type: expected an integer, got a list"),
            ("", "t.yaml:10:12: spec.rateLimits.weight: Invalid type: expected an integer, got null"),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(rateLimits("    weight: \(value)"), [expected], value)
        }
    }

    func testMinimumRequestBytes() throws {
        XCTAssertEqual(try parsed("    minimumRequestBytes: 0").minimumRequestBytes, 0)
        XCTAssertEqual(try parsed("    minimumRequestBytes: 4Ki").minimumRequestBytes, 4096)
        XCTAssertEqual(try parsed(#"    minimumRequestBytes: "512""#).minimumRequestBytes, 512)
        XCTAssertEqual(try parsed("    minimumRequestBytes: 1048576").minimumRequestBytes, 1 << 20)
        XCTAssertEqual(RateLimits.maxMinimumRequestBytes, 1 << 20)
        let cases: [(String, String)] = [
            ("1048577", "t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid value: 1048577: must be <= 1048576 bytes"),
            ("2Mi", #"t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid value: "2Mi": must be <= 1048576 bytes"#),
            ("16Ei", #"t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid value: "16Ei": must be <= 1048576 bytes"#),
            ("-1", "t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid value: -1: must be >= 0"),
            ("64B", #"t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid value: "64B": must be a size: a whole number of bytes, optionally with a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal one (K, M, G, T, P, E), e.g. 4096, 256Mi, 4Gi"#),
            ("{}", "t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid type: expected a size, got a mapping"),
            ("[64]", "t.yaml:10:26: spec.rateLimits.minimumRequestBytes: Invalid type: expected a size, got a list"),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(rateLimits("    minimumRequestBytes: \(value)"), [expected], value)
        }
    }

    func testControlVerbs() throws {
        XCTAssertEqual(try parsed("    controlVerbs: {operations: 1K/s}").controlVerbs, ControlVerbLimit(operations: 1000))
        XCTAssertEqual(try parsed("    controlVerbs: {operations: 1K/s}").controlVerbs?.burstOperationsOrDefault, 100)
        XCTAssertEqual(ControlVerbLimit(operations: 5).burstOperationsOrDefault, 1, "at least 1")
        XCTAssertEqual(ControlVerbLimit(operations: 5, burstOperations: 50).burstOperationsOrDefault, 50)

        func verbs(_ body: String) -> [String] { rateLimits("    controlVerbs: \(body)") }
        XCTAssertEqual(verbs("{}"), ["t.yaml:10:19: spec.rateLimits.controlVerbs.operations: Required value"])
        XCTAssertEqual(verbs("{burstOperations: 10}"), ["t.yaml:10:19: spec.rateLimits.controlVerbs.operations: Required value"],
                       "a burst without its rate")
        XCTAssertEqual(verbs("{operations: 0/s}"),
                       [#"t.yaml:10:32: spec.rateLimits.controlVerbs.operations: Invalid value: "0/s": must be > 0; omit the field for no limit"#])
        XCTAssertEqual(verbs("{operations: 100}"),
                       [#"t.yaml:10:32: spec.rateLimits.controlVerbs.operations: Invalid value: 100: must be an operation rate: a whole number of operations with an optional K, M or G (decimal) prefix and /s, e.g. 1000/s, 500K/s, 2M/s"#])
        XCTAssertEqual(verbs("{operations: 99999999999G/s}"),
                       [#"t.yaml:10:32: spec.rateLimits.controlVerbs.operations: Invalid value: "99999999999G/s": too large: must be < 2^64 operations per second"#])
        XCTAssertEqual(verbs("{operations: 1K/s, burstOperations: 0}"),
                       ["t.yaml:10:55: spec.rateLimits.controlVerbs.burstOperations: Invalid value: 0: must be > 0"])
        XCTAssertEqual(verbs("{operations: 1K/s, burstOperations: -4}"),
                       ["t.yaml:10:55: spec.rateLimits.controlVerbs.burstOperations: Invalid value: -4: must be >= 0"])
        XCTAssertEqual(verbs(#"{operations: 1K/s, burstOperations: "5"}"#),
                       ["t.yaml:10:55: spec.rateLimits.controlVerbs.burstOperations: Invalid type: expected an integer, got a string"])
        XCTAssertEqual(verbs("{operations: 1K/s, bandwidth: 1GB/s}"),
                       ["t.yaml:10:38: spec.rateLimits.controlVerbs.bandwidth: Unknown field: supported fields here: burstOperations, operations"])
        XCTAssertEqual(verbs("100/s"),
                       ["t.yaml:10:19: spec.rateLimits.controlVerbs: Invalid type: expected a mapping, got a string"])
        XCTAssertEqual(rateLimits("    controlVerbs:\n      burstOperations: 10"),
                       ["t.yaml:11:7: spec.rateLimits.controlVerbs.operations: Required value"])
    }

    func testUnknownFieldsNameEveryRateLimitsField() {
        XCTAssertEqual(rateLimits("    weights: 3"),
                       ["t.yaml:10:5: spec.rateLimits.weights: Unknown field: supported fields here: controlVerbs, minimumRequestBytes, queuePair, tenant, weight"])
        XCTAssertEqual(rateLimits("    tenant: {bandwidth: 1GB/s, weight: 2}"),
                       ["t.yaml:10:32: spec.rateLimits.tenant.weight: Unknown field: supported fields here: bandwidth, burstBytes, burstOperations, operations"])
    }

    func testEveryErrorOfTheSectionIsReportedInReadingOrder() {
        XCTAssertEqual(rateLimits("""
                weight: 0
                minimumRequestBytes: 2Mi
                controlVerbs: {operations: 0/s, burstOperations: 0}
                tenant: {burstBytes: 1Mi}
            """), [
            "t.yaml:10:13: spec.rateLimits.weight: Invalid value: 0: must be >= 1",
            #"t.yaml:11:26: spec.rateLimits.minimumRequestBytes: Invalid value: "2Mi": must be <= 1048576 bytes"#,
            #"t.yaml:12:32: spec.rateLimits.controlVerbs.operations: Invalid value: "0/s": must be > 0; omit the field for no limit"#,
            "t.yaml:12:54: spec.rateLimits.controlVerbs.burstOperations: Invalid value: 0: must be > 0",
            "t.yaml:13:13: spec.rateLimits.tenant: Required value: at least one of bandwidth, operations",
            "t.yaml:13:14: spec.rateLimits.tenant.burstBytes: Forbidden: needs bandwidth to be set",
        ])
    }

    func testTheCaretPointsAtTheValue() {
        XCTAssertEqual(errors(policy("  rateLimits:\n    weight: 1001")), ["""
            t.yaml:10:13: spec.rateLimits.weight: Invalid value: 1001: must be <= 1000
                    weight: 1001
                            ^^^^
            """])
    }
}
