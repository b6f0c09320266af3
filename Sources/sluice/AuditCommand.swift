import ArgumentParser
import Foundation
import SluiceAudit

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify, search, summarize and follow the router's audit log.",
        discussion: """
            The log is JSON Lines; each record carries the SHA-256 of the record \
            before it, and signed checkpoints pin the head (docs/audit.md). Give \
            the active file (audit.log): its rotated files (audit.log.1, \
            audit.log.2, …) are read first, oldest first, unless --no-rotated.

            Examples (L=/run/sluice/audit.log):
              sluice audit verify $L --checkpoints $L.checkpoints \\
                  --key-file /etc/sluice/audit.key
              sluice audit search $L --tenant alpha --decision deny --since 1h
              sluice audit search $L --qp 0x1a --json | jq .reason
              sluice audit report $L --since today
              sluice audit tail -f $L --decision deny
            """,
        subcommands: [Verify.self, Search.self, Report.self, Tail.self])
}

// MARK: shared options

struct AuditFiles: ParsableArguments {
    @Argument(help: ArgumentHelp("Log files in chain order (oldest first).", valueName: "file"))
    var files: [String]

    @Flag(name: .customLong("no-rotated"), help: "Read only the files given, not their rotated predecessors.")
    var noRotated = false

    /// The files given, each preceded by its rotated files (oldest first)
    /// unless some of them were given too.
    func expanded() -> (files: [String], added: [String]) {
        guard !noRotated else { return (files, []) }
        var out = [String]()
        var added = [String]()
        let given = Set(files)
        for f in files {
            let rotated = (try? AuditLogFiles.rotated(of: f)) ?? []
            if !rotated.contains(where: given.contains) {
                for r in rotated where !out.contains(r) {
                    out.append(r)
                    added.append(r)
                }
            }
            out.append(f)
        }
        return (out, added)
    }
}

struct AuditFilter: ParsableArguments {
    @Option(help: ArgumentHelp("Only this tenant.", valueName: "name"))
    var tenant: String?

    @Option(help: ArgumentHelp("Only allow or deny.", valueName: "allow|deny"))
    var decision: String?

    @Option(help: ArgumentHelp("Only this verb (create_qp, reg_mr, post_send, …).", valueName: "verb"))
    var verb: String?

    @Option(help: ArgumentHelp("Only decisions made by this policy rule.", valueName: "rule"))
    var rule: String?

    @Option(help: ArgumentHelp("Only this event (control, datapath, session.open, throttle, audit.loss, …).", valueName: "event"))
    var event: String?

