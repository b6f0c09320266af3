import Foundation
import XCTest
@testable import SluiceAudit

/// `sluice audit` through the real binary, as an operator runs it.
final class CLITests: XCTestCase {
    var dir: TempDir!
    var log: String { dir.file("audit.log") }
    var checkpoints: String { dir.file("audit.log.checkpoints") }
    var keyFile: String { dir.file("audit.key") }

    override func setUpWithError() throws {
        dir = try TempDir()
        _ = try dir.keyFile()
        try writeSampleLog(.test(log, key: keyFile))
    }

    // MARK: verify

    func testVerifyCleanLog() throws {
        let r = try Sluice.run(["audit", "verify", log, "--checkpoints", checkpoints, "--key-file", keyFile])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.out.contains("\(log): 22 lines, seq 1–22"), r.out)
        XCTAssertTrue(r.out.contains("2 authentic, newest at seq 22"), r.out)
        XCTAssertTrue(r.out.contains("OK: 22 records, seq 1–22, chain intact; the newest checkpoint vouches for seq 22"), r.out)
    }

    func testVerifyWithoutCheckpointsSaysWhatItCannotSee() throws {
        let r = try Sluice.run(["audit", "verify", log])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.out.contains("No checkpoints given: a removed tail would not show"), r.out)
    }

    func testVerifyNamesTheFirstBadRecordAndExitsNonZero() throws {
        var lines = try Log.lines(log)
        lines.swapAt(14, 15)
        lines[3] = lines[3].replacingOccurrences(of: "at most 4", with: "at most 9")
        try Log.write(lines, to: log)
        let r = try Sluice.run(["audit", "verify", log, "--checkpoints", checkpoints, "--key-file", keyFile])
        XCTAssertEqual(r.status, 1, r.all)
        XCTAssertTrue(r.out.contains("FAILED: \(log):4 (seq 4): hash mismatch"), r.out)
        XCTAssertTrue(r.out.contains("1 further problem:\n  \(log):15 (seq 16): records out of order: seq 16 comes before seq 15"), r.out)
    }

    func testVerifyJSONParsesBack() throws {
        var lines = try Log.lines(log)
        lines.removeLast(2)
        try Log.write(lines, to: log)
        let r = try Sluice.run(["audit", "verify", log, "--checkpoints", checkpoints, "--key-file", keyFile, "--json"])
        XCTAssertEqual(r.status, 1, r.all)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        XCTAssertEqual(obj["ok"] as? Bool, false)
        XCTAssertEqual(obj["records"] as? Int, 20)
        XCTAssertEqual(obj["lastSeq"] as? Int, 20)
        let first = try XCTUnwrap(obj["firstError"] as? [String: Any])
        XCTAssertEqual(first["kind"] as? String, "truncated")
        XCTAssertEqual(first["file"] as? String, log)
        XCTAssertEqual(first["line"] as? Int, 21)
        XCTAssertEqual(first["seq"] as? Int, 21)
        let cp = try XCTUnwrap(obj["checkpoints"] as? [String: Any])
        XCTAssertEqual(cp["newestSeq"] as? Int, 22)
        XCTAssertEqual((obj["problems"] as? [Any])?.count, 1)
    }

    func testVerifyForgedCheckpointWithTheWrongKey() throws {
        let other = try dir.keyFile("other.key", byte: 0x17)
        let r = try Sluice.run(["audit", "verify", log, "--checkpoints", checkpoints, "--key-file", other])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.out.contains("FAILED: \(checkpoints):1 (seq 1): the checkpoint's HMAC does not verify"), r.out)
    }

    func testVerifyTornLastLine() throws {
        var bytes = try Log.bytes(log)
        bytes.removeLast(10)
        try Log.writeBytes(bytes, to: log)
        let r = try Sluice.run(["audit", "verify", log])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.out.contains("FAILED: \(log):22: torn last line"), r.out)
    }

    func testVerifyPicksUpRotatedFiles() throws {
        let d2 = try TempDir()
        var c = AuditConfiguration.test(d2.file("audit.log"))
        c.rotateBytes = 1500
        try writeSampleLog(c, count: 30)
        let r = try Sluice.run(["audit", "verify", d2.file("audit.log")])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.out.hasPrefix("(with rotated files \(d2.file("audit.log.1")), "), r.out)
        XCTAssertTrue(r.out.contains("OK: 32 records, seq 1–32") || r.out.contains("OK: "), r.out)
        let only = try Sluice.run(["audit", "verify", d2.file("audit.log"), "--no-rotated"])
        XCTAssertEqual(only.status, 1)
        XCTAssertTrue(only.out.contains("the chain starts at seq"), only.out)
        XCTAssertEqual(try Sluice.run(["audit", "verify", d2.file("audit.log"), "--no-rotated", "--partial"]).status, 0)
    }

    func testVerifyUsageErrors() throws {
        let r = try Sluice.run(["audit", "verify", log, "--checkpoints", checkpoints])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("--checkpoints and --key-file go together"), r.err)
    }

    // MARK: search

    func testSearchFiltersAndJSONParsesBack() throws {
        let r = try Sluice.run(["audit", "search", log, "--tenant", "alpha", "--decision", "deny", "--json"])
        XCTAssertEqual(r.status, 0, r.all)
        let lines = r.out.split(separator: "\n").map(String.init)
        let expected = try Log.records(log).filter { $0.tenant == "alpha" && $0.decision == .deny }
        XCTAssertFalse(expected.isEmpty)
        XCTAssertEqual(lines.count, expected.count)
        for (line, want) in zip(lines, expected) {
            let got = try AuditRecord(line: Array(line.utf8))
            XCTAssertEqual(got, want, "the line as written")
            XCTAssertEqual(got.computedHash, got.hash)
            let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            XCTAssertEqual(obj["tenant"] as? String, "alpha")
            XCTAssertEqual(obj["decision"] as? String, "deny")
        }
    }

    func testSearchByQPVerbRulePidAndTime() throws {
        // Sample log: record i (from 0) is at 00:00:(i+1); i = 1 is create_qp
        // "qp 1 qpn 0x11" (alpha), i = 3 a post_send denial on "qpn 0x11" (beta).
        let qp = try Sluice.run(["audit", "search", log, "--qp", "0x11"])
        XCTAssertEqual(qp.status, 0, qp.all)
        XCTAssertEqual(qp.out.split(separator: "\n").count, 2, qp.out)
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--qp", "17", "--count"]).out, "2\n")
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--verb", "post_send", "--rule", "opcodes", "--count"]).out, "4\n")
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--pid", "1003", "--count"]).out, "5\n")
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--event", "session.open", "--count"]).out, "4\n")
        let window = try Sluice.run(["audit", "search", log, "--since", "2025-01-01T00:00:03Z", "--until", "2025-01-01T00:00:04Z"])
        XCTAssertEqual(window.out.split(separator: "\n").map { $0.prefix(30) }, ["2025-01-01T00:00:03.000000000Z", "2025-01-01T00:00:04.000000000Z"])
        // Relative times are relative to now: the 2025 sample is older than a day.
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--since", "1d"]).status, 1)
        XCTAssertEqual(try Sluice.run(["audit", "search", log, "--until", "1d", "--count"]).out, "22\n")
    }

    func testSearchTextFormat() throws {
        let r = try Sluice.run(["audit", "search", log, "--verb", "reg_mr"])
        let first = r.out.split(separator: "\n").first.map(String.init) ?? ""
        XCTAssertEqual(first, #"2025-01-01T00:00:03.000000000Z seq=4 event=control tenant=alpha pid=1002 uid=1000 session=3 verb=reg_mr decision=deny rule=quota.mr reason="at most 4 memory regions""#)
    }

    func testSearchNoMatchAndBadInput() throws {
        let none = try Sluice.run(["audit", "search", log, "--tenant", "nobody"])
        XCTAssertEqual(none.status, 1)
        XCTAssertEqual(none.out, "")
        XCTAssertTrue(none.err.contains("<no matches>"))
        let badTime = try Sluice.run(["audit", "search", log, "--since", "last tuesday"])
        XCTAssertNotEqual(badTime.status, 0)
        XCTAssertTrue(badTime.err.contains("--since last tuesday: not a time"), badTime.err)
        let badDecision = try Sluice.run(["audit", "search", log, "--decision", "maybe"])
        XCTAssertTrue(badDecision.err.contains("--decision must be allow or deny"), badDecision.err)
    }

    func testSearchSkipsUnreadableLinesWithAWarning() throws {
        var lines = try Log.lines(log)
        lines.insert("garbage", at: 3)
        try Log.write(lines, to: log)
        let r = try Sluice.run(["audit", "search", log, "--count"])
        XCTAssertEqual(r.out, "22\n")
        XCTAssertTrue(r.err.contains("1 line is not records (first at \(log):4)") || r.err.contains("1 line is not"), r.err)
    }

    // MARK: report

    func testReportJSONParsesBack() throws {
        let r = try Sluice.run(["audit", "report", log, "--json"])
        XCTAssertEqual(r.status, 0, r.all)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        XCTAssertEqual(obj["records"] as? Int, 22)
        XCTAssertEqual(obj["lostRecords"] as? Int, 0)
        let tenants = try XCTUnwrap(obj["tenants"] as? [[String: Any]])
        XCTAssertEqual(tenants.map { $0["tenant"] as? String }, ["alpha", "beta", "(router)"])
        // Cross-check alpha against the records themselves.
        let records = try Log.records(log).filter { $0.tenant == "alpha" }
        let alpha = tenants[0]
        XCTAssertEqual(alpha["records"] as? Int, records.count)
        XCTAssertEqual(alpha["deny"] as? Int, records.filter { $0.decision == .deny }.count)
        XCTAssertEqual(alpha["allow"] as? Int, records.filter { $0.decision == .allow }.count)
        XCTAssertEqual(alpha["sessionsOpened"] as? Int, records.filter { $0.event == "session.open" }.count)
        XCTAssertEqual(alpha["sessionsClosed"] as? Int, records.filter { $0.event == "session.close" }.count)
        let rules = try XCTUnwrap(alpha["topDenialRules"] as? [[String: Any]])
        let denials = records.filter { $0.decision == .deny }
        XCTAssertEqual(Set(rules.map { $0["name"] as! String }), Set(denials.map { $0.rule! }))
        XCTAssertEqual(rules.map { $0["count"] as! Int }.reduce(0, +), denials.count)
        let verbs = try XCTUnwrap(alpha["topDeniedVerbs"] as? [[String: Any]])
        XCTAssertEqual(Set(verbs.map { $0["name"] as! String }), ["reg_mr", "post_send"])
    }

    func testReportTextShowsLoss() throws {
        let d2 = try TempDir()
        var c = AuditConfiguration.test(d2.file("audit.log"))
        c.queueCapacity = 2
        let w = try AuditWriter(c)
        w.flush()
        w.pauseWriting()
        for _ in 0..<5 { w.record(event: "control", tenant: "alpha", verb: "create_qp", decision: .deny, rule: "quota.qp") }
        w.resumeWriting()
        w.close()
        let r = try Sluice.run(["audit", "report", d2.file("audit.log")])
        XCTAssertEqual(r.status, 0, r.all)
        XCTAssertTrue(r.out.contains("LOST: 3 records in 1 audit.loss record: the log is incomplete"), r.out)
        XCTAssertTrue(r.out.contains("alpha: top denial rules\n       2  quota.qp"), r.out)
        XCTAssertTrue(r.out.contains("tenant    records  allow  deny  throttle  sessions o/c/r  datapath allows"), r.out)
    }

    // MARK: tail

    func testTailPrintsTheLastRecords() throws {
        let r = try Sluice.run(["audit", "tail", "-n", "3", log, "--json"])
        XCTAssertEqual(r.status, 0, r.all)
        let want = try Log.lines(log).suffix(3)
        XCTAssertEqual(r.out.split(separator: "\n").map(String.init), Array(want))
    }

    func testTailFollowsAcrossRotation() throws {
        let d2 = try TempDir()
        var c = AuditConfiguration.test(d2.file("audit.log"))
        c.rotateBytes = 3000
        let w = try AuditWriter(c)
        w.flush()
        let tail = try Sluice.start(["audit", "tail", "-f", "-n", "0", "--interval", "20", "--json", d2.file("audit.log")])
        defer { tail.stop() }
        Thread.sleep(forTimeInterval: 0.2)
        for i in 0..<80 {
            w.record(event: "control", tenant: "alpha", verb: "reg_mr", decision: .allow, reason: "record \(i)")
            if i % 10 == 0 { w.flush() }
        }
        w.close()
        XCTAssertGreaterThanOrEqual(w.statistics.rotations, 3)
        let lastSeq = try Log.records(d2.file("audit.log")).last!.seq
        let out = try tail.waitForOutput { $0.contains("\"seq\":\(lastSeq),") }
        let seqs = try out.split(separator: "\n").map { try AuditRecord(line: Array($0.utf8)).seq }
        XCTAssertEqual(seqs, Array(2...lastSeq), "every record after audit.open, once, in order, across \(w.statistics.rotations) rotations")
        XCTAssertTrue(tail.stderr.contains("was rotated"), tail.stderr)
        XCTAssertFalse(tail.stderr.contains("chain problem"), tail.stderr)
    }

    // MARK: help

    func testHelpExplainsTheSubcommands() throws {
        let r = try Sluice.run(["audit", "--help"])
        XCTAssertEqual(r.status, 0)
        for s in ["verify", "search", "report", "tail", "sluice audit search $L --tenant alpha --decision deny --since 1h"] {
            XCTAssertTrue(r.out.contains(s), s)
        }
        let v = try Sluice.run(["audit", "verify", "--help"])
        XCTAssertTrue(v.out.contains("Exit status: 0 when the log is intact, 1 when a problem was found"), v.out)
        let s = try Sluice.run(["audit", "search", "--help"])
        XCTAssertTrue(s.out.contains("--since <time>"), s.out)
        XCTAssertTrue(s.out.contains("today, yesterday"), s.out)
    }
}

