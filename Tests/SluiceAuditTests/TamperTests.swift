import Foundation
import XCTest
@testable import SluiceAudit

/// Each way a log can be tampered with, and where `verify` must point.
/// The log is made by the real writer (22 records: audit.open, 20 events,
/// audit.close) with a checkpoint at open and at close.
final class TamperTests: XCTestCase {
    var dir: TempDir!
    var log: String { dir.file("audit.log") }
    var checkpoints: String { dir.file("audit.log.checkpoints") }
    var key: AuditKey!
    var lines: [String] = []

    override func setUpWithError() throws {
        dir = try TempDir()
        try writeSampleLog(.test(log, key: try dir.keyFile()))
        key = try AuditKey(file: dir.file("audit.key"))
        lines = try Log.lines(log)
        XCTAssertEqual(lines.count, 22)
    }

    func verify() -> AuditVerifier.Result {
        AuditVerifier().verify(files: [log], checkpoints: checkpoints, key: key)
    }

    /// Asserts the first problem is `kind` at `line` with `seq`, and returns it.
    @discardableResult
    func assertFirst(_ kind: AuditProblem.Kind, line: Int, seq: UInt64?, file: String? = nil,
                     _ sourceFile: StaticString = #filePath, _ sourceLine: UInt = #line) -> AuditProblem? {
        let result = verify()
        XCTAssertFalse(result.ok, file: sourceFile, line: sourceLine)
        guard let p = result.firstError else { return nil }
        XCTAssertEqual(p.kind, kind, "\(result.problems)", file: sourceFile, line: sourceLine)
        XCTAssertEqual(p.file, file ?? log, file: sourceFile, line: sourceLine)
        XCTAssertEqual(p.line, line, "\(p)", file: sourceFile, line: sourceLine)
        XCTAssertEqual(p.seq, seq, "\(p)", file: sourceFile, line: sourceLine)
        return p
    }

    func testUntouchedLogVerifies() {
        let result = verify()
        XCTAssertTrue(result.ok, "\(result.problems)")
        XCTAssertEqual(result.records, 22)
        XCTAssertEqual(result.firstSeq, 1)
        XCTAssertEqual(result.lastSeq, 22)
        XCTAssertEqual(result.checkpoints?.authentic, 2)
        XCTAssertEqual(result.checkpoints?.newestSeq, 22)
    }

    func testFlippedByteInAValue() throws {
        // "at most 4 memory regions" -> "at most 5 memory regions" in record 4.
        XCTAssertTrue(lines[3].contains("at most 4"))
        lines[3] = lines[3].replacingOccurrences(of: "at most 4", with: "at most 5")
        try Log.write(lines, to: log)
        let p = assertFirst(.hashMismatch, line: 4, seq: 4)
        XCTAssertTrue(p?.message.contains("changed after it was written") ?? false)
        XCTAssertEqual(verify().problems.count, 1, "one edit, one problem: \(verify().problems)")
    }

    func testEveryFlippedBitIsCaughtAtItsRecord() throws {
        // Flip one bit of every byte of record 6, one at a time: each flip
        // is caught at line 6 (or, if it hits the newline, as a break there).
        let original = try Log.bytes(log)
        let start = lines[0..<5].reduce(0) { $0 + $1.utf8.count + 1 }
        for i in start..<(start + lines[5].utf8.count) {
            var bytes = original
            bytes[i] ^= 0x01
            try Log.writeBytes(bytes, to: log)
            let result = verify()
            XCTAssertEqual(result.firstError?.line, 6, "byte \(i - start): \(result.problems)")
        }
    }

    func testAnyChangedByteAnywhereIsCaught() throws {
        // Every byte of the first, a middle and the last record (newlines
        // included), replaced by a random other value: verification never
        // passes and never crashes.
        let original = try Log.bytes(log)
        var rng = SystemRandomNumberGenerator()
        let offsets = lines.indices.map { i in lines[0..<i].reduce(0) { $0 + $1.utf8.count + 1 } }
        let positions = [0, 10, 21].flatMap { i in offsets[i]...(offsets[i] + lines[i].utf8.count) }
        for i in positions {
            var bytes = original
            bytes[i] ^= UInt8.random(in: 1...255, using: &rng)
            try Log.writeBytes(bytes, to: log)
            XCTAssertFalse(verify().ok, "byte \(i) changed from \(original[i]) to \(bytes[i])")
        }
    }

    func testDeletedRecord() throws {
        lines.remove(at: 9)  // seq 10
        try Log.write(lines, to: log)
        let p = assertFirst(.missing, line: 10, seq: 11)
        XCTAssertTrue(p?.message.contains("record 10 is missing") ?? false, p?.message ?? "")
        XCTAssertEqual(verify().problems.count, 1, "\(verify().problems)")
    }

    func testDeletedFirstRecord() throws {
        lines.removeFirst()
        try Log.write(lines, to: log)
        assertFirst(.chainStart, line: 1, seq: 2)
    }

    func testInsertedCopyOfAnEarlierRecord() throws {
        lines.insert(lines[2], at: 12)  // seq 3 again, between 12 and 13
        try Log.write(lines, to: log)
        let p = assertFirst(.inserted, line: 13, seq: 3)
        XCTAssertTrue(p?.message.contains("seq 13") ?? false, p?.message ?? "")
        XCTAssertEqual(verify().problems.count, 1, "\(verify().problems)")
    }

