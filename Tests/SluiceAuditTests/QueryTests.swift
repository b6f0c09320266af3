import Foundation
import XCTest
@testable import SluiceAudit

final class QueryTests: XCTestCase {
    func record(_ seq: UInt64, tenant: String? = "alpha", event: String = "control", verb: String? = nil,
                object: String? = nil, decision: AuditDecision? = nil, rule: String? = nil,
                fields: [String: String] = [:], time: String = "2025-01-01T00:00:00.000000000Z") -> AuditRecord {
        AuditRecord(seq: seq, time: time, host: "h", tenant: tenant, subject: AuditSubject(session: 1, pid: 10, uid: 20),
                    event: event, verb: verb, object: object, decision: decision, rule: rule, fields: fields)
    }

    func testQPMatchesQpnAndPeerButNotHandles() {
        let rtr = record(1, object: "qp 3 qpn 0x1a -> RTR peer 0x1b")
        XCTAssertTrue(AuditQuery(qp: 0x1a).matches(rtr))
        XCTAssertTrue(AuditQuery(qp: 0x1b).matches(rtr))
        XCTAssertFalse(AuditQuery(qp: 3).matches(rtr), "3 is the tenant's handle, not a QP number")
        XCTAssertTrue(AuditQuery(qp: 26).matches(record(2, object: "qpn 26")))
        XCTAssertTrue(AuditQuery(qp: 0x1a).matches(record(3, event: "throttle", fields: ["qpn": "0x1a"])))
        XCTAssertFalse(AuditQuery(qp: 0x1a).matches(record(4)))
    }

    func testTimeWindowIsInclusive() throws {
        let r = record(1, time: "2025-01-01T00:00:10.000000000Z")
        let t = try XCTUnwrap(AuditTimestamp(rfc3339: "2025-01-01T00:00:10Z"))
        XCTAssertTrue(AuditQuery(since: t, until: t).matches(r))
        XCTAssertFalse(AuditQuery(since: t + 1).matches(r))
        XCTAssertFalse(AuditQuery(until: t - 1).matches(r))
    }

    func testEveryCriterionMustHold() {
        let r = record(1, verb: "reg_mr", decision: .deny, rule: "quota.mr")
        XCTAssertTrue(AuditQuery(tenant: "alpha", decision: .deny, verb: "reg_mr", rule: "quota.mr", pid: 10, uid: 20, session: 1).matches(r))
        XCTAssertFalse(AuditQuery(tenant: "alpha", decision: .allow).matches(r))
        XCTAssertFalse(AuditQuery(pid: 11).matches(r))
        XCTAssertFalse(AuditQuery(tenant: "beta").matches(record(2, tenant: nil)))
    }

    func testReportConventions() {
        var report = AuditReport(files: [])
        report.top = 2
        for (i, r) in [
            record(1, event: "session.open", decision: .allow),
            record(2, verb: "reg_mr", decision: .deny, rule: "quota.mr"),
            record(3, verb: "reg_mr", decision: .deny, rule: "quota.mr"),
            record(4, verb: "create_qp", decision: .deny, rule: "quota.qp"),
            record(5, verb: "post_send", decision: .deny, rule: "opcodes"),
            record(6, event: "throttle", object: "qpn 0x10"),
            record(7, event: "throttle", object: "qpn 0x10"),
            record(8, event: "throttle", object: "qpn 0x11"),
            record(9, event: "summary", fields: ["allowed": "1000"]),
            record(10, event: "summary", fields: ["allowed": "234"]),
            record(11, event: "session.refused", decision: .deny, rule: "identity"),
            record(12, tenant: nil, event: "audit.loss", fields: ["lost": "7"]),
            record(13, tenant: "beta", event: "session.close"),
        ].enumerated() {
            XCTAssertEqual(r.seq, UInt64(i + 1))
            report.add(r)
        }
        report.finish()
        XCTAssertEqual(report.tenants.map(\.tenant), ["alpha", "beta", "(router)"])
        let a = report.tenants[0]
        XCTAssertEqual(a.records, 11)
        XCTAssertEqual(a.allow, 1)
        XCTAssertEqual(a.deny, 5)
        XCTAssertEqual(a.topDenialRules, [.init(name: "quota.mr", count: 2), .init(name: "identity", count: 1)])
        XCTAssertEqual(a.topDeniedVerbs, [.init(name: "reg_mr", count: 2), .init(name: "(session.refused)", count: 1)])
        XCTAssertEqual(a.throttleRecords, 3)
        XCTAssertEqual(a.throttledObjects, 2)
        XCTAssertEqual(a.dataPathAllowsCounted, 1234)
        XCTAssertEqual(a.sessionsOpened, 1)
        XCTAssertEqual(a.sessionsRefused, 1)
        XCTAssertEqual(report.tenants[1].sessionsClosed, 1)
        XCTAssertEqual(report.lossRecords, 1)
        XCTAssertEqual(report.lostRecords, 7)
        XCTAssertEqual(report.firstSeq, 1)
        XCTAssertEqual(report.lastSeq, 13)
    }

