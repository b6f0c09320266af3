/// One tenant's policy, as loaded from its file. Everything the router may
/// let this tenant do is here; what is absent is refused (or, for quotas,
/// left to the device's own limits).
public struct TenantPolicy: Equatable, Sendable {
    /// `metadata.name`: a DNS label; names the socket `<runtime-dir>/tenants/<name>.sock`.
    public var name: String
    public var identity: Identity
    /// `spec.addressPool`; nil when the file does not set one (the router's
    /// shared pool is used).
    public var addressPool: IPv4Pool?
    public var quotas: Quotas
    /// `spec.memoryAccess`: the `IBV_ACCESS_*` flags a registration may ask for.
    public var memoryAccess: MemoryAccess
    /// `spec.operations`: the work-request opcodes this tenant may post.
    public var operations: OperationSet
    /// `spec.peers`, in file order; one entry per tenant.
    public var peers: [PeerRule]
    public var rateLimits: RateLimits
    /// `spec.keyGuessing`: when failed remote accesses mean an attack.
    public var keyGuessing: KeyGuessing
    /// The file it was loaded from, for messages.
    public var source: String

    public init(name: String, identity: Identity, addressPool: IPv4Pool? = nil, quotas: Quotas = Quotas(),
                memoryAccess: MemoryAccess = .defaultAllowed, operations: OperationSet = [],
                peers: [PeerRule] = [], rateLimits: RateLimits = RateLimits(), keyGuessing: KeyGuessing = KeyGuessing(),
                source: String = "") {
        self.name = name
        self.identity = identity
        self.addressPool = addressPool
        self.quotas = quotas
        self.memoryAccess = memoryAccess
        self.operations = operations
        self.peers = peers
        self.rateLimits = rateLimits
        self.keyGuessing = keyGuessing
        self.source = source
    }

    /// This tenant's entry for `tenant` under `spec.peers`, if any.
    public func peer(_ tenant: String) -> PeerRule? {
        peers.first { $0.tenant == tenant }
    }
}

/// `spec.identity`: who may use the tenant's socket (`SO_PEERCRED`).
public struct Identity: Equatable, Sendable {
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>

    public init(uids: Set<UInt32> = [], gids: Set<UInt32> = []) {
        self.uids = uids
        self.gids = gids
    }

    public func admits(uid: UInt32, gid: UInt32) -> Bool {
        uids.contains(uid) || gids.contains(gid)
    }
}

/// `spec.quotas`: per-object-type limits. nil means "no limit beyond the
/// device's". Counts are objects held at once by the tenant (all its
/// sessions together); depths, SGEs and inline bytes bound each request.
public struct Quotas: Equatable, Sendable {
    public var protectionDomains: Int?
    public var memoryRegions: Int?
    /// Bytes registered in all the tenant's memory regions together.
    public var registeredBytes: UInt64?
    /// Bytes in any one memory region.
    public var largestRegionBytes: UInt64?
    public var completionQueues: Int?
    /// Entries in one CQ (`cqe`).
    public var completionQueueDepth: Int?
    public var queuePairs: Int?
    /// `max_send_wr` of one QP.
    public var sendQueueDepth: Int?
    /// `max_recv_wr` of one QP.
    public var receiveQueueDepth: Int?
    /// `max_send_sge` and `max_recv_sge` of one QP.
    public var sgesPerRequest: Int?
    /// `max_inline_data` of one QP.
    public var inlineBytes: UInt64?

    public init(protectionDomains: Int? = nil, memoryRegions: Int? = nil, registeredBytes: UInt64? = nil,
                largestRegionBytes: UInt64? = nil, completionQueues: Int? = nil, completionQueueDepth: Int? = nil,
                queuePairs: Int? = nil, sendQueueDepth: Int? = nil, receiveQueueDepth: Int? = nil,
                sgesPerRequest: Int? = nil, inlineBytes: UInt64? = nil) {
        self.protectionDomains = protectionDomains
        self.memoryRegions = memoryRegions
        self.registeredBytes = registeredBytes
        self.largestRegionBytes = largestRegionBytes
        self.completionQueues = completionQueues
        self.completionQueueDepth = completionQueueDepth
        self.queuePairs = queuePairs
        self.sendQueueDepth = sendQueueDepth
        self.receiveQueueDepth = receiveQueueDepth
        self.sgesPerRequest = sgesPerRequest
        self.inlineBytes = inlineBytes
    }

    /// Largest value a count or depth quota may take (the verbs API's `int`).
    public static let maxCount = Int(Int32.max)
    /// Largest `inlineBytes` (the verbs API's `uint32_t max_inline_data`).
    public static let maxInlineBytes = UInt64(UInt32.max)
}

/// One entry of `spec.peers`: a tenant this one may connect QPs to, and the
/// operations allowed on such connections. Cross-tenant traffic needs the
/// other tenant's matching entry too.
public struct PeerRule: Equatable, Sendable {
    public var tenant: String
    public var operations: OperationSet

    public init(tenant: String, operations: OperationSet) {
        self.tenant = tenant
        self.operations = operations
    }
}

