import Crypto

/// allow or deny.
public enum AuditDecision: String, Sendable, CaseIterable {
    case allow, deny
}

/// Who asked: the tenant's session and the process's kernel credentials
/// (`SO_PEERCRED`), never anything the tenant said about itself.
public struct AuditSubject: Equatable, Hashable, Sendable {
    public var session: UInt64
    public var pid: Int32
    public var uid: UInt32

    public init(session: UInt64, pid: Int32, uid: UInt32) {
        self.session = session
        self.pid = pid
        self.uid = uid
    }
}

/// One line of the audit log.
///
/// ## Bytes on disk
///
/// A record is one line: a JSON object followed by `\n`. Its members, in
/// this order (keys sorted by their UTF-8 bytes), absent ones omitted:
///
/// | key | value | when |
/// | --- | --- | --- |
/// | `decision` | `"allow"` or `"deny"` | decisions |
/// | `event` | string, e.g. `control`, `session.open`, `audit.loss` | always |
/// | `fields` | object of string values, keys sorted | when not empty |
/// | `hash` | 64 lowercase hex: SHA-256 of the canonical bytes | always |
/// | `host` | string | always |
/// | `object` | string, virtual ids only | when given |
/// | `prev` | 64 lowercase hex: the previous record's `hash` (64 zeros for the first record of a log) | always |
/// | `reason` | string | when given |
/// | `rule` | string: the policy rule that decided | when given |
/// | `seq` | integer, 1 for the first record, then +1 each | always |
/// | `subject` | `{"pid":int,"session":int,"uid":int}` | when a process asked |
/// | `tenant` | string | when a tenant is concerned |
/// | `time` | RFC 3339 UTC, nine fraction digits | always |
/// | `verb` | string | when given |
///
/// No whitespace anywhere; integers in plain decimal; strings escape only
/// `"`, `\` and U+0000–U+001F (as `\b \t \n \f \r` or `\u00xx`), everything
/// else is its UTF-8 bytes, `/` and non-ASCII included.
///
/// ## Canonical bytes and the chain
///
/// The *canonical bytes* of a record are exactly that line without its
/// `,"hash":"…"` member and without the newline. `hash` is the SHA-256 of
/// the canonical bytes, and `prev` (which is part of them) is the previous
/// record's `hash`; so each record commits to every record before it. A
/// verifier re-encodes what it parsed and requires the line to be
/// byte-for-byte identical, so there is exactly one valid spelling of a
/// record.
public struct AuditRecord: Equatable, Sendable {
    public var seq: UInt64
    /// RFC 3339, as written.
    public var time: String
    public var host: String
    public var tenant: String?
    public var subject: AuditSubject?
    public var event: String
    public var verb: String?
    public var object: String?
    public var decision: AuditDecision?
    public var rule: String?
    public var reason: String?
    public var fields: [String: String]
    public var prev: String
    public var hash: String

    /// `prev` of the first record of a log.
    public static let genesis = String(repeating: "0", count: 64)

    public init(seq: UInt64, time: String, host: String, tenant: String? = nil, subject: AuditSubject? = nil,
                event: String, verb: String? = nil, object: String? = nil, decision: AuditDecision? = nil,
                rule: String? = nil, reason: String? = nil, fields: [String: String] = [:],
                prev: String = AuditRecord.genesis, hash: String = "") {
        self.seq = seq
        self.time = time
        self.host = host
        self.tenant = tenant
        self.subject = subject
        self.event = event
        self.verb = verb
        self.object = object
        self.decision = decision
        self.rule = rule
        self.reason = reason
        self.fields = fields
        self.prev = prev
        self.hash = hash
    }

    public var timestamp: AuditTimestamp? { AuditTimestamp(rfc3339: time) }

    /// The canonical bytes (the line without `hash`), and the offset at which
    /// the `,"hash":"…"` member goes to make the line.
    func canonical() -> (bytes: [UInt8], hashAt: Int) {
        var out = [UInt8]()
        out.reserveCapacity(256 + (reason?.utf8.count ?? 0) + (object?.utf8.count ?? 0) + fields.count * 32)
        out.append(0x7b)
        if let decision {
            CanonicalJSON.appendKey("decision", to: &out)
            CanonicalJSON.appendString(decision.rawValue, to: &out)
            out.append(0x2c)
        }
        CanonicalJSON.appendKey("event", to: &out)
        CanonicalJSON.appendString(event, to: &out)
        if !fields.isEmpty {
            out.append(0x2c)
            CanonicalJSON.appendKey("fields", to: &out)
            CanonicalJSON.appendStringObject(fields, to: &out)
        }
        let hashAt = out.count
        func member(_ key: String, _ value: String?) {
            guard let value else { return }
            out.append(0x2c)
            CanonicalJSON.appendKey(key, to: &out)
            CanonicalJSON.appendString(value, to: &out)
        }
        member("host", host)
        member("object", object)
        member("prev", prev)
        member("reason", reason)
        member("rule", rule)
        out.append(0x2c)
        CanonicalJSON.appendKey("seq", to: &out)
        CanonicalJSON.appendInteger(seq, to: &out)
        if let subject {
            out.append(0x2c)
            CanonicalJSON.appendKey("subject", to: &out)
            out.append(0x7b)
            CanonicalJSON.appendKey("pid", to: &out)
            CanonicalJSON.appendInteger(subject.pid, to: &out)
            out.append(0x2c)
            CanonicalJSON.appendKey("session", to: &out)
            CanonicalJSON.appendInteger(subject.session, to: &out)
            out.append(0x2c)
            CanonicalJSON.appendKey("uid", to: &out)
            CanonicalJSON.appendInteger(subject.uid, to: &out)
            out.append(0x7d)
        }
        member("tenant", tenant)
        member("time", time)
        member("verb", verb)
        out.append(0x7d)
        return (out, hashAt)
    }

