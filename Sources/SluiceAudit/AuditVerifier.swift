/// Verifies a log: the chain through all its files, and optionally the
/// signed checkpoints.
///
/// Checks, and where each failure is reported:
/// * every line is a record in canonical form whose bytes hash to its
///   `hash` — at that line;
/// * the first record is seq 1 with a genesis `prev` (unless
///   `allowsPartialStart`) — at the first line;
/// * each record is the previous seq + 1 and its `prev` is the previous
///   `hash` — at the first line where that fails (a deleted, swapped or
///   inserted record is named as such);
/// * the last line of the last file ends with a newline — else a torn line;
/// * every checkpoint's MAC verifies under the key — at its line in the
///   checkpoint file;
/// * every authentic checkpoint's (seq, hash) is in the chain — a rewritten
///   chain is reported at the checkpointed record, a removed tail at the end
///   of the last file.
public struct AuditVerifier {
    public struct Options: Sendable {
        /// Accept a chain that starts after seq 1.
        public var allowsPartialStart = false
        public init(allowsPartialStart: Bool = false) { self.allowsPartialStart = allowsPartialStart }
    }

    public struct FileSummary: Equatable, Sendable {
        public var path: String
        public var lines: Int
        public var firstSeq: UInt64?
        public var lastSeq: UInt64?
    }

    public struct CheckpointSummary: Equatable, Sendable {
        public var path: String
        public var lines = 0
        public var authentic = 0
        /// The newest authentic checkpoint.
        public var newestSeq: UInt64?
        public var newestTime: String?
        /// Authentic checkpoints for records before the first one given
        /// (with `allowsPartialStart`): not checkable here.
        public var notCheckable = 0
    }

    public struct Result: Sendable {
        /// Problems in the order found: log files first (by position), then
        /// the checkpoint file.
        public var problems: [AuditProblem]
        public var files: [FileSummary]
        public var records: Int
        public var firstSeq: UInt64?
        public var lastSeq: UInt64?
        public var head: String?
        public var checkpoints: CheckpointSummary?

        public var ok: Bool { problems.isEmpty }
        /// The first bad record, and why.
        public var firstError: AuditProblem? { problems.first }
        /// Records after the newest authentic checkpoint: protected by the
        /// chain only.
        public var recordsAfterNewestCheckpoint: UInt64? {
            guard let c = checkpoints?.newestSeq, let last = lastSeq else { return nil }
            return last > c ? last - c : 0
        }
    }

    public var options: Options

    public init(options: Options = Options()) { self.options = options }