    @Option(help: ArgumentHelp(
        "Only records at or after this time: RFC 3339 (2025-03-01T12:00:00Z), a date (2025-03-01, UTC), a duration ago (90s, 30m, 1h, 2d, 1w), now, recent (10m), today, yesterday.",
        valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Only records at or before this time (same forms as --since).", valueName: "time"))
    var until: String?

    @Option(help: ArgumentHelp("Only this process id.", valueName: "pid"))
    var pid: Int32?

    @Option(help: ArgumentHelp("Only this user id.", valueName: "uid"))
    var uid: UInt32?

    @Option(help: ArgumentHelp("Only this router session.", valueName: "id"))
    var session: UInt64?

    @Option(help: ArgumentHelp("Only records naming this QP number (26 or 0x1a) as qpn or peer.", valueName: "qpn"))
    var qp: String?

    func query(now: AuditTimestamp = SystemAuditClock().now()) throws -> AuditQuery {
        var q = AuditQuery(tenant: tenant, verb: verb, rule: rule, event: event, pid: pid, uid: uid, session: session)
        if let decision {
            guard let d = AuditDecision(rawValue: decision.lowercased()) else {
                throw ValidationError("--decision must be allow or deny, not \(decision)")
            }
            q.decision = d
        }
        q.since = try Self.time(since, "--since", now: now)
        q.until = try Self.time(until, "--until", now: now)
        if let qp {
            guard let n = AuditQuery.parseQPN(qp) else { throw ValidationError("--qp \(qp): not a QP number (26 or 0x1a)") }
            q.qp = n
        }
        return q
    }

    static func time(_ text: String?, _ flag: String, now: AuditTimestamp) throws -> AuditTimestamp? {
        guard let text else { return nil }
        guard let t = AuditTimestamp.parse(operatorInput: text, now: now) else {
            throw ValidationError("\(flag) \(text): not a time; use RFC 3339 (2025-03-01T12:00:00Z), a date (2025-03-01), a duration ago (30m, 1h, 2d), now, recent, today or yesterday")
        }
        return t
    }
}

// MARK: output helpers

enum AuditOutput {
    static func err(_ s: String) {
        FileHandle.standardError.write(Data(("sluice audit: " + s + "\n").utf8))
    }

    /// One record as `key=value` pairs, ausearch style: values with spaces,
    /// quotes or `=` are JSON-quoted.
    static func text(_ r: AuditRecord) -> String {
        var parts = [r.time, "seq=\(r.seq)", "event=\(value(r.event))"]
        if let t = r.tenant { parts.append("tenant=\(value(t))") }
        if let s = r.subject { parts.append("pid=\(s.pid) uid=\(s.uid) session=\(s.session)") }
        if let v = r.verb { parts.append("verb=\(value(v))") }
        if let o = r.object { parts.append("object=\(value(o))") }
        if let d = r.decision { parts.append("decision=\(d.rawValue)") }
        if let rule = r.rule { parts.append("rule=\(value(rule))") }
        if let reason = r.reason { parts.append("reason=\(value(reason))") }
        for k in r.fields.keys.sorted() { parts.append("\(value(k))=\(value(r.fields[k]!))") }
        return parts.joined(separator: " ")
    }

    static func value(_ s: String) -> String {
        let plain = !s.isEmpty && s.unicodeScalars.allSatisfy { $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7f }
        if plain { return s }
        let data = (try? JSONEncoder().encode(s)) ?? Data("\"?\"".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func json<T: Encodable>(_ value: T) -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? e.encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    static func warnUnreadable(_ s: AuditReader.Summary) {
        guard s.unreadable > 0 else { return }
        err("\(s.unreadable) line\(s.unreadable == 1 ? " is" : "s are") not records (first at \(s.firstUnreadable ?? "?")) and were skipped; run `sluice audit verify`")
    }

    static func flush() { fflush(stdout) }
}

// MARK: verify

extension Audit {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check the hash chain and the signed checkpoints; name the first bad record.",
            discussion: """
                Every record must be in its canonical form, hash to its "hash", \
                follow the previous record (seq + 1) and carry its hash as "prev"; \
                the first record must be seq 1. With --checkpoints and --key-file, \
                every checkpoint's HMAC must verify and every checkpointed (seq, \
                hash) must be in the chain, which catches a removed tail or a \
                rewritten chain. A torn last line (a crash mid-write) is reported.

                Exit status: 0 when the log is intact, 1 when a problem was found \
                (the first bad record is named with file:line, seq and why).
                """)

        @OptionGroup var log: AuditFiles

        @Option(help: ArgumentHelp("The checkpoint file (needs --key-file).", valueName: "file"))
        var checkpoints: String?

        @Option(name: .customLong("key-file"), help: ArgumentHelp("The operator's checkpoint key file.", valueName: "file"))
        var keyFile: String?

        @Flag(help: "Accept a chain that starts after seq 1 (older rotated files archived).")
        var partial = false

        @Flag(help: "Print the result as one JSON object.")
        var json = false

        func validate() throws {
            if (checkpoints == nil) != (keyFile == nil) {
                throw ValidationError("--checkpoints and --key-file go together: a checkpoint is only evidence once its HMAC is checked")
            }
        }

        func run() throws {
            let (files, added) = log.expanded()
            var key: AuditKey?
            if let keyFile {
                do {
                    key = try AuditKey(file: keyFile)
                } catch {
                    AuditOutput.err("\(error)")
                    throw ExitCode(2)
                }
            }
            let result = AuditVerifier(options: .init(allowsPartialStart: partial)).verify(files: files, checkpoints: checkpoints, key: key)
            if json {
                print(AuditOutput.json(VerifyJSON(result)))
            } else {
                printText(result, added: added)
            }
            if !result.ok { throw ExitCode(1) }
        }

        private func printText(_ r: AuditVerifier.Result, added: [String]) {
            if !added.isEmpty { print("(with rotated files \(added.joined(separator: ", ")))") }
            for f in r.files {
                let seqs = f.firstSeq.map { "seq \($0)–\(f.lastSeq!)" } ?? "no records"
                print("\(f.path): \(f.lines) line\(f.lines == 1 ? "" : "s"), \(seqs)")
            }
            if let c = r.checkpoints {
                let newest = c.newestSeq.map { ", newest at seq \($0) (\(c.newestTime ?? ""))" } ?? ""
                print("\(c.path): \(c.lines) checkpoint\(c.lines == 1 ? "" : "s"), \(c.authentic) authentic\(newest)"
                      + (c.notCheckable > 0 ? "; \(c.notCheckable) before the first record given, not checked" : ""))
            }
            if let first = r.firstError {
                print("FAILED: \(first)")
                if r.problems.count > 1 {
                    print("\(r.problems.count - 1) further problem\(r.problems.count == 2 ? "" : "s"):")
                    for p in r.problems.dropFirst().prefix(20) { print("  \(p)") }
                    if r.problems.count > 21 { print("  …") }
                }
                return
            }
            var line = "OK: \(r.records) records, seq \(r.firstSeq ?? 0)–\(r.lastSeq ?? 0), chain intact"
            if let after = r.recordsAfterNewestCheckpoint, let newest = r.checkpoints?.newestSeq {
                line += "; the newest checkpoint vouches for seq \(newest)"
                if after > 0 { line += " (\(after) record\(after == 1 ? "" : "s") after it are protected by the chain alone)" }
            } else if r.checkpoints != nil {
                line += "; no authentic checkpoint: a removed tail would not show"
            } else {
                line += ". No checkpoints given: a removed tail would not show (--checkpoints, --key-file)"
            }
            print(line)
        }
    }

    /// `verify --json`.
    struct VerifyJSON: Encodable {
        struct Problem: Encodable {
            var kind: String
            var file: String
            var line: Int
            var seq: UInt64?
            var message: String
        }
        struct File: Encodable {
            var path: String
            var lines: Int
            var firstSeq: UInt64?
            var lastSeq: UInt64?
        }
        struct Checkpoints: Encodable {
            var path: String
            var lines: Int
            var authentic: Int
            var newestSeq: UInt64?
            var newestTime: String?
            var notCheckable: Int
        }
        var ok: Bool
        var records: Int
        var firstSeq: UInt64?
        var lastSeq: UInt64?
        var head: String?
        var files: [File]
        var checkpoints: Checkpoints?
        var recordsAfterNewestCheckpoint: UInt64?
        var firstError: Problem?
        var problems: [Problem]

        init(_ r: AuditVerifier.Result) {
            func p(_ x: AuditProblem) -> Problem { Problem(kind: x.kind.rawValue, file: x.file, line: x.line, seq: x.seq, message: x.message) }
            ok = r.ok
            records = r.records
            firstSeq = r.firstSeq
            lastSeq = r.lastSeq
            head = r.head
            files = r.files.map { File(path: $0.path, lines: $0.lines, firstSeq: $0.firstSeq, lastSeq: $0.lastSeq) }
            checkpoints = r.checkpoints.map {
                Checkpoints(path: $0.path, lines: $0.lines, authentic: $0.authentic, newestSeq: $0.newestSeq,
                            newestTime: $0.newestTime, notCheckable: $0.notCheckable)
            }
            recordsAfterNewestCheckpoint = r.recordsAfterNewestCheckpoint
            firstError = r.firstError.map(p)
            problems = r.problems.map(p)
        }

        enum CodingKeys: String, CodingKey {
            case ok, records, firstSeq, lastSeq, head, files, checkpoints, recordsAfterNewestCheckpoint, firstError, problems
        }

        // Absent values are written as null, so scripts can rely on the keys.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(ok, forKey: .ok)
            try c.encode(records, forKey: .records)
            try c.encode(firstSeq, forKey: .firstSeq)
            try c.encode(lastSeq, forKey: .lastSeq)
            try c.encode(head, forKey: .head)
            try c.encode(files, forKey: .files)
            try c.encode(checkpoints, forKey: .checkpoints)
            try c.encode(recordsAfterNewestCheckpoint, forKey: .recordsAfterNewestCheckpoint)
            try c.encode(firstError, forKey: .firstError)
            try c.encode(problems, forKey: .problems)
        }
    }
}

// MARK: search

extension Audit {
    struct Search: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the records that match every filter given.",
            discussion: """
                Text output is one record per line: the time, then key=value pairs \
                (values with spaces are JSON-quoted). --json prints the matching \
                lines exactly as they are in the log (JSON Lines), so they can be \
                piped to jq or hashed again. Search does not verify: lines that are \
                not records are skipped with a warning.

                Exit status: 0 when something matched, 1 when nothing did.
                """)

