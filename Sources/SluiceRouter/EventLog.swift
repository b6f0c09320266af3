#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceAudit

/// The router's side of the audit log: every control decision and every
/// data-path denial becomes a record of the tamper-evident `AuditWriter`,
/// which never blocks this thread (a bounded queue sits between them, and a
/// full queue is itself recorded). Data-path allows are only counted, per
/// tenant, and written as periodic `summary` records.
public final class EventLog {
    public enum Decision: String { case allow, deny }

    let writer: AuditWriter
    /// Allows of sessions that closed since the last summary, per tenant
    /// (live sessions count their own, on the data path, without hashing).
    private var closedAllows: [String: UInt64] = [:]
    public private(set) var countedAllows: UInt64 = 0

    public init(_ configuration: AuditConfiguration) throws {
        writer = try AuditWriter(configuration)
    }

    public struct Subject {
        public var tenant: String
        public var session: UInt64
        public var pid: Int32
        public var uid: UInt32
    }

    public func record(event: String, subject: Subject? = nil, verb: String? = nil, object: String? = nil,
                       decision: Decision? = nil, rule: String? = nil, reason: String? = nil, fields: [String: String] = [:]) {
        writer.record(event: event, tenant: subject?.tenant,
                      subject: subject.map { AuditSubject(session: $0.session, pid: $0.pid, uid: $0.uid) },
                      verb: verb, object: object, decision: decision.map { $0 == .allow ? .allow : .deny },
                      rule: rule, reason: reason, fields: fields)
    }

    /// Keeps the allow count of a session that is closing.
    func carry(tenant: String, allows: UInt64) {
        guard allows > 0 else { return }
        closedAllows[tenant, default: 0] &+= allows
    }

    /// One `summary` record per tenant with work since the last
    /// one; `live` are the counts the open sessions gathered (then reset).
    /// `throttled` adds, per tenant, how much shaping held it back.
    func writeSummaries(live: [String: UInt64], throttled: [String: [String: String]] = [:]) {
        var total = closedAllows
        for (t, n) in live where n > 0 { total[t, default: 0] &+= n }
        for t in throttled.keys where total[t] == nil { total[t] = 0 }
        for (tenant, n) in total.sorted(by: { $0.key < $1.key }) {
            countedAllows &+= n
            var fields = ["allowed": String(n)]
            fields.merge(throttled[tenant] ?? [:]) { a, _ in a }
            writer.record(event: "summary", tenant: tenant, decision: .allow, rule: "operations", fields: fields)
        }
        closedAllows.removeAll(keepingCapacity: true)
    }

    func close() {
        writer.close()
    }
}
