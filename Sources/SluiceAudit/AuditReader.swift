/// A record as read from a file, with where it was.
public struct AuditEntry: Sendable {
    public var record: AuditRecord
    /// The line exactly as in the file, without its newline.
    public var line: [UInt8]
    public var file: String
    public var lineNumber: Int
}

/// Reads records from log files in order, for search and report. It does
/// not verify (that is `AuditVerifier`'s job); lines that are not records
/// are counted and skipped, so a damaged log can still be searched.
public struct AuditReader {
    public struct Summary: Equatable, Sendable {
        public var lines = 0
        public var records = 0
        /// Lines that are not records (including a torn last line).
        public var unreadable = 0
        /// The first unreadable line, for the operator's next step.
        public var firstUnreadable: String?
    }

    public let files: [String]

    public init(files: [String]) { self.files = files }

    /// Calls `body` for each record in order; `body` returns false to stop.
    @discardableResult
    public func forEach(_ body: (AuditEntry) throws -> Bool) throws -> Summary {
        var s = Summary()
        for path in files {
            let reader = try LineReader(path: path)
            while let line = try reader.next() {
                s.lines += 1
                guard line.terminated, let r = try? AuditRecord(line: line.bytes) else {
                    s.unreadable += 1
                    if s.firstUnreadable == nil { s.firstUnreadable = "\(path):\(line.number)" }
                    continue
                }
                s.records += 1
                if try !body(AuditEntry(record: r, line: line.bytes, file: path, lineNumber: line.number)) { return s }
            }
        }
        return s
    }
}

/// Which records an operator wants: every given criterion must hold.
public struct AuditQuery: Equatable, Sendable {
    public var tenant: String?
    public var decision: AuditDecision?
    public var verb: String?
    public var rule: String?
    public var event: String?
    /// Records at or after this time.
    public var since: AuditTimestamp?
    /// Records at or before this time.
    public var until: AuditTimestamp?
    public var pid: Int32?
    public var uid: UInt32?
    public var session: UInt64?
    /// A QP number: matches a record whose object names it as `qpn` or
    /// `peer` (`qp 3 qpn 0x1a -> RTR peer 0x1b`), or whose `qpn` field is it.
    public var qp: UInt32?

    public init(tenant: String? = nil, decision: AuditDecision? = nil, verb: String? = nil, rule: String? = nil,
                event: String? = nil, since: AuditTimestamp? = nil, until: AuditTimestamp? = nil, pid: Int32? = nil,
                uid: UInt32? = nil, session: UInt64? = nil, qp: UInt32? = nil) {
        self.tenant = tenant
        self.decision = decision
        self.verb = verb
        self.rule = rule
        self.event = event
        self.since = since
        self.until = until
        self.pid = pid
        self.uid = uid
        self.session = session
        self.qp = qp
    }

    public func matches(_ r: AuditRecord) -> Bool {
        if let tenant, r.tenant != tenant { return false }
        if let decision, r.decision != decision { return false }
        if let verb, r.verb != verb { return false }
        if let rule, r.rule != rule { return false }
        if let event, r.event != event { return false }
        if since != nil || until != nil {
            guard let t = r.timestamp else { return false }
            if let since, t < since { return false }
            if let until, t > until { return false }
        }
        if let pid, r.subject?.pid != pid { return false }
        if let uid, r.subject?.uid != uid { return false }
        if let session, r.subject?.session != session { return false }
        if let qp {
            let named = Self.queuePairs(in: r.object ?? "") + (r.fields["qpn"].flatMap(Self.parseQPN).map { [$0] } ?? [])
            if !named.contains(qp) { return false }
        }
        return true
    }

    /// QP numbers named in an object string: the number after each `qpn` or
    /// `peer` word.
    static func queuePairs(in object: String) -> [UInt32] {
        let words = object.split(whereSeparator: { $0 == " " || $0 == "=" || $0 == "," })
        var out = [UInt32]()
        for (i, w) in words.enumerated() where (w == "qpn" || w == "peer") && i + 1 < words.count {
            if let n = parseQPN(String(words[i + 1])) { out.append(n) }
        }
        return out
    }

    /// `26` or `0x1a`.
    public static func parseQPN(_ text: String) -> UInt32? {
        let t = text.lowercased()
        if t.hasPrefix("0x") { return UInt32(t.dropFirst(2), radix: 16) }
        return UInt32(t)
    }
}