        @OptionGroup var log: AuditFiles
        @OptionGroup var filter: AuditFilter

        @Flag(help: "Print the matching records as JSON Lines, as written.")
        var json = false

        @Flag(help: "Print only the number of matching records.")
        var count = false

        func run() throws {
            let query = try filter.query()
            var matched = 0
            let summary: AuditReader.Summary
            do {
                summary = try AuditReader(files: log.expanded().files).forEach { e in
                    guard query.matches(e.record) else { return true }
                    matched += 1
                    if count { return true }
                    print(json ? String(decoding: e.line, as: UTF8.self) : AuditOutput.text(e.record))
                    return true
                }
            } catch {
                AuditOutput.err("\(error)")
                throw ExitCode(2)
            }
            if count { print(matched) }
            AuditOutput.warnUnreadable(summary)
            if matched == 0 {
                if !count { AuditOutput.err("<no matches>") }
                throw ExitCode(1)
            }
        }
    }
}

// MARK: report

extension Audit {
    struct Report: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Summarize per tenant: decisions, top denial rules and verbs, throttling, sessions.",
            discussion: """
                Per tenant: records, allow and deny decisions, the most frequent \
                denial rules and denied verbs, throttle records (and how many \
                distinct QPs they name), sessions opened, closed and refused, and \
                data-path allows counted in summary records. Records without a \
                tenant (router and audit events) are under (router). Lost records \
                (audit.loss) are totalled at the top: if that number is not zero, \
                the log is incomplete.
                """)

        @OptionGroup var log: AuditFiles

        @Option(help: ArgumentHelp("Only this tenant.", valueName: "name"))
        var tenant: String?

        @Option(help: ArgumentHelp("Only records at or after this time (see `sluice audit search --help`).", valueName: "time"))
        var since: String?

        @Option(help: ArgumentHelp("Only records at or before this time.", valueName: "time"))
        var until: String?

        @Option(help: ArgumentHelp("Entries in each top list.", valueName: "n"))
        var top = 5

        @Flag(help: "Print the report as one JSON object.")
        var json = false

        func run() throws {
            let now = SystemAuditClock().now()
            let query = AuditQuery(tenant: tenant, since: try AuditFilter.time(since, "--since", now: now),
                                   until: try AuditFilter.time(until, "--until", now: now))
            var report = AuditReport(files: log.expanded().files)
            report.top = max(top, 1)
            let summary: AuditReader.Summary
            do {
                summary = try AuditReader(files: report.files).forEach { e in
                    if query.matches(e.record) { report.add(e.record) }
                    return true
                }
            } catch {
                AuditOutput.err("\(error)")
                throw ExitCode(2)
            }
            report.unreadableLines = summary.unreadable
            report.finish()
            if json {
                print(AuditOutput.json(report))
            } else {
                printText(report)
            }
            AuditOutput.warnUnreadable(summary)
        }

        private func printText(_ r: AuditReport) {
            let span = r.firstTime.map { ", \($0) to \(r.lastTime!)" } ?? ""
            let seqs = r.firstSeq.map { " (seq \($0)–\(r.lastSeq!))" } ?? ""
            print("Audit report: \(r.files.count) file\(r.files.count == 1 ? "" : "s"), \(r.records) record\(r.records == 1 ? "" : "s")\(seqs)\(span)")
            if r.lossRecords > 0 {
                print("LOST: \(r.lostRecords) record\(r.lostRecords == 1 ? "" : "s") in \(r.lossRecords) audit.loss record\(r.lossRecords == 1 ? "" : "s"): the log is incomplete")
            } else {
                print("Lost records: none")
            }
            guard !r.tenants.isEmpty else { return }
            print("")
            let header = ["tenant", "records", "allow", "deny", "throttle", "sessions o/c/r", "datapath allows"]
            var rows = [header]
            for t in r.tenants {
                rows.append([t.tenant, String(t.records), String(t.allow), String(t.deny),
                             t.throttleRecords == 0 ? "0" : "\(t.throttleRecords) (\(t.throttledObjects) qp)",
                             "\(t.sessionsOpened)/\(t.sessionsClosed)/\(t.sessionsRefused)", String(t.dataPathAllowsCounted)])
            }
            let widths = header.indices.map { i in rows.map { $0[i].count }.max()! }
            for row in rows {
                let cells = row.enumerated().map { i, c in
                    i == 0 ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                           : String(repeating: " ", count: widths[i] - c.count) + c
                }
                print(cells.joined(separator: "  "))
            }
            for t in r.tenants where t.deny > 0 {
                print("")
                print("\(t.tenant): top denial rules")
                for c in t.topDenialRules { print(String(format: "%8d  %@", c.count, c.name)) }
                print("\(t.tenant): top denied verbs")
                for c in t.topDeniedVerbs { print(String(format: "%8d  %@", c.count, c.name)) }
            }
        }
    }
}

