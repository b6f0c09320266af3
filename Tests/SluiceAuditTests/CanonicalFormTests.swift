import XCTest
@testable import SluiceAudit

/// The bytes on disk are the contract: these tests pin them.
final class CanonicalFormTests: XCTestCase {
    let sample = AuditRecord(
        seq: 1, time: "2025-01-01T00:00:00.000000000Z", host: "h", tenant: "alpha",
        subject: AuditSubject(session: 2, pid: 3, uid: 4), event: "control", verb: "create_qp",
        object: "qp 1 qpn 0x1a", decision: .deny, rule: "quota.qp", reason: "too \"many\"\n/é\u{1}",
        fields: ["b": "2", "a": "1"])

    // Computed independently: Python's json.dumps(sort_keys=True,
    // separators=(",", ":"), ensure_ascii=False) and hashlib.sha256.
    let expectedCanonical = #"{"decision":"deny","event":"control","fields":{"a":"1","b":"2"},"host":"h","object":"qp 1 qpn 0x1a","prev":"0000000000000000000000000000000000000000000000000000000000000000","reason":"too \"many\"\n/é\u0001","rule":"quota.qp","seq":1,"subject":{"pid":3,"session":2,"uid":4},"tenant":"alpha","time":"2025-01-01T00:00:00.000000000Z","verb":"create_qp"}"#
    let expectedHash = "0f00fe0f73c506b7949f4b8a833e34039023572c6653055680682f0d51019982"

    func testCanonicalBytesAndHash() {
        XCTAssertEqual(String(decoding: sample.canonicalBytes, as: UTF8.self), expectedCanonical)
        XCTAssertEqual(sample.computedHash, expectedHash)
    }

    func testLineInsertsHashInSortedPosition() throws {
        var r = sample
        let line = r.seal()
        XCTAssertEqual(r.hash, expectedHash)
        let text = String(decoding: line, as: UTF8.self)
        XCTAssertTrue(text.hasSuffix("}\n"))
        XCTAssertTrue(text.contains(#""fields":{"a":"1","b":"2"},"hash":"\#(expectedHash)","host":"h""#), text)
        XCTAssertEqual(try AuditRecord(line: line.dropLast()), r)
    }

    func testMinimalRecordOmitsAbsentMembers() {
        let r = AuditRecord(seq: 7, time: "2025-01-01T00:00:00.000000001Z", host: "h", event: "router.start")
        XCTAssertEqual(String(decoding: r.canonicalBytes, as: UTF8.self),
                       #"{"event":"router.start","host":"h","prev":"\#(AuditRecord.genesis)","seq":7,"time":"2025-01-01T00:00:00.000000001Z"}"#)
        XCTAssertEqual(String(decoding: r.lineBytes, as: UTF8.self),
                       #"{"event":"router.start","hash":"","host":"h","prev":"\#(AuditRecord.genesis)","seq":7,"time":"2025-01-01T00:00:00.000000001Z"}"#)
    }

    func testEscapes() {
        var out = [UInt8]()
        CanonicalJSON.appendString("a\"b\\c/d\u{8}\u{c}\n\r\t\u{1f}\u{7f}é😀", to: &out)
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #""a\"b\\c/d\b\f\n\r\t\u001f"# + "\u{7f}é😀\"")
    }

    func testParserRoundTripsEscapes() throws {
        let v = try CanonicalJSON.parse(Array(#"{"k":"\u00e9\ud83d\ude00\/\b"}"#.utf8))
        XCTAssertEqual(v, .object(["k": .string("é😀/\u{8}")]))
    }

    func testParserRejects() {
        for bad in [#"{"a":"1","a":"2"}"#, #"{"a":"\ud800"}"#, #"{"a":01}"#, #"{"a":"x"} x"#, "{\"a\":\"\u{1}\"}", #"{"a":}"#, "{"] {
            XCTAssertThrowsError(try CanonicalJSON.parse(Array(bad.utf8)), bad)
        }
        XCTAssertThrowsError(try CanonicalJSON.parse([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]), "invalid UTF-8")
    }

    func testRecordParsingIsStrict() {
        var sealed = sample
        let good = String(decoding: sealed.seal().dropLast(), as: UTF8.self)
        let cases: [(String, String)] = [
            (good.replacingOccurrences(of: #""seq":1"#, with: #""seq":"1""#), "\"seq\" is not an integer"),
            (good.replacingOccurrences(of: #""decision":"deny""#, with: #""decision":"maybe""#), "not allow or deny"),
            (good.replacingOccurrences(of: #""host":"h""#, with: #""host":"h","extra":"x""#), "unknown member \"extra\""),
            (good.replacingOccurrences(of: #""time":"2025-01-01T00:00:00.000000000Z""#, with: #""time":"yesterday""#), "RFC 3339"),
            (good.replacingOccurrences(of: #","uid":4"#, with: ""), "subject.uid"),
        ]
        for (line, fragment) in cases {
            XCTAssertThrowsError(try AuditRecord(line: Array(line.utf8))) { e in
                XCTAssertTrue("\(e)".contains(fragment), "\(e) should mention \(fragment)")
            }
        }
    }

    func testTimestamps() throws {
        let t = try XCTUnwrap(AuditTimestamp(rfc3339: "2024-02-29T23:59:59.123456789Z"))
        XCTAssertEqual(t.rfc3339, "2024-02-29T23:59:59.123456789Z")
        XCTAssertEqual(AuditTimestamp(rfc3339: "2024-03-01T01:00:00+01:00"), AuditTimestamp(rfc3339: "2024-03-01T00:00:00Z"))
        XCTAssertEqual(AuditTimestamp(rfc3339: "1970-01-01T00:00:00.5Z")?.nanosecondsSinceEpoch, 500_000_000)
        XCTAssertEqual(AuditTimestamp(nanosecondsSinceEpoch: -1).rfc3339, "1969-12-31T23:59:59.999999999Z")
        for bad in ["2023-02-29T00:00:00Z", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00.Z",
                    "2024-01-01T00:00:00.1234567891Z", "2024-13-01T00:00:00Z"] {
            XCTAssertNil(AuditTimestamp(rfc3339: bad), bad)
        }
    }

    func testOperatorTimes() throws {
        let now = try XCTUnwrap(AuditTimestamp(rfc3339: "2025-03-10T12:30:00Z"))
        func p(_ s: String) -> String? { AuditTimestamp.parse(operatorInput: s, now: now)?.rfc3339 }
        XCTAssertEqual(p("1h"), "2025-03-10T11:30:00.000000000Z")
        XCTAssertEqual(p("30m"), "2025-03-10T12:00:00.000000000Z")
        XCTAssertEqual(p("2d"), "2025-03-08T12:30:00.000000000Z")
        XCTAssertEqual(p("1h30m"), "2025-03-10T11:00:00.000000000Z")
        XCTAssertEqual(p("today"), "2025-03-10T00:00:00.000000000Z")
        XCTAssertEqual(p("yesterday"), "2025-03-09T00:00:00.000000000Z")
        XCTAssertEqual(p("recent"), "2025-03-10T12:20:00.000000000Z")
        XCTAssertEqual(p("2025-03-01"), "2025-03-01T00:00:00.000000000Z")
        XCTAssertEqual(p("2025-03-01T10:00:00Z"), "2025-03-01T10:00:00.000000000Z")
        for bad in ["1", "h", "1x", "-1h", "tomorrow", "2025-03-01T10:00"] { XCTAssertNil(p(bad), bad) }
    }
}
