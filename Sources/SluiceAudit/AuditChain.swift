import Crypto

/// What is wrong, where. `file`/`line` name the first bad line (1-based);
/// `seq` is the record's sequence number when the line could be read.
public struct AuditProblem: Equatable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        /// The file cannot be opened or read.
        case unreadableFile
        /// The line is not a record (bad JSON, missing or mistyped member).
        case unreadable
        /// The record is not spelled in its one canonical form.
        case notCanonical
        /// The record's bytes do not hash to its `hash`: it was edited.
        case hashMismatch
        /// The first record is not seq 1 with a genesis `prev`.
        case chainStart
        /// Records are missing before this one (deleted).
        case missing
        /// Two adjacent records are in swapped order.
        case swapped
        /// The record is out of order (moved, or copied from elsewhere).
        case outOfOrder
        /// The record was inserted: the next one links past it.
        case inserted
        /// `prev` does not match the record before.
        case brokenLink
        /// The last line has no newline: a torn write, or truncation.
        case tornLine
        /// The log ends before the newest authentic checkpoint.
        case truncated
        /// A record's hash differs from the authentic checkpoint for its seq.
        case checkpointMismatch
        /// A checkpoint's MAC does not verify under the key.
        case checkpointForged
        /// A checkpoint line cannot be read.
        case checkpointUnreadable
        /// Checkpoints go backwards.
        case checkpointOutOfOrder
        /// No records at all.
        case empty
    }

    public var kind: Kind
    public var file: String
    public var line: Int
    public var seq: UInt64?
    public var message: String

    public var description: String {
        "\(file):\(line)\(seq.map { " (seq \($0))" } ?? ""): \(message)"
    }
}

/// Checks records one at a time, in order, across files: canonical form,
/// hash, and the link to the record before (seq + 1, `prev` = its hash).
///
/// It names the first bad record, and then tries not to repeat itself: it
/// remembers the last few records, so after a deletion, a swap or an
/// insertion, the records that link correctly again are not reported, and a
/// copied-in record is told apart from the genuine one that follows it.
public struct AuditChain: Sendable {
    public private(set) var problems: [AuditProblem] = []
    public private(set) var records = 0
    public private(set) var firstSeq: UInt64?
    public private(set) var lastSeq: UInt64?
    /// The `hash` of the last record read.
    public private(set) var head: String?
    /// Accept a first record after seq 1 (older files archived or given
    /// separately); the checks start there.
    public var allowsPartialStart: Bool

    private struct Seen {
        var seq: UInt64
        /// The hash the line carries and the hash its bytes have (equal
        /// unless it was edited); nil for an unreadable line, which links
        /// to anything.
        var hashes: [String]?
        var file: String
        var line: Int
    }

    private var window: [Seen] = []
    private var recordsSinceProblem = Int.max
    private static let windowSize = 8
    private static let maxProblems = 1000

    public init(allowsPartialStart: Bool = false) {
        self.allowsPartialStart = allowsPartialStart
    }

    /// Checks one line (without its newline). Returns the record and the
    /// hash of its bytes when the line is a record, even a bad one.
    @discardableResult
    public mutating func check(line bytes: [UInt8], file: String, line: Int) -> (record: AuditRecord, computedHash: String)? {
        let record: AuditRecord
        do {
            record = try AuditRecord(line: bytes)
        } catch {
            report(.unreadable, file, line, nil, "not an audit record: \(error)")
            let presumed = (window.last?.seq ?? 0) &+ 1
            push(Seen(seq: presumed, hashes: nil, file: file, line: line))
            return nil
        }
        records += 1
        let (canonical, hashAt) = record.canonical()
        let computed = CanonicalJSON.hex(SHA256.hash(data: canonical))
        defer {
            if firstSeq == nil { firstSeq = record.seq }
            lastSeq = record.seq
            head = record.hash
            push(Seen(seq: record.seq, hashes: computed == record.hash ? [computed] : [record.hash, computed],
                      file: file, line: line))
        }
        if !AuditRecord.insertHash(record.hash, into: canonical, at: hashAt).elementsEqual(bytes) {
            report(.notCanonical, file, line, record.seq,
                   "not in canonical form: the line is not the one valid spelling of the record it contains (keys sorted, no spaces, minimal escapes)")
            return (record, computed)
        }
        if computed != record.hash {
            report(.hashMismatch, file, line, record.seq,
                   "hash mismatch: the record's bytes hash to \(computed.prefix(16))…, but it says \(record.hash.prefix(16))…: it was changed after it was written")
            return (record, computed)
        }
        link(record, file, line)
        return (record, computed)
    }