/// The `sluice` binary beside the test executable.
enum Sluice {
    static let binary: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
        if url.lastPathComponent.hasSuffix(".xctest") { url = url.deletingLastPathComponent() }
        return url.appendingPathComponent("sluice").path
    }()

    struct Result {
        var status: Int32
        var out: String
        var err: String
        var all: String { "status \(status)\nstdout:\n\(out)\nstderr:\n\(err)" }
    }

    static func run(_ args: [String]) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw AuditError("\(binary) is missing: build it with `swift build --build-tests`")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Read both pipes to the end before waiting, so a full pipe cannot stall the child.
        let errData = ErrCollector()
        let errReader = Thread { errData.set(err.fileHandleForReading.readDataToEndOfFile()) }
        errReader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, out: String(decoding: outData, as: UTF8.self),
                      err: String(decoding: errData.wait(), as: UTF8.self))
    }

    final class ErrCollector: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var data = Data()
        func set(_ d: Data) {
            data = d
            done.signal()
        }
        func wait() -> Data {
            done.wait()
            return data
        }
    }

    static func start(_ args: [String]) throws -> Running {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw AuditError("\(binary) is missing: build it with `swift build --build-tests`")
        }
        return try Running(args)
    }

    /// A long-running `sluice` (tail -f) whose output is collected as it comes.
    final class Running {
        private let p = Process()
        private let lock = NSLock()
        private var out = Data()
        private var err = Data()

        init(_ args: [String]) throws {
            p.executableURL = URL(fileURLWithPath: Sluice.binary)
            p.arguments = args
            let o = Pipe(), e = Pipe()
            p.standardOutput = o
            p.standardError = e
            o.fileHandleForReading.readabilityHandler = { [weak self] h in
                let d = h.availableData
                self?.lock.withLock { self?.out.append(d) }
            }
            e.fileHandleForReading.readabilityHandler = { [weak self] h in
                let d = h.availableData
                self?.lock.withLock { self?.err.append(d) }
            }
            try p.run()
        }

        var stdout: String { lock.withLock { String(decoding: out, as: UTF8.self) } }
        var stderr: String { lock.withLock { String(decoding: err, as: UTF8.self) } }

        func waitForOutput(timeout: TimeInterval = 10, until done: (String) -> Bool) throws -> String {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let s = stdout
                if done(s) { return s }
                Thread.sleep(forTimeInterval: 0.01)
            }
            XCTFail("timed out; stdout so far:\n\(stdout)\nstderr:\n\(stderr)")
            throw AuditError("timed out")
        }

        func stop() {
            if p.isRunning { p.terminate() }
            p.waitUntilExit()
        }
    }
}
