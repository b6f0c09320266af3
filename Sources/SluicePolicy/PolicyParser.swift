import Yams

/// Reads one `TenantPolicy` document, strictly, reporting every error.
/// Never through `Codable`: that would lose positions and ignore unknown keys.
enum PolicyParser {
    /// What one file yielded. `policy` is nil when the file had errors; `name`
    /// is set whenever `metadata.name` was readable, so that other files'
    /// peers naming this tenant are not reported as unknown as well.
    struct Parsed {
        var policy: TenantPolicy?
        var name: String?
        var errors: [PolicyError]
        /// What the checks across files need, kept even when the file has
        /// other errors so that one run reports everything: the name, the
        /// pool and each peer entry's tenant, with where they are.
        var nameAt: ErrorAnchor?
        var pool: (IPv4Pool, ErrorAnchor)?
        var peerTenants: [(tenant: String, index: Int, at: ErrorAnchor)] = []
    }

    static let apiVersion = "sluice/v1"
    static let kind = "TenantPolicy"
    static let specFields = ["identity", "addressPool", "quotas", "memoryAccess", "operations", "peers", "rateLimits", "keyGuessing"]
    static let quotaFields = ["protectionDomains", "memoryRegions", "registeredBytes", "largestRegionBytes",
                              "completionQueues", "completionQueueDepth", "queuePairs", "sendQueueDepth",
                              "receiveQueueDepth", "sgesPerRequest", "inlineBytes"]
    static let rateLimitsFields = ["tenant", "queuePair", "weight", "minimumRequestBytes", "controlVerbs"]
    static let rateFields = ["bandwidth", "operations", "burstBytes", "burstOperations"]
    static let controlVerbFields = ["operations", "burstOperations"]

    static func parse(_ text: String, file: String) -> Parsed {
        let doc: YAMLDocument
        switch YAMLDocument.compose(text, file: file) {
        case .failure(let e): return Parsed(policy: nil, name: nil, errors: [e])
        case .success(let d): doc = d
        }
        let r = FieldReader(doc)
        var out = Parsed(policy: nil, name: nil, errors: [])
        guard let top = r.mapping(doc.root, "", allowed: ["apiVersion", "kind", "metadata", "spec"]) else {
            out.errors = r.errors
            return out
        }
        if let n = r.required(top, "apiVersion"), let v = r.string(n, "apiVersion"), v != apiVersion {
            r.fail(n, "apiVersion", "Unsupported value: \"\(v)\": supported values: \"\(apiVersion)\"")
        }
        if let n = r.required(top, "kind"), let v = r.string(n, "kind"), v != kind {
            r.fail(n, "kind", "Unsupported value: \"\(v)\": supported values: \"\(kind)\"")
        }
        if let n = r.required(top, "metadata"), let meta = r.mapping(n, "metadata", allowed: ["name"]),
           let nameNode = r.required(meta, "name"), let name = dnsLabel(r, nameNode, "metadata.name") {
            out.name = name
            out.nameAt = r.anchor(nameNode)
        }
        var policy = TenantPolicy(name: out.name ?? "", identity: Identity(), source: file)
        if let n = r.required(top, "spec"), let spec = r.mapping(n, "spec", allowed: specFields) {
            readSpec(r, spec, into: &policy, &out)
        }
        // The walk visits some fields out of order (unknown keys first);
        // report in reading order.
        out.errors = r.errors.enumerated().sorted { a, b in
            (a.element.line, a.element.column, a.offset) < (b.element.line, b.element.column, b.offset)
        }.map(\.element)
        if out.errors.isEmpty { out.policy = policy }
        return out
    }