    /// Verifies `files` in chain order (oldest first), and the checkpoint
    /// file under `key` when both are given.
    public func verify(files: [String], checkpoints: String? = nil, key: AuditKey? = nil) -> Result {
        var chain = AuditChain(allowsPartialStart: options.allowsPartialStart)
        var summaries = [FileSummary]()
        var checkpointProblems = [AuditProblem]()
        var summary: CheckpointSummary?
        // seq -> (hash, checkpoint line) for authentic checkpoints.
        var signed = [UInt64: (hash: String, line: Int)]()
        if let checkpoints, let key {
            var s = CheckpointSummary(path: checkpoints)
            (signed, checkpointProblems) = readCheckpoints(checkpoints, key: key, summary: &s)
            summary = s
        }
        var checkedSeqs = Set<UInt64>()
        var lastLine: (file: String, line: Int) = (files.last ?? "", 0)
        for (index, path) in files.enumerated() {
            var fs = FileSummary(path: path, lines: 0)
            defer { summaries.append(fs) }
            let reader: LineReader
            do {
                reader = try LineReader(path: path)
            } catch {
                chain.add(AuditProblem(kind: .unreadableFile, file: path, line: 0, seq: nil, message: "\(error)"))
                continue
            }
            do {
                while let line = try reader.next() {
                    fs.lines = line.number
                    if !line.terminated {
                        let isLast = index == files.count - 1
                        chain.add(AuditProblem(kind: .tornLine, file: path, line: line.number, seq: nil, message: isLast
                            ? "torn last line: \(line.bytes.count) bytes without a newline after seq \(chain.lastSeq.map(String.init) ?? "none") (a crash mid-write, or a cut); the records before it are intact"
                            : "the file ends in \(line.bytes.count) bytes without a newline, but it is not the last file: it was cut"))
                        break
                    }
                    lastLine = (path, line.number)
                    guard let (record, computed) = chain.check(line: line.bytes, file: path, line: line.number) else { continue }
                    if fs.firstSeq == nil { fs.firstSeq = record.seq }
                    fs.lastSeq = record.seq
                    if let c = signed[record.seq], !checkedSeqs.contains(record.seq) {
                        checkedSeqs.insert(record.seq)
                        if c.hash != computed {
                            chain.add(AuditProblem(kind: .checkpointMismatch, file: path, line: line.number, seq: record.seq,
                                message: "the signed checkpoint (\(checkpoints ?? ""):\(c.line)) says seq \(record.seq) has hash \(c.hash.prefix(16))…, but this record hashes to \(computed.prefix(16))…: the log up to here was rewritten"))
                        }
                    }
                }
            } catch {
                chain.add(AuditProblem(kind: .unreadableFile, file: path, line: fs.lines, seq: nil, message: "\(error)"))
            }
        }
        if chain.records == 0, !chain.problems.contains(where: { $0.kind == .unreadableFile }) {
            chain.add(AuditProblem(kind: .empty, file: files.last ?? "", line: 0, seq: nil,
                                   message: "no records: a log the router wrote always starts with audit.open"))
        }
        if var s = summary {
            let first = chain.firstSeq ?? 1
            s.notCheckable = signed.keys.filter { $0 < first }.count
            summary = s
            if let newest = signed.keys.max(), newest > (chain.lastSeq ?? 0) {
                let last = chain.lastSeq ?? 0
                chain.add(AuditProblem(kind: .truncated, file: lastLine.file, line: lastLine.line + 1, seq: last &+ 1,
                    message: "the log ends at seq \(last), but the signed checkpoint (\(checkpoints ?? ""):\(signed[newest]!.line)) covers seq \(newest): records \(last &+ 1)…\(newest) were removed"))
            }
        }
        return Result(problems: chain.problems + checkpointProblems, files: summaries, records: chain.records,
                      firstSeq: chain.firstSeq, lastSeq: chain.lastSeq, head: chain.head, checkpoints: summary)
    }

    private func readCheckpoints(_ path: String, key: AuditKey, summary: inout CheckpointSummary)
        -> ([UInt64: (hash: String, line: Int)], [AuditProblem]) {
        var signed = [UInt64: (hash: String, line: Int)]()
        var problems = [AuditProblem]()
        var newest: UInt64?
        do {
            let reader = try LineReader(path: path)
            while let line = try reader.next() {
                summary.lines = line.number
                guard line.terminated else {
                    problems.append(AuditProblem(kind: .tornLine, file: path, line: line.number, seq: nil,
                        message: "torn last checkpoint: \(line.bytes.count) bytes without a newline"))
                    break
                }
                let c: AuditCheckpoint
                do {
                    c = try AuditCheckpoint(line: line.bytes)
                } catch {
                    problems.append(AuditProblem(kind: .checkpointUnreadable, file: path, line: line.number, seq: nil,
                                                 message: "not a checkpoint: \(error)"))
                    continue
                }
                guard c.isAuthentic(under: key) else {
                    problems.append(AuditProblem(kind: .checkpointForged, file: path, line: line.number, seq: c.seq,
                        message: "the checkpoint's HMAC does not verify under this key: forged or altered (or the wrong key file)"))
                    continue
                }
                summary.authentic += 1
                if let n = newest, c.seq < n {
                    problems.append(AuditProblem(kind: .checkpointOutOfOrder, file: path, line: line.number, seq: c.seq,
                        message: "checkpoint for seq \(c.seq) after one for seq \(n): an old checkpoint was replayed or moved"))
                }
                if let existing = signed[c.seq], existing.hash != c.hash {
                    problems.append(AuditProblem(kind: .checkpointMismatch, file: path, line: line.number, seq: c.seq,
                        message: "two authentic checkpoints disagree about seq \(c.seq) (lines \(existing.line) and \(line.number)): the log was replaced and re-signed"))
                }
                if signed[c.seq] == nil { signed[c.seq] = (c.hash, line.number) }
                if newest == nil || c.seq >= newest! {
                    newest = c.seq
                    summary.newestSeq = c.seq
                    summary.newestTime = c.time
                }
            }
        } catch {
            problems.append(AuditProblem(kind: .unreadableFile, file: path, line: 0, seq: nil, message: "\(error)"))
        }
        return (signed, problems)
    }
}