    func testFollowerSeesAppendsAndATruncation() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        try Log.write(["a", "b", "c"], to: path)
        let f = try AuditFollower(path: path, startingWithLast: 2)
        XCTAssertEqual(try f.poll().map { String(decoding: $0.bytes, as: UTF8.self) }, ["b", "c"])
        XCTAssertEqual(try f.poll().count, 0)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        h.seekToEndOfFile()
        h.write(Data("d\ne".utf8))
        XCTAssertEqual(try f.poll().map { String(decoding: $0.bytes, as: UTF8.self) }, ["d"], "a partial line waits")
        h.write(Data("\n".utf8))
        XCTAssertEqual(try f.poll().map { String(decoding: $0.bytes, as: UTF8.self) }, ["e"])
        // A restarted writer cuts a torn tail back to the last complete
        // record and appends: the follower carries on from there.
        h.write(Data(#"{"torn"#.utf8))
        XCTAssertEqual(try f.poll().count, 0)
        h.truncateFile(atOffset: 10)
        h.seekToEndOfFile()
        h.write(Data("g\n".utf8))
        XCTAssertEqual(try f.poll().map { String(decoding: $0.bytes, as: UTF8.self) }, ["g"])
        XCTAssertEqual(f.notices, [.truncated(from: 16, to: 12)])
        // Cut below what was read: say so; what was there is unknowable.
        h.truncateFile(atOffset: 2)
        h.seekToEndOfFile()
        h.write(Data("x\n".utf8))
        try h.close()
        XCTAssertEqual(try f.poll().count, 0)
        XCTAssertEqual(f.notices, [.truncated(from: 12, to: 4)])
    }

    func testFollowerStartsOnAFileThatDoesNotExistYet() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        let f = try AuditFollower(path: path, startingWithLast: 10)
        XCTAssertEqual(try f.poll().count, 0)
        try Log.write(["a"], to: path)
        XCTAssertEqual(try f.poll().map { String(decoding: $0.bytes, as: UTF8.self) }, ["a"])
    }

    /// A writer rotating again while the follower moves from the file it
    /// finished to the active one: the file in between is read, not
    /// skipped (`sluice audit tail -f` lost a file this way under load).
    func testFollowerReadsAFileRotatedWhileItOpensTheActiveOne() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        func lines(_ l: [AuditFollower.Line]) -> [String] { l.map { String(decoding: $0.bytes, as: UTF8.self) } }
        try Log.write(["1", "2"], to: path)
        let f = try AuditFollower(path: path, startingWithLast: 10)
        XCTAssertEqual(lines(try f.poll()), ["1", "2"])
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try Log.write(["3", "4"], to: path)
        var rotatedAgain = false
        f.beforeOpeningActive = {
            guard !rotatedAgain else { return }
            rotatedAgain = true
            try? FileManager.default.moveItem(atPath: path, toPath: path + ".2")
            try? Log.write(["5", "6"], to: path)
        }
        XCTAssertEqual(lines(try f.poll()), ["3", "4", "5", "6"])
        XCTAssertTrue(rotatedAgain)
        XCTAssertTrue(f.notices.contains(.rotated))
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        h.seekToEndOfFile()
        h.write(Data("7\n".utf8))
        try h.close()
        XCTAssertEqual(lines(try f.poll()), ["7"], "then it follows the active file")
    }
}