    private static func readSpec(_ r: FieldReader, _ spec: FieldReader.Fields,
                                 into p: inout TenantPolicy, _ out: inout Parsed) {
        if let n = r.required(spec, "identity") {
            p.identity = identity(r, n) ?? Identity()
        }
        if let n = spec["addressPool"], let text = r.string(n, "spec.addressPool") {
            switch IPv4Pool.parse(text) {
            case .success(let pool):
                p.addressPool = pool
                out.pool = r.anchor(n).map { (pool, $0) }
            case .failure(let why):
                r.fail(n, "spec.addressPool", "Invalid value: \"\(text)\": \(why)")
            }
        }
        if let n = spec["quotas"] { p.quotas = quotas(r, n) }
        if let n = spec["memoryAccess"] { p.memoryAccess = memoryAccess(r, n) }
        if let n = spec["operations"] {
            p.operations = names(r, n, "spec.operations", OperationSet.names, what: "operations") ?? []
        }
        if let n = spec["peers"] { p.peers = peers(r, n, &out) }
        if let n = spec["rateLimits"] { p.rateLimits = rateLimits(r, n) }
        if let n = spec["keyGuessing"] { p.keyGuessing = keyGuessing(r, n) }
    }

    private static func keyGuessing(_ r: FieldReader, _ node: Node) -> KeyGuessing {
        var k = KeyGuessing()
        guard let m = r.mapping(node, "spec.keyGuessing", allowed: ["maxFailures", "windowSeconds", "quarantine"]) else { return k }
        if let n = m["maxFailures"], let v = r.integer(n, "spec.keyGuessing.maxFailures", 1...KeyGuessing.maxFailuresLimit) {
            k.maxFailures = v
        }
        if let n = m["windowSeconds"], let v = r.integer(n, "spec.keyGuessing.windowSeconds", 1...KeyGuessing.maxWindowSeconds) {
            k.windowSeconds = v
        }
        if let n = m["quarantine"], let v = r.boolean(n, "spec.keyGuessing.quarantine") { k.quarantine = v }
        return k
    }

    // MARK: sections

    private static func identity(_ r: FieldReader, _ node: Node) -> Identity? {
        guard let m = r.mapping(node, "spec.identity", allowed: ["uids", "gids"]) else { return nil }
        let before = r.errors.count
        let uids = m["uids"].map { ids(r, $0, "spec.identity.uids") } ?? []
        let gids = m["gids"].map { ids(r, $0, "spec.identity.gids") } ?? []
        if uids.isEmpty && gids.isEmpty && r.errors.count == before {
            r.fail(node, "spec.identity", "Required value: at least one uid or gid must be admitted")
        }
        return Identity(uids: uids, gids: gids)
    }

    private static func ids(_ r: FieldReader, _ node: Node, _ path: String) -> Set<UInt32> {
        guard let items = r.sequence(node, path, of: "numeric ids") else { return [] }
        var out = Set<UInt32>()
        for (i, item) in items.enumerated() {
            guard let v = r.integer(item, "\(path)[\(i)]", 0...Int(UInt32.max)) else { continue }
            if !out.insert(UInt32(v)).inserted {
                r.fail(item, "\(path)[\(i)]", "Duplicate value: \(v)")
            }
        }
        return out
    }

    private static func quotas(_ r: FieldReader, _ node: Node) -> Quotas {
        var q = Quotas()
        guard let m = r.mapping(node, "spec.quotas", allowed: quotaFields) else { return q }
        func count(_ key: String) -> Int? {
            m[key].flatMap { r.integer($0, "spec.quotas.\(key)", 0...Quotas.maxCount) }
        }
        func bytes(_ key: String, max: UInt64 = .max) -> UInt64? {
            m[key].flatMap { r.size($0, "spec.quotas.\(key)", max: max) }
        }
        q.protectionDomains = count("protectionDomains")
        q.memoryRegions = count("memoryRegions")
        q.registeredBytes = bytes("registeredBytes")
        q.largestRegionBytes = bytes("largestRegionBytes")
        q.completionQueues = count("completionQueues")
        q.completionQueueDepth = count("completionQueueDepth")
        q.queuePairs = count("queuePairs")
        q.sendQueueDepth = count("sendQueueDepth")
        q.receiveQueueDepth = count("receiveQueueDepth")
        q.sgesPerRequest = count("sgesPerRequest")
        q.inlineBytes = bytes("inlineBytes", max: Quotas.maxInlineBytes)
        if let largest = q.largestRegionBytes, let total = q.registeredBytes, largest > total, let n = m["largestRegionBytes"] {
            r.fail(n, "spec.quotas.largestRegionBytes",
                   "Invalid value: \(r.quotedUnlessNumber(n.scalar?.string ?? "")): must be <= quotas.registeredBytes (\(Units.formatSize(total)))")
        }
        return q
    }