    private mutating func link(_ r: AuditRecord, _ file: String, _ line: Int) {
        guard let last = window.last else {
            if r.seq != 1 || r.prev != AuditRecord.genesis, !allowsPartialStart {
                report(.chainStart, file, line, r.seq, r.seq != 1
                       ? "the chain starts at seq \(r.seq), not 1: records before it are missing (give the older rotated files, or --partial)"
                       : "the first record's prev is not the genesis value (64 zeros): records before it are missing")
            }
            return
        }
        func links(to s: Seen) -> Bool { s.hashes.map { $0.contains(r.prev) } ?? true }
        if r.seq == last.seq &+ 1 && links(to: last) { return }
        let previous = window.count >= 2 ? window[window.count - 2] : nil
        // "seq k+1 where k was expected", then k: the two were swapped.
        if let p = problems.last, p.kind == .missing, p.file == last.file, p.line == last.line,
           missingExpected == r.seq, last.seq == r.seq &+ 1 {
            problems[problems.count - 1].kind = .swapped
            problems[problems.count - 1].message =
                "records out of order: seq \(last.seq) comes before seq \(r.seq) (\(file):\(line)); they were swapped"
            missingExpected = nil
            recordsSinceProblem = 0
            return
        }
        // This record links to the one before the previous line: the
        // previous line was inserted (forged with a valid link, or copied).
        let quietSinceOrAtLast = recordsSinceProblem > Self.windowSize
            || (problems.last.map { $0.file == last.file && $0.line == last.line } ?? false)
        if quietSinceOrAtLast, let before = previous, before.hashes != nil, links(to: before), r.seq == before.seq &+ 1 {
            blame(.inserted, last.file, last.line, last.seq,
                  "inserted record: the record after it (\(file):\(line), seq \(r.seq)) links to the record before it")
            return
        }
        // Already reported: records that link to something recent are the
        // aftermath of that problem, not a new one.
        if recordsSinceProblem <= Self.windowSize, window.contains(where: { $0.hashes != nil && links(to: $0) }) {
            return
        }
        // (Sequence numbers come from the file: no arithmetic may trap.)
        if r.seq > last.seq && r.seq - last.seq > 1 {
            let gap = r.seq - last.seq - 1
            report(.missing, file, line, r.seq, gap == 1
                   ? "seq \(r.seq) follows seq \(last.seq): record \(last.seq + 1) is missing (deleted, or moved)"
                   : "seq \(r.seq) follows seq \(last.seq): records \(last.seq + 1)…\(r.seq - 1) are missing (deleted, or moved)")
            missingExpected = last.seq + 1
        } else if r.seq <= last.seq {
            report(.outOfOrder, file, line, r.seq,
                   "seq \(r.seq) after seq \(last.seq): out of order (moved, or copied from elsewhere)")
        } else {
            report(.brokenLink, file, line, r.seq,
                   "prev does not match the hash of the record before it (seq \(last.seq), \(last.file):\(last.line)): one of them was replaced")
        }
    }

    private var missingExpected: UInt64?

    private mutating func push(_ s: Seen) {
        window.append(s)
        if window.count > Self.windowSize { window.removeFirst() }
        if recordsSinceProblem < Int.max { recordsSinceProblem += 1 }
    }

    private mutating func report(_ kind: AuditProblem.Kind, _ file: String, _ line: Int, _ seq: UInt64?, _ message: String) {
        recordsSinceProblem = 0
        guard problems.count < Self.maxProblems else { return }
        problems.append(AuditProblem(kind: kind, file: file, line: line, seq: seq, message: message))
    }

    /// Reports at an earlier line; replaces a report already made there.
    private mutating func blame(_ kind: AuditProblem.Kind, _ file: String, _ line: Int, _ seq: UInt64?, _ message: String) {
        if let i = problems.lastIndex(where: { $0.file == file && $0.line == line }) {
            if problems[i].kind == .unreadable {
                // Keep "not a record"; say it was added rather than damaged.
                problems[i].message += " (an inserted line: the record after it links to the record before it)"
            } else {
                problems[i] = AuditProblem(kind: kind, file: file, line: line, seq: seq, message: message)
            }
            recordsSinceProblem = 0
        } else {
            report(kind, file, line, seq, message)
        }
    }

    /// Adds a problem found outside the chain (torn line, checkpoints).
    public mutating func add(_ p: AuditProblem) {
        guard problems.count < Self.maxProblems else { return }
        problems.append(p)
    }
}
