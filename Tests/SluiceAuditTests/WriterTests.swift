import Foundation
import XCTest
@testable import SluiceAudit

final class WriterTests: XCTestCase {
    func testRoundTrip() throws {
        let dir = try TempDir()
        let clock = ManualAuditClock()
        let w = try AuditWriter(.test(dir.file("audit.log"), clock: clock))
        clock.advance(seconds: 1.5)
        let subject = AuditSubject(session: 7, pid: 4242, uid: 1001)
        XCTAssertTrue(w.record(event: "control", tenant: "alpha", subject: subject, verb: "create_qp",
                               object: "qp 2 qpn 0x2a", decision: .deny, rule: "quota.qp",
                               reason: "at most 2 QPs", fields: ["requested": "3"]))
        w.record(event: "router.start", fields: ["tenants": "alpha,beta"])
        w.close()

        let records = try Log.records(dir.file("audit.log"))
        XCTAssertEqual(records.map(\.event), ["audit.open", "control", "router.start", "audit.close"])
        XCTAssertEqual(records.map(\.seq), [1, 2, 3, 4])
        let r = records[1]
        XCTAssertEqual(r.time, "2025-01-01T00:00:01.500000000Z")
        XCTAssertEqual(r.host, "testhost")
        XCTAssertEqual(r.tenant, "alpha")
        XCTAssertEqual(r.subject, subject)
        XCTAssertEqual(r.verb, "create_qp")
        XCTAssertEqual(r.object, "qp 2 qpn 0x2a")
        XCTAssertEqual(r.decision, .deny)
        XCTAssertEqual(r.rule, "quota.qp")
        XCTAssertEqual(r.reason, "at most 2 QPs")
        XCTAssertEqual(r.fields, ["requested": "3"])
        XCTAssertEqual(records[0].prev, AuditRecord.genesis)
        for i in 1..<records.count { XCTAssertEqual(records[i].prev, records[i - 1].hash) }
        for rec in records { XCTAssertEqual(rec.computedHash, rec.hash) }

        let open = records[0]
        XCTAssertEqual(open.fields["format"], "sluice-audit/1")
        XCTAssertEqual(open.fields["continues"], "new log")
        XCTAssertTrue(open.fields["checkpoints"]!.hasPrefix("off: no key file"), open.fields["checkpoints"]!)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.file("audit.log.checkpoints")))

        XCTAssertEqual(records[3].fields["written"], "2")
        XCTAssertEqual(w.statistics.written, 2)
        XCTAssertEqual(w.statistics.dropped, 0)
        XCTAssertTrue(AuditVerifier().verify(files: [dir.file("audit.log")]).ok)
    }

    func testRecordAfterCloseIsCountedNotWritten() throws {
        let dir = try TempDir()
        let w = try AuditWriter(.test(dir.file("audit.log")))
        w.close()
        XCTAssertFalse(w.record(event: "late"))
        XCTAssertEqual(w.statistics.droppedAfterClose, 1)
        w.close()
        XCTAssertEqual(try Log.records(dir.file("audit.log")).map(\.event), ["audit.open", "audit.close"])
    }

    func testQueueOverflowWritesALossRecordWithTheCount() throws {
        let dir = try TempDir()
        var config = AuditConfiguration.test(dir.file("audit.log"))
        config.queueCapacity = 4
        let w = try AuditWriter(config)
        w.flush()
        w.pauseWriting()
        var accepted = 0
        for i in 0..<10 {
            let deny = i % 2 == 0
            if w.record(event: "control", tenant: i < 8 ? "alpha" : "beta", verb: "reg_mr",
                        decision: deny ? .deny : .allow, reason: "n\(i)") { accepted += 1 }
        }
        XCTAssertEqual(accepted, 4)
        XCTAssertEqual(w.statistics.dropped, 6)
        XCTAssertEqual(w.statistics.queueHighWater, 4)
        w.resumeWriting()
        w.close()

        let records = try Log.records(dir.file("audit.log"))
        XCTAssertEqual(records.map(\.event), ["audit.open", "control", "control", "control", "control", "audit.loss", "audit.close"])
        XCTAssertEqual(records[1...4].map { $0.reason! }, ["n0", "n1", "n2", "n3"])
        let loss = records[5]
        XCTAssertEqual(loss.fields["lost"], "6")
        XCTAssertEqual(loss.fields["lostDenials"], "3")  // n4, n6, n8
        XCTAssertEqual(loss.fields["lostByTenant"], "alpha=4,beta=2")
        XCTAssertEqual(loss.fields["cause"], "queue full (capacity 4)")
        XCTAssertNotNil(loss.fields["firstLost"])
        XCTAssertEqual(records[6].fields["dropped"], "6")
        XCTAssertTrue(AuditVerifier().verify(files: [dir.file("audit.log")]).ok)
    }

    func testFsyncWaitsForTheInterval() throws {
        let dir = try TempDir()
        let clock = ManualAuditClock()
        var config = AuditConfiguration.test(dir.file("audit.log"), clock: clock)
        config.fsyncInterval = .seconds(5)
        let w = try AuditWriter(config)
        let syncsAtOpen = w.statistics.syncs
        XCTAssertEqual(syncsAtOpen, 1, "audit.open is fsynced before init returns")
        for i in 0..<100 { w.record(event: "e\(i)") }
        try waitUntil { w.statistics.written == 100 }
        clock.advance(seconds: 4.9)
        w.wake()
        try waitUntil { w.statistics.written == 100 }
        Thread.sleep(forTimeInterval: 0.05)
        XCTAssertEqual(w.statistics.syncs, syncsAtOpen, "no fsync before the interval")
        clock.advance(seconds: 0.2)
        w.wake()
        try waitUntil { w.statistics.syncs == syncsAtOpen + 1 }
        w.close()
    }

    func testCheckpointsAtOpenIntervalAndClose() throws {
        let dir = try TempDir()
        let clock = ManualAuditClock()
        var config = AuditConfiguration.test(dir.file("audit.log"), key: try dir.keyFile(), clock: clock)
        config.checkpointInterval = .seconds(60)
        let w = try AuditWriter(config)
        XCTAssertEqual(try Log.lines(dir.file("audit.log.checkpoints")).count, 1, "signed at open")
        w.record(event: "a")
        w.flush()
        XCTAssertEqual(try Log.lines(dir.file("audit.log.checkpoints")).count, 1, "not yet due")
        clock.advance(seconds: 61)
        w.flush()
        XCTAssertEqual(try Log.lines(dir.file("audit.log.checkpoints")).count, 2, "due after the interval")
        clock.advance(seconds: 61)
        w.flush()
        XCTAssertEqual(try Log.lines(dir.file("audit.log.checkpoints")).count, 2, "nothing new to sign")
        w.close()
        let lines = try Log.lines(dir.file("audit.log.checkpoints"))
        XCTAssertEqual(lines.count, 3, "signed at close")
        let key = try AuditKey(file: dir.file("audit.key"))
        let checkpoints = try lines.map { try AuditCheckpoint(line: Array($0.utf8)) }
        XCTAssertTrue(checkpoints.allSatisfy { $0.isAuthentic(under: key) })
        let records = try Log.records(dir.file("audit.log"))
        XCTAssertEqual(checkpoints.map(\.seq), [1, 2, 3])
        XCTAssertEqual(checkpoints.last?.hash, records.last?.hash)
        XCTAssertEqual(records[0].fields["checkpoints"], "hmac-sha256 in audit.log.checkpoints")
        let result = AuditVerifier().verify(files: [dir.file("audit.log")], checkpoints: dir.file("audit.log.checkpoints"), key: key)
        XCTAssertTrue(result.ok, "\(result.problems)")
        XCTAssertEqual(result.checkpoints?.authentic, 3)
        XCTAssertEqual(result.recordsAfterNewestCheckpoint, 0)
    }

    func testRotationKeepsTheChain() throws {
        let dir = try TempDir()
        var config = AuditConfiguration.test(dir.file("audit.log"), key: try dir.keyFile())
        config.rotateBytes = 2000
        let w = try AuditWriter(config)
        for i in 0..<60 {
            w.record(event: "control", tenant: "alpha", verb: "reg_mr", decision: .allow, reason: "record \(i)")
            if i % 7 == 0 { w.flush() }
        }
        w.close()
        let files = try AuditLogFiles.chainOrder(of: dir.file("audit.log"))
        XCTAssertGreaterThanOrEqual(files.count, 4)
        XCTAssertEqual(files.last, dir.file("audit.log"))
        XCTAssertEqual(files.first, dir.file("audit.log.1"))
        XCTAssertEqual(Int64(w.statistics.rotations), Int64(files.count - 1))
        var previousLast: AuditRecord?
        for (i, f) in files.enumerated() {
            let records = try Log.records(f)
            if let previousLast {
                XCTAssertEqual(records.first?.prev, previousLast.hash, "\(f) continues the chain")
                XCTAssertEqual(records.first?.seq, previousLast.seq + 1)
                XCTAssertEqual(records.first?.event, "audit.rotate")
                XCTAssertEqual(records.first?.fields["previousFile"], "audit.log.\(i)")
            }
            if i < files.count - 1 {
                let size = try FileManager.default.attributesOfItem(atPath: f)[.size] as! Int
                XCTAssertGreaterThanOrEqual(size, 2000)
                XCTAssertLessThan(size, 2000 + 400, "at most one record over")
            }
            previousLast = records.last
        }
        let key = try AuditKey(file: dir.file("audit.key"))
        let result = AuditVerifier().verify(files: files, checkpoints: dir.file("audit.log.checkpoints"), key: key)
        XCTAssertTrue(result.ok, "\(result.problems)")
        XCTAssertEqual(result.records, 60 + 2 + files.count - 1)
        // A checkpoint was signed before each rotation, at the old file's last record.
        let signed = Set(try Log.lines(dir.file("audit.log.checkpoints")).map { try AuditCheckpoint(line: Array($0.utf8)).seq })
        for f in files.dropLast() { XCTAssertTrue(signed.contains(try Log.records(f).last!.seq), f) }
        // Verifying the active file alone: the chain starts mid-way.
        XCTAssertEqual(AuditVerifier().verify(files: [dir.file("audit.log")]).firstError?.kind, .chainStart)
        XCTAssertTrue(AuditVerifier(options: .init(allowsPartialStart: true)).verify(files: [dir.file("audit.log")]).ok)
    }

    func testReopenContinuesTheChain() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        try writeSampleLog(.test(path), count: 5)
        let first = try Log.records(path)
        try writeSampleLog(.test(path), count: 5)
        let all = try Log.records(path)
        XCTAssertEqual(all.count, first.count * 2)
        let reopened = all[first.count]
        XCTAssertEqual(reopened.event, "audit.open")
        XCTAssertEqual(reopened.prev, first.last!.hash)
        XCTAssertEqual(reopened.seq, first.last!.seq + 1)
        XCTAssertEqual(reopened.fields["continues"], "seq \(first.last!.seq) in audit.log")
        XCTAssertNil(reopened.fields["tornTailBytes"])
        XCTAssertTrue(AuditVerifier().verify(files: [path]).ok)
    }

    func testReopenAfterATornTailCutsItAndSaysSo() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        try writeSampleLog(.test(path), count: 3)
        let before = try Log.records(path)
        var bytes = try Log.bytes(path)
        bytes += Array(#"{"event":"control","fi"#.utf8)
        try Log.writeBytes(bytes, to: path)
        XCTAssertEqual(AuditVerifier().verify(files: [path]).firstError?.kind, .tornLine)

        let w = try AuditWriter(.test(path))
        w.close()
        let after = try Log.records(path)
        let open = after[before.count]
        XCTAssertEqual(open.event, "audit.open")
        XCTAssertEqual(open.prev, before.last!.hash)
        XCTAssertEqual(open.fields["tornTailBytes"], "22")
        XCTAssertEqual(open.fields["tornTail"], #"{"event":"control","fi"#)
        XCTAssertTrue(AuditVerifier().verify(files: [path]).ok)
    }

    func testReopenAfterRotationWithNoActiveFileContinuesFromTheNewestRotatedFile() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        try writeSampleLog(.test(path), count: 4)
        let last = try Log.records(path).last!
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")  // a crash right after the rename
        let w = try AuditWriter(.test(path))
        w.close()
        let records = try Log.records(path)
        XCTAssertEqual(records.first?.prev, last.hash)
        XCTAssertEqual(records.first?.fields["continues"], "seq \(last.seq) in audit.log.1")
        XCTAssertTrue(AuditVerifier().verify(files: try AuditLogFiles.chainOrder(of: path)).ok)
    }

    func testRefusesToContinueALogWhoseLastLineIsNotARecord() throws {
        let dir = try TempDir()
        let path = dir.file("audit.log")
        let found = Array("hello\n{\"torn".utf8)
        try Log.writeBytes(found, to: path)
        XCTAssertThrowsError(try AuditWriter(.test(path))) { e in
            XCTAssertTrue("\(e)".contains("is not an audit record"), "\(e)")
            XCTAssertTrue("\(e)".contains("sluice audit verify"), "\(e)")
        }
        XCTAssertEqual(try Log.bytes(path), found, "left as found, torn tail included")
    }

    func testConfigurationErrors() throws {
        let dir = try TempDir()
        var c = AuditConfiguration.test(dir.file("audit.log"))
        c.checkpointPath = dir.file("ck")
        XCTAssertThrowsError(try AuditWriter(c)) { XCTAssertTrue("\($0)".contains("need a key file"), "\($0)") }
        c = .test(dir.file("audit.log"))
        c.queueCapacity = 0
        XCTAssertThrowsError(try AuditWriter(c))
        let weak = dir.file("weak.key")
        try Data("short".utf8).write(to: URL(fileURLWithPath: weak))
        chmod(weak, 0o600)
        XCTAssertThrowsError(try AuditWriter(.test(dir.file("audit.log"), key: weak))) { XCTAssertTrue("\($0)".contains("at least 16"), "\($0)") }
        let open = try dir.keyFile("open.key")
        chmod(open, 0o644)
        XCTAssertThrowsError(try AuditWriter(.test(dir.file("audit.log"), key: open))) { XCTAssertTrue("\($0)".contains("chmod 600"), "\($0)") }
    }

    func testFailedWritesAreCutBackAndReportedAsLoss() throws {
        // RLIMIT_FSIZE makes writes past 3000 bytes fail (EFBIG) part-way,
        // as a full disk would.
        let dir = try TempDir()
        let path = dir.file("audit.log")
        let w = try AuditWriter(.test(path))
        w.flush()
        signal(SIGXFSZ, SIG_IGN)
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        var limited = saved
        limited.rlim_cur = 3000
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limited)
        for i in 0..<30 {
            w.record(event: "control", tenant: "alpha", verb: "reg_mr", decision: .deny, reason: "record \(i) " + String(repeating: "x", count: 100))
            if i % 5 == 4 { w.flush() }
        }
        w.flush()
        setrlimit(Int32(RLIMIT_FSIZE.rawValue), &saved)
        signal(SIGXFSZ, SIG_DFL)
        XCTAssertGreaterThan(w.statistics.writeErrors, 0)
        w.record(event: "control", tenant: "alpha", reason: "after")
        w.close()

        let result = AuditVerifier().verify(files: [path])
        XCTAssertTrue(result.ok, "the failed writes left no torn record: \(result.problems)")
        let records = try Log.records(path)
        let losses = records.filter { $0.event == "audit.loss" }
        XCTAssertEqual(losses.count, 1)
        XCTAssertTrue(losses[0].fields["cause"]?.hasPrefix("write failed: ") ?? false, "\(losses[0].fields)")
        let written = records.filter { $0.event == "control" && $0.reason != "after" }.count
        XCTAssertEqual(written + Int(losses[0].fields["lost"]!)!, 30, "every record is either in the file or counted as lost")
        XCTAssertEqual(losses[0].fields["lostByTenant"], "alpha=\(30 - written)")
        XCTAssertEqual(records.last?.event, "audit.close")
    }

    func testConcurrentWritersKeepOneChain() throws {
        let dir = try TempDir()
        let w = try AuditWriter(.test(dir.file("audit.log")))
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for i in 0..<500 { w.record(event: "control", tenant: "t\(t)", reason: "\(i)") }
        }
        w.close()
        let result = AuditVerifier().verify(files: [dir.file("audit.log")])
        XCTAssertTrue(result.ok, "\(result.problems)")
        XCTAssertEqual(result.records, 2002)
    }
}

/// Polls a condition the writer thread will make true; fails after 10 s.
func waitUntil(_ condition: () -> Bool, file: StaticString = #filePath, line: UInt = #line) throws {
    let deadline = Date().addingTimeInterval(10)
    while !condition() {
        if Date() > deadline {
            XCTFail("timed out", file: file, line: line)
            throw AuditError("timed out")
        }
        Thread.sleep(forTimeInterval: 0.002)
    }
}