    private static func memoryAccess(_ r: FieldReader, _ node: Node) -> MemoryAccess {
        guard let access = names(r, node, "spec.memoryAccess", MemoryAccess.names, what: "access flags") else {
            return .defaultAllowed
        }
        // libibverbs refuses remote write or atomic access without local write
        // (EINVAL), so allowing one without the other allows nothing.
        for (name, flag) in [("remoteWrite", MemoryAccess.remoteWrite), ("remoteAtomic", .remoteAtomic)]
        where access.contains(flag) && !access.contains(.localWrite) {
            r.fail(node, "spec.memoryAccess",
                   "Invalid value: \(access): \(name) needs localWrite (libibverbs refuses \(name) without it)")
        }
        return access
    }

    /// A list of names from a vocabulary, each at most once.
    private static func names<S: OptionSet>(_ r: FieldReader, _ node: Node, _ path: String,
                                            _ vocabulary: [(String, S)], what: String) -> S? where S.Element == S {
        guard let items = r.sequence(node, path, of: what) else { return nil }
        var out: S = []
        var ok = true
        for (i, item) in items.enumerated() {
            guard let name = r.string(item, "\(path)[\(i)]") else { ok = false; continue }
            guard let value = vocabulary.first(where: { $0.0 == name })?.1 else {
                let supported = vocabulary.map { "\"\($0.0)\"" }.joined(separator: ", ")
                r.fail(item, "\(path)[\(i)]", "Unsupported value: \"\(name)\": supported values: \(supported)")
                ok = false
                continue
            }
            if out.contains(value) {
                r.fail(item, "\(path)[\(i)]", "Duplicate value: \"\(name)\"")
                ok = false
            }
            out.insert(value)
        }
        return ok ? out : nil
    }

    private static func peers(_ r: FieldReader, _ node: Node, _ out: inout Parsed) -> [PeerRule] {
        guard let items = r.sequence(node, "spec.peers", of: "peer entries") else { return [] }
        var rules: [PeerRule] = []
        for (i, item) in items.enumerated() {
            let path = "spec.peers[\(i)]"
            guard let m = r.mapping(item, path, allowed: ["tenant", "operations"]) else { continue }
            var tenant: String?
            if let n = r.required(m, "tenant"), let t = dnsLabel(r, n, "\(path).tenant") {
                if out.peerTenants.contains(where: { $0.tenant == t }) {
                    r.fail(n, "\(path).tenant", "Duplicate value: \"\(t)\": one entry per peer tenant")
                } else {
                    tenant = t
                    if let at = r.anchor(n) { out.peerTenants.append((t, i, at)) }
                }
            }
            var ops: OperationSet?
            if let n = r.required(m, "operations") {
                ops = names(r, n, "\(path).operations", OperationSet.names, what: "operations")
                if ops == [] {
                    r.fail(n, "\(path).operations",
                           "Invalid value: []: must list at least one operation; remove the entry to refuse the peer")
                    ops = nil
                }
            }
            if let tenant, let ops { rules.append(PeerRule(tenant: tenant, operations: ops)) }
        }
        return rules
    }