    func testInsertedForgedRecordThatLinksCorrectly() throws {
        // The forger knows the format: seq 13, prev = hash of 12, a correct
        // hash. Only the record after it gives it away.
        let twelve = try AuditRecord(line: Array(lines[11].utf8))
        var forged = AuditRecord(seq: 13, time: twelve.time, host: "testhost", tenant: "beta", event: "control",
                                 verb: "reg_mr", decision: .allow, prev: twelve.hash)
        let line = String(decoding: forged.seal().dropLast(), as: UTF8.self)
        lines.insert(line, at: 12)
        try Log.write(lines, to: log)
        assertFirst(.inserted, line: 13, seq: 13)
        XCTAssertEqual(verify().problems.count, 1, "\(verify().problems)")
    }

    func testInsertedGarbageLine() throws {
        lines.insert("{\"event\":\"control\"}", at: 7)
        try Log.write(lines, to: log)
        assertFirst(.unreadable, line: 8, seq: nil)
        XCTAssertEqual(verify().problems.count, 1, "\(verify().problems)")
    }

    func testSwappedRecords() throws {
        lines.swapAt(14, 15)  // seq 15 and 16
        try Log.write(lines, to: log)
        let p = assertFirst(.swapped, line: 15, seq: 16)
        XCTAssertTrue(p?.message.contains("swapped") ?? false)
        XCTAssertEqual(verify().problems.count, 1, "\(verify().problems)")
    }

    func testTruncatedTailIsCaughtThroughTheCheckpoint() throws {
        lines.removeLast(3)  // seq 20, 21, 22 gone, on a line boundary
        try Log.write(lines, to: log)
        XCTAssertTrue(AuditVerifier().verify(files: [log]).ok, "without checkpoints a clean cut is invisible")
        let p = assertFirst(.truncated, line: 20, seq: 20)
        XCTAssertTrue(p?.message.contains("records 20…22 were removed") ?? false, p?.message ?? "")
    }

    func testRewrittenChainIsCaughtThroughTheCheckpoint() throws {
        // Edit record 5 and recompute every hash after it: the chain is
        // consistent again, but the checkpoint at close pins the old head.
        var records = try lines.map { try AuditRecord(line: Array($0.utf8)) }
        records[4].reason = "nothing to see"
        for i in 4..<records.count {
            if i > 0 { records[i].prev = records[i - 1].hash }
            lines[i] = String(decoding: records[i].seal().dropLast(), as: UTF8.self)
        }
        try Log.write(lines, to: log)
        XCTAssertTrue(AuditVerifier().verify(files: [log]).ok)
        let p = assertFirst(.checkpointMismatch, line: 22, seq: 22)
        XCTAssertTrue(p?.message.contains("rewritten") ?? false)
    }

    func testForgedCheckpoint() throws {
        // A checkpoint made with another key, claiming a later head.
        let other = try AuditKey(bytes: Array(repeating: 7, count: 32))
        let records = try Log.records(log)
        let forged = AuditCheckpoint.sign(seq: 40, hash: records.last!.hash, time: AuditTimestamp(nanosecondsSinceEpoch: 0), key: other)
        var cp = try Log.lines(checkpoints)
        cp.append(String(decoding: forged.lineBytes, as: UTF8.self))
        try Log.write(cp, to: checkpoints)
        let result = verify()
        XCTAssertEqual(result.problems.count, 1, "a forged checkpoint is not trusted for truncation: \(result.problems)")
        assertFirst(.checkpointForged, line: 3, seq: 40, file: checkpoints)
    }

    func testAlteredCheckpoint() throws {
        var cp = try Log.lines(checkpoints)
        cp[1] = cp[1].replacingOccurrences(of: "\"seq\":22", with: "\"seq\":21")
        try Log.write(cp, to: checkpoints)
        assertFirst(.checkpointForged, line: 2, seq: 21, file: checkpoints)
    }

    func testVerifyingWithTheWrongKeyFlagsEveryCheckpoint() throws {
        let result = AuditVerifier().verify(files: [log], checkpoints: checkpoints, key: try AuditKey(bytes: Array(repeating: 1, count: 32)))
        XCTAssertEqual(result.problems.map(\.kind), [.checkpointForged, .checkpointForged])
    }

    func testTornLastLine() throws {
        var bytes = try Log.bytes(log)
        bytes.removeLast(30)
        try Log.writeBytes(bytes, to: log)
        let result = verify()
        XCTAssertEqual(result.firstError?.kind, .tornLine)
        XCTAssertEqual(result.firstError?.line, 22)
        XCTAssertTrue(result.firstError?.message.contains("after seq 21") ?? false, result.firstError?.message ?? "")
        XCTAssertEqual(result.lastSeq, 21, "the records before it are intact")
        // The cut also removed a checkpointed record.
        XCTAssertEqual(result.problems.map(\.kind), [.tornLine, .truncated])
    }

    func testTornLineInAnEarlierFile() throws {
        var bytes = try Log.bytes(log)
        bytes.removeLast(1)
        try Log.writeBytes(bytes, to: dir.file("audit.log.1"))
        let result = AuditVerifier().verify(files: [dir.file("audit.log.1"), log])
        XCTAssertEqual(result.firstError?.kind, .tornLine)
        XCTAssertEqual(result.firstError?.file, dir.file("audit.log.1"))
        XCTAssertTrue(result.firstError?.message.contains("not the last file") ?? false)
    }

    func testNonCanonicalSpacing() throws {
        lines[6] = lines[6].replacingOccurrences(of: "\",\"host\"", with: "\", \"host\"")
        try Log.write(lines, to: log)
        assertFirst(.notCanonical, line: 7, seq: 7)
    }

    func testEmptyAndMissingFiles() throws {
        try Log.write([], to: log)
        XCTAssertEqual(AuditVerifier().verify(files: [log]).firstError?.kind, .empty)
        XCTAssertEqual(AuditVerifier().verify(files: [dir.file("nope")]).firstError?.kind, .unreadableFile)
    }
}