/// `spec.rateLimits`. Parsed and validated here; the router's shaper enforces
/// them: a work request that does not fit its buckets waits (it is shaped,
/// never dropped), and is charged before it executes.
public struct RateLimits: Equatable, Sendable {
    /// All the tenant's traffic together.
    public var tenant: RateLimit?
    /// Each QP of the tenant on its own.
    public var queuePair: RateLimit?
    /// `weight`: the tenant's weight in the router's deficit-round-robin
    /// data-path scheduler, 1...1000. When tenants compete for the router,
    /// each gets a share of the router's time proportional to its weight.
    public var weight: Int
    /// `minimumRequestBytes`: the least a work request is charged in the byte
    /// buckets (its cost is `max(bytes, minimumRequestBytes)`), so floods of
    /// tiny requests are not free. 0...`maxMinimumRequestBytes`.
    public var minimumRequestBytes: UInt64
    /// `controlVerbs`: the tenant's rate of object-creating and -changing
    /// control verbs (create_qp, reg_mr, modify_qp...); nil means no limit.
    public var controlVerbs: ControlVerbLimit?

    public init(tenant: RateLimit? = nil, queuePair: RateLimit? = nil, weight: Int = RateLimits.defaultWeight,
                minimumRequestBytes: UInt64 = RateLimits.defaultMinimumRequestBytes,
                controlVerbs: ControlVerbLimit? = nil) {
        self.tenant = tenant
        self.queuePair = queuePair
        self.weight = weight
        self.minimumRequestBytes = minimumRequestBytes
        self.controlVerbs = controlVerbs
    }

    /// `weight` when the file does not set it.
    public static let defaultWeight = 1
    /// The values `weight` may take.
    public static let weights = 1...1000
    /// `minimumRequestBytes` when the file does not set it: a cache line, so
    /// that a zero-byte request costs what moving a header costs.
    public static let defaultMinimumRequestBytes: UInt64 = 64
    /// Largest `minimumRequestBytes` (1 MiB).
    public static let maxMinimumRequestBytes: UInt64 = 1 << 20
}

/// `spec.rateLimits.controlVerbs`: one operation bucket for the tenant's
/// control verbs, all sessions together.
public struct ControlVerbLimit: Equatable, Sendable {
    /// Control verbs per second, above zero.
    public var operations: UInt64
    /// Bucket size in control verbs; nil means the default (see `burstOperationsOrDefault`).
    public var burstOperations: UInt64?

    public init(operations: UInt64, burstOperations: UInt64? = nil) {
        self.operations = operations
        self.burstOperations = burstOperations
    }

    /// The burst when the file does not set one: a tenth of a second at the
    /// rate, at least 1.
    public var burstOperationsOrDefault: UInt64 {
        burstOperations ?? max(1, operations / 10)
    }
}

/// A token-bucket pair: bytes and operations, each with a rate and a burst.
/// At least one rate is set; a burst is set only with its rate.
public struct RateLimit: Equatable, Sendable {
    /// Bytes per second.
    public var bandwidth: UInt64?
    /// Work requests per second.
    public var operations: UInt64?
    /// Bucket size in bytes; nil means the default (see `burstBytesOrDefault`).
    public var burstBytes: UInt64?
    /// Bucket size in work requests; nil means the default.
    public var burstOperations: UInt64?

    public init(bandwidth: UInt64? = nil, operations: UInt64? = nil, burstBytes: UInt64? = nil, burstOperations: UInt64? = nil) {
        self.bandwidth = bandwidth
        self.operations = operations
        self.burstBytes = burstBytes
        self.burstOperations = burstOperations
    }

    /// The burst when the file does not set one: a tenth of a second at the
    /// rate (at least 1), so an idle tenant cannot bank a long flood.
    public var burstBytesOrDefault: UInt64? {
        burstBytes ?? bandwidth.map { max(1, $0 / 10) }
    }

    public var burstOperationsOrDefault: UInt64? {
        burstOperations ?? operations.map { max(1, $0 / 10) }
    }
}

/// `spec.keyGuessing`: the detector of remote-key guessing (ReDMArk). A
/// remote access that fails (a key that does not resolve in the peer's
/// protection domain, or that does not cover the range or grant the access)
/// counts against the tenant; `maxFailures` of them within `windowSeconds`
/// mean guessing: the tenant's faulting QPs go to the error state, an alert is
/// audited and, with `quarantine`, the tenant may not create or connect QPs
/// until an operator clears it. A program that works never fails a remote
/// access, so the defaults are strict.
public struct KeyGuessing: Equatable, Sendable {
    public var maxFailures: Int
    public var windowSeconds: Int
    public var quarantine: Bool

    public init(maxFailures: Int = 32, windowSeconds: Int = 10, quarantine: Bool = false) {
        self.maxFailures = maxFailures
        self.windowSeconds = windowSeconds
        self.quarantine = quarantine
    }

    public static let maxFailuresLimit = 1_000_000
    public static let maxWindowSeconds = 86_400
}