    private static func rateLimits(_ r: FieldReader, _ node: Node) -> RateLimits {
        var limits = RateLimits()
        guard let m = r.mapping(node, "spec.rateLimits", allowed: rateLimitsFields) else { return limits }
        limits.tenant = m["tenant"].flatMap { rateLimit(r, $0, "spec.rateLimits.tenant") }
        limits.queuePair = m["queuePair"].flatMap { rateLimit(r, $0, "spec.rateLimits.queuePair") }
        if let n = m["weight"], let w = r.integer(n, "spec.rateLimits.weight", RateLimits.weights) {
            limits.weight = w
        }
        if let n = m["minimumRequestBytes"],
           let v = r.size(n, "spec.rateLimits.minimumRequestBytes", max: RateLimits.maxMinimumRequestBytes) {
            limits.minimumRequestBytes = v
        }
        limits.controlVerbs = m["controlVerbs"].flatMap { controlVerbs(r, $0, "spec.rateLimits.controlVerbs") }
        return limits
    }

    /// `controlVerbs`: an operation rate (required) and its optional burst.
    private static func controlVerbs(_ r: FieldReader, _ node: Node, _ path: String) -> ControlVerbLimit? {
        guard let m = r.mapping(node, path, allowed: controlVerbFields) else { return nil }
        let rate = r.required(m, "operations").flatMap { r.operationRate($0, "\(path).operations") }
        let burst = m["burstOperations"].flatMap { r.integer($0, "\(path).burstOperations", 0...Int.max) }.map { UInt64($0) }
        if burst == 0, let n = m["burstOperations"] {
            r.fail(n, "\(path).burstOperations", "Invalid value: 0: must be > 0")
        }
        guard let rate, burst != 0 else { return nil }
        return ControlVerbLimit(operations: rate, burstOperations: burst)
    }

    private static func rateLimit(_ r: FieldReader, _ node: Node, _ path: String) -> RateLimit? {
        guard let m = r.mapping(node, path, allowed: rateFields) else { return nil }
        var limit = RateLimit()
        limit.bandwidth = m["bandwidth"].flatMap { r.bandwidth($0, "\(path).bandwidth") }
        limit.operations = m["operations"].flatMap { r.operationRate($0, "\(path).operations") }
        limit.burstBytes = m["burstBytes"].flatMap { r.size($0, "\(path).burstBytes") }
        limit.burstOperations = m["burstOperations"].flatMap { r.integer($0, "\(path).burstOperations", 0...Int.max) }
            .map { UInt64($0) }
        if m["bandwidth"] == nil && m["operations"] == nil {
            r.fail(node, path, "Required value: at least one of bandwidth, operations")
        }
        if let n = m.entries["burstBytes"]?.key, m["bandwidth"] == nil {
            r.fail(n, "\(path).burstBytes", "Forbidden: needs bandwidth to be set")
        }
        if let n = m.entries["burstOperations"]?.key, m["operations"] == nil {
            r.fail(n, "\(path).burstOperations", "Forbidden: needs operations to be set")
        }
        if limit.burstBytes == 0, let n = m["burstBytes"] {
            r.fail(n, "\(path).burstBytes", "Invalid value: 0: must be > 0")
        }
        if limit.burstOperations == 0, let n = m["burstOperations"] {
            r.fail(n, "\(path).burstOperations", "Invalid value: 0: must be > 0")
        }
        return limit
    }

    // MARK: helpers

    /// A DNS label (RFC 1123): it names a socket file and appears in rules.
    private static func dnsLabel(_ r: FieldReader, _ node: Node, _ path: String) -> String? {
        guard let s = r.string(node, path) else { return nil }
        let ok = s.utf8.count <= 63 && s.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
            && s.first != "-" && s.last != "-"
        guard ok else {
            r.fail(node, path, "Invalid value: \"\(s)\": must be a DNS label (lower-case letters, digits and '-', at most 63)")
            return nil
        }
        return s
    }
}
