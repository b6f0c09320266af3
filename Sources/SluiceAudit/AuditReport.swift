/// A summary of a log per tenant, aureport style. Build it by adding
/// records in order.
///
/// It reads these conventions (see docs/audit.md): `session.open`,
/// `session.close`, `session.refused` events; `throttle` events; `summary`
/// events whose `allowed` field counts data-path work requests allowed since
/// the previous summary; `audit.loss` events whose `lost` field counts lost
/// records. Records without a tenant (router and audit events) are under
/// `(router)`.
public struct AuditReport: Codable, Equatable, Sendable {
    public struct Count: Codable, Equatable, Sendable {
        public var name: String
        public var count: Int
    }

    public struct Tenant: Codable, Equatable, Sendable {
        public var tenant: String
        public var records = 0
        public var allow = 0
        public var deny = 0
        public var topDenialRules: [Count] = []
        public var topDeniedVerbs: [Count] = []
        public var throttleRecords = 0
        /// Distinct objects (QPs) named by throttle records.
        public var throttledObjects = 0
        public var sessionsOpened = 0
        public var sessionsClosed = 0
        public var sessionsRefused = 0
        /// Sum of `allowed` over `summary` records: data-path allows, counted not logged.
        public var dataPathAllowsCounted: UInt64 = 0

        fileprivate var rules: [String: Int] = [:]
        fileprivate var verbs: [String: Int] = [:]
        fileprivate var throttled: Set<String> = []

        init(tenant: String) { self.tenant = tenant }

        enum CodingKeys: String, CodingKey {
            case tenant, records, allow, deny, topDenialRules, topDeniedVerbs, throttleRecords, throttledObjects
            case sessionsOpened, sessionsClosed, sessionsRefused, dataPathAllowsCounted
        }
    }

    public var files: [String]
    public var records = 0
    public var unreadableLines = 0
    public var firstTime: String?
    public var lastTime: String?
    public var firstSeq: UInt64?
    public var lastSeq: UInt64?
    /// `audit.loss` records, and the records they say were lost.
    public var lossRecords = 0
    public var lostRecords: UInt64 = 0
    public var tenants: [Tenant] = []

    /// How many entries the top lists keep.
    public var top = 5

    private var byName: [String: Int] = [:]

    enum CodingKeys: String, CodingKey {
        case files, records, unreadableLines, firstTime, lastTime, firstSeq, lastSeq, lossRecords, lostRecords, tenants
    }

    public init(files: [String]) { self.files = files }

    public mutating func add(_ r: AuditRecord) {
        records += 1
        if firstTime == nil { firstTime = r.time }
        lastTime = r.time
        if firstSeq == nil { firstSeq = r.seq }
        lastSeq = r.seq
        if r.event == "audit.loss" {
            lossRecords += 1
            lostRecords = lostRecords.saturatingAdd(UInt64(r.fields["lost"] ?? "") ?? 0)
        }
        let name = r.tenant ?? "(router)"
        let i: Int
        if let existing = byName[name] {
            i = existing
        } else {
            i = tenants.count
            byName[name] = i
            tenants.append(Tenant(tenant: name))
        }
        var t = tenants[i]
        t.records += 1
        switch r.decision {
        case .allow?: t.allow += 1
        case .deny?:
            t.deny += 1
            t.rules[r.rule ?? "(no rule)", default: 0] += 1
            t.verbs[r.verb ?? "(\(r.event))", default: 0] += 1
        case nil: break
        }
        switch r.event {
        case "session.open": t.sessionsOpened += 1
        case "session.close": t.sessionsClosed += 1
        case "session.refused": t.sessionsRefused += 1
        case "throttle":
            t.throttleRecords += 1
            if let o = r.object { t.throttled.insert(o) }
        case "summary": t.dataPathAllowsCounted = t.dataPathAllowsCounted.saturatingAdd(UInt64(r.fields["allowed"] ?? "") ?? 0)
        default: break
        }
        tenants[i] = t
    }

    /// Fills the top lists and orders tenants by name (`(router)` last).
    public mutating func finish() {
        func ranked(_ d: [String: Int]) -> [Count] {
            d.map { Count(name: $0.key, count: $0.value) }
                .sorted { $0.count != $1.count ? $0.count > $1.count : $0.name < $1.name }
                .prefix(top).map { $0 }
        }
        for i in tenants.indices {
            tenants[i].topDenialRules = ranked(tenants[i].rules)
            tenants[i].topDeniedVerbs = ranked(tenants[i].verbs)
            tenants[i].throttledObjects = tenants[i].throttled.count
        }
        tenants.sort { a, b in
            if (a.tenant == "(router)") != (b.tenant == "(router)") { return b.tenant == "(router)" }
            return a.tenant < b.tenant
        }
        byName = Dictionary(uniqueKeysWithValues: tenants.enumerated().map { ($1.tenant, $0) })
    }

    /// Reads `files` and reports the records `query` matches.
    public static func build(files: [String], query: AuditQuery = AuditQuery()) throws -> AuditReport {
        var report = AuditReport(files: files)
        let summary = try AuditReader(files: files).forEach { e in
            if query.matches(e.record) { report.add(e.record) }
            return true
        }
        report.unreadableLines = summary.unreadable
        report.finish()
        return report
    }
}

extension UInt64 {
    /// Counts from a file must not be able to trap the reader.
    func saturatingAdd(_ n: UInt64) -> UInt64 {
        let (v, o) = addingReportingOverflow(n)
        return o ? .max : v
    }
}