    /// The canonical bytes: what `hash` is the SHA-256 of.
    public var canonicalBytes: [UInt8] { canonical().bytes }

    /// SHA-256 of the canonical bytes, lowercase hex.
    public var computedHash: String { CanonicalJSON.hex(SHA256.hash(data: canonicalBytes)) }

    /// The line as written, without its newline, for the `hash` it carries.
    public var lineBytes: [UInt8] {
        let (bytes, at) = canonical()
        return Self.insertHash(hash, into: bytes, at: at)
    }

    static func insertHash(_ hash: String, into canonical: [UInt8], at: Int) -> [UInt8] {
        var line = [UInt8]()
        line.reserveCapacity(canonical.count + 76)
        line.append(contentsOf: canonical[..<at])
        line.append(contentsOf: #","hash":""#.utf8)
        line.append(contentsOf: hash.utf8)
        line.append(0x22)
        line.append(contentsOf: canonical[at...])
        return line
    }

    /// Sets `hash` from the canonical bytes and returns the line to write,
    /// newline included.
    mutating func seal() -> [UInt8] {
        let (bytes, at) = canonical()
        hash = CanonicalJSON.hex(SHA256.hash(data: bytes))
        var line = Self.insertHash(hash, into: bytes, at: at)
        line.append(0x0a)
        return line
    }
}

/// Why a line is not a record.
public struct AuditRecordError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public var description: String { message }
}

extension AuditRecord {
    /// Parses one line (without its newline). Strict: every required member
    /// present with the right type, no unknown members. Says nothing about
    /// whether the line is canonical or its hash right; see `AuditChain`.
    public init(line: some Collection<UInt8>) throws {
        let value: JSONValue
        do {
            value = try CanonicalJSON.parse(line)
        } catch let e as JSONSyntaxError {
            throw AuditRecordError(message: "not valid JSON: \(e)")
        }
        guard case .object(let obj) = value else { throw AuditRecordError(message: "not a JSON object") }
        try self.init(object: obj)
    }

    init(object obj: [String: JSONValue]) throws {
        func fail(_ m: String) -> AuditRecordError { AuditRecordError(message: m) }
        func string(_ key: String) throws -> String? {
            guard let v = obj[key] else { return nil }
            guard case .string(let s) = v else { throw fail("\"\(key)\" is \(v.kindName), not a string") }
            return s
        }
        func required(_ key: String) throws -> String {
            guard let s = try string(key) else { throw fail("\"\(key)\" is missing") }
            return s
        }
        func integer<T: FixedWidthInteger>(_ v: JSONValue?, _ key: String, _: T.Type) throws -> T {
            guard let v else { throw fail("\"\(key)\" is missing") }
            guard case .number(let text) = v, let n = T(text) else { throw fail("\"\(key)\" is not an integer in range") }
            return n
        }
        let known: Set<String> = ["decision", "event", "fields", "hash", "host", "object", "prev", "reason", "rule",
                                  "seq", "subject", "tenant", "time", "verb"]
        if let unknown = obj.keys.filter({ !known.contains($0) }).min() {
            throw fail("unknown member \"\(unknown)\"")
        }
        seq = try integer(obj["seq"], "seq", UInt64.self)
        time = try required("time")
        guard AuditTimestamp(rfc3339: time) != nil else { throw fail("\"time\" is not an RFC 3339 time: \(time)") }
        host = try required("host")
        event = try required("event")
        prev = try required("prev")
        guard CanonicalJSON.isLowerHex(prev, count: 64) else { throw fail("\"prev\" is not 64 lowercase hex digits") }
        hash = try required("hash")
        guard CanonicalJSON.isLowerHex(hash, count: 64) else { throw fail("\"hash\" is not 64 lowercase hex digits") }
        tenant = try string("tenant")
        verb = try string("verb")
        object = try string("object")
        rule = try string("rule")
        reason = try string("reason")
        if let d = try string("decision") {
            guard let dec = AuditDecision(rawValue: d) else { throw fail("\"decision\" is \"\(d)\", not allow or deny") }
            decision = dec
        } else {
            decision = nil
        }
        if let s = obj["subject"] {
            guard case .object(let so) = s else { throw fail("\"subject\" is \(s.kindName), not an object") }
            if let extra = so.keys.filter({ !["pid", "session", "uid"].contains($0) }).min() {
                throw fail("unknown member \"subject.\(extra)\"")
            }
            subject = AuditSubject(session: try integer(so["session"], "subject.session", UInt64.self),
                                   pid: try integer(so["pid"], "subject.pid", Int32.self),
                                   uid: try integer(so["uid"], "subject.uid", UInt32.self))
        } else {
            subject = nil
        }
        fields = [:]
        if let f = obj["fields"] {
            guard case .object(let fo) = f else { throw fail("\"fields\" is \(f.kindName), not an object") }
            for (k, v) in fo {
                guard case .string(let s) = v else { throw fail("\"fields.\(k)\" is \(v.kindName), not a string") }
                fields[k] = s
            }
        }
    }
}