// MARK: tail

extension Audit {
    struct Tail: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the last records of the active file; with -f, keep following it.",
            discussion: """
                With -f, new records are printed as the router writes them; when \
                the file is rotated, the rest of the old file is printed before \
                the new one, so nothing is skipped. Each followed record is checked \
                against the one before it; a break in the chain is reported on \
                standard error. Filters (as for search) apply to what is printed. \
                Stop with Ctrl-C.
                """)

        @Argument(help: ArgumentHelp("The active log file.", valueName: "file"))
        var file: String

        @Flag(name: .shortAndLong, help: "Keep following the file as it grows and rotates.")
        var follow = false

        @Option(name: [.customShort("n"), .customLong("lines")], help: ArgumentHelp("How many records to print first.", valueName: "n"))
        var lines = 10

        @Option(help: ArgumentHelp("Poll interval with -f, in milliseconds.", valueName: "ms"))
        var interval = 200

        @OptionGroup var filter: AuditFilter

        @Flag(help: "Print records as JSON Lines, as written.")
        var json = false

        func run() throws {
            let query = try filter.query()
            let follower: AuditFollower
            do {
                follower = try AuditFollower(path: file, startingWithLast: max(lines, 0))
            } catch {
                AuditOutput.err("\(error)")
                throw ExitCode(2)
            }
            var chain = AuditChain(allowsPartialStart: true)
            var reported = 0
            repeat {
                let got: [AuditFollower.Line]
                do {
                    got = try follower.poll()
                } catch {
                    AuditOutput.err("\(error)")
                    throw ExitCode(2)
                }
                for n in follower.notices {
                    switch n {
                    case .rotated: AuditOutput.err("\(file) was rotated; following the new file")
                    case .truncated(let from, let to): AuditOutput.err("\(file) shrank from \(from) to \(to) bytes")
                    }
                }
                for l in got {
                    guard l.terminated else {
                        AuditOutput.err("\(l.file): torn line of \(l.bytes.count) bytes at the end of the rotated file")
                        continue
                    }
                    let checked = chain.check(line: l.bytes, file: l.file, line: 0)
                    for p in chain.problems.dropFirst(reported) {
                        AuditOutput.err("chain problem\(p.seq.map { " at seq \($0)" } ?? ""): \(p.message)")
                    }
                    reported = chain.problems.count
                    guard let record = checked?.record, query.matches(record) else { continue }
                    print(json ? String(decoding: l.bytes, as: UTF8.self) : AuditOutput.text(record))
                }
                AuditOutput.flush()
                if follow { usleep(useconds_t(max(interval, 10)) * 1000) }
            } while follow
        }
    }
}
