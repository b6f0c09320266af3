import Glibc

/// Answers whether a tenant may do something, from its policy and the usage
/// the router reports. Pure: no I/O, no clock, no state of its own; the
/// router keeps the counts and passes them in, so the same question always
/// gets the same answer.
///
/// Counts (`current`, `currentCount`) are what the tenant holds before the
/// request, over all its sessions. A request that would take it past a quota
/// is refused; one that stays within is allowed even if an earlier reload
/// lowered the quota below what it already holds for other objects.
public struct PolicyEngine: Sendable {
    public let policies: PolicySet

    public init(_ policies: PolicySet) {
        self.policies = policies
    }

    public func policy(_ tenant: String) -> TenantPolicy? { policies[tenant] }

    // MARK: identity

    /// Whether a peer with these credentials (`SO_PEERCRED`) may use the
    /// tenant's socket.
    public func admit(tenant: String, uid: UInt32, gid: UInt32) -> Decision {
        guard let p = policies[tenant] else { return unknown(tenant) }
        if p.identity.uids.contains(uid) { return .allow(rule: "identity.uids") }
        if p.identity.gids.contains(gid) { return .allow(rule: "identity.gids") }
        return .deny(rule: "identity",
                     reason: "uid \(uid) and gid \(gid) are not admitted by \(tenant)'s identity (uids \(sortedIDs(p.identity.uids)), gids \(sortedIDs(p.identity.gids)))",
                     errno: EACCES)
    }

    // MARK: control verbs

    public func allocPD(tenant: String, current: Int) -> Decision {
        guard let p = policies[tenant] else { return unknown(tenant) }
        if let d = count(p, current, p.quotas.protectionDomains, "protectionDomains", "protection domain") { return d }
        return .allow(rule: "quotas.protectionDomains")
    }

    /// `access` is the registration's `IBV_ACCESS_*` bits. Flags in
    /// `IBV_ACCESS_OPTIONAL_RANGE` (relaxed ordering and the like) only tune
    /// performance and are always tolerated.
    public func regMR(tenant: String, bytes: UInt64, access: UInt32, currentCount: Int, currentBytes: UInt64) -> Decision {
        guard let p = policies[tenant] else { return unknown(tenant) }
        let refused = MemoryAccess(rawValue: access & ~(p.memoryAccess.rawValue | MemoryAccess.optionalRange.rawValue))
        if !refused.isEmpty {
            let names = refused.names
            let what = names.count == 1 ? "access \(names[0]) is" : "access flags \(names.joined(separator: ", ")) are"
            return .deny(rule: "memoryAccess", reason: "\(what) not allowed by memoryAccess \(p.memoryAccess)", errno: EACCES)
        }
        let q = p.quotas
        if let largest = q.largestRegionBytes, bytes > largest {
            return .deny(rule: "quotas.largestRegionBytes",
                         reason: "region of \(Units.formatSize(bytes)) exceeds quotas.largestRegionBytes (\(Units.formatSize(largest)))",
                         errno: ENOMEM)
        }
        if let d = count(p, currentCount, q.memoryRegions, "memoryRegions", "memory region") { return d }
        if let total = q.registeredBytes {
            let (after, overflow) = currentBytes.addingReportingOverflow(bytes)
            if overflow || after > total {
                return .deny(rule: "quotas.registeredBytes",
                             reason: "\(tenant) has \(Units.formatSize(currentBytes)) registered; \(Units.formatSize(bytes)) more would exceed quotas.registeredBytes (\(Units.formatSize(total)))",
                             errno: ENOMEM)
            }
        }
        return .allow(rule: "quotas.memoryRegions")
    }

    /// `depth` is the `cqe` asked for.
    public func createCQ(tenant: String, depth: UInt32, current: Int) -> Decision {
        guard let p = policies[tenant] else { return unknown(tenant) }
        if let d = above(depth, p.quotas.completionQueueDepth, "completionQueueDepth", "CQ depth \(depth)") { return d }
        if let d = count(p, current, p.quotas.completionQueues, "completionQueues", "completion queue") { return d }
        return .allow(rule: "quotas.completionQueues")
    }

    /// The QP's requested capabilities (`struct ibv_qp_cap`).
    public func createQP(tenant: String, sendDepth: UInt32, recvDepth: UInt32, sendSGE: UInt32, recvSGE: UInt32,
                         inlineBytes: UInt32, current: Int) -> Decision {
        guard let p = policies[tenant] else { return unknown(tenant) }
        let q = p.quotas
        if let d = above(sendDepth, q.sendQueueDepth, "sendQueueDepth", "send queue depth \(sendDepth)")
            ?? above(recvDepth, q.receiveQueueDepth, "receiveQueueDepth", "receive queue depth \(recvDepth)")
            ?? above(sendSGE, q.sgesPerRequest, "sgesPerRequest", "send requests of \(sendSGE) SGEs")
            ?? above(recvSGE, q.sgesPerRequest, "sgesPerRequest", "receive requests of \(recvSGE) SGEs") {
            return d
        }
        if let limit = q.inlineBytes, UInt64(inlineBytes) > limit {
            return .deny(rule: "quotas.inlineBytes",
                         reason: "inline data of \(Units.formatSize(UInt64(inlineBytes))) exceeds quotas.inlineBytes (\(Units.formatSize(limit)))",
                         errno: EINVAL)
        }
        if let d = count(p, current, q.queuePairs, "queuePairs", "queue pair") { return d }
        return .allow(rule: "quotas.queuePairs")
    }

    // MARK: connections

    /// Whether a QP of `from` may connect to a QP of `to`. Both tenants must
    /// list each other under `peers` (a tenant's own QPs need it to list
    /// itself), and at least one operation must be allowed on the connection.
    public func connect(from: String, to: String) -> Decision {
        guard let a = policies[from] else { return unknown(from) }
        guard let b = policies[to] else {
            return .deny(rule: "peers", reason: "no tenant named \"\(to)\" is defined", errno: EACCES)
        }
        guard let mine = a.peer(to) else {
            let reason = from == to
                ? "\(from) does not list itself under peers, so its QPs may not connect to each other"
                : "\(from) does not list \(to) under peers"
            return .deny(rule: "peers", reason: reason, errno: EACCES)
        }
        guard let theirs = b.peer(from) else {
            return .deny(rule: "\(to):peers",
                         reason: "\(to) does not list \(from) under peers; traffic between tenants needs both to consent",
                         errno: EACCES)
        }
        let offered = a.operations.intersection(mine.operations)
        if offered.isEmpty {
            return .deny(rule: "operations",
                         reason: "none of the operations \(from) lists for \(to) \(mine.operations) is in \(from)'s operations \(a.operations)",
                         errno: EACCES)
        }
        if offered.intersection(theirs.operations).isEmpty {
            return .deny(rule: "\(to):peers.\(from)",
                         reason: "no operation both consent to: \(from) may use \(offered) toward \(to), \(to) allows \(theirs.operations) from \(from)",
                         errno: EACCES)
        }
        return .allow(rule: "peers.\(to)")
    }

    /// The operations a QP of `from` may post on a connection to a QP of `to`:
    /// `from`'s operations, within its peers entry for `to`, within `to`'s
    /// entry for `from`. Empty means no connection. Compute it when the QP
    /// connects (and again on reload); check each work request with
    /// `OperationSet.allowsWireOpcode`.
    public func connectionOperations(from: String, to: String) -> OperationSet {
        guard let a = policies[from], let b = policies[to], let mine = a.peer(to), let theirs = b.peer(from) else {
            return []
        }
        return a.operations.intersection(mine.operations).intersection(theirs.operations)
    }

    /// Why one work request of type `operation` from `from` to `to` is
    /// allowed or refused, naming the list that lacks it. For audit records
    /// and `sluice policy explain`; the data path uses the precomputed mask.
    public func workRequest(from: String, to: String, operation: OperationSet) -> Decision {
        let connection = connect(from: from, to: to)
        guard connection.isAllowed, let a = policies[from], let b = policies[to],
              let mine = a.peer(to), let theirs = b.peer(from) else { return connection }
        let name = operation.names.joined(separator: ", ")
        if !a.operations.isSuperset(of: operation) {
            return .deny(rule: "operations", reason: "\(name) is not in \(from)'s operations \(a.operations)", errno: EACCES)
        }
        if !mine.operations.isSuperset(of: operation) {
            return .deny(rule: "peers.\(to)",
                         reason: "\(from)'s peers entry for \(to) allows \(mine.operations), not \(name)", errno: EACCES)
        }
        if !theirs.operations.isSuperset(of: operation) {
            return .deny(rule: "\(to):peers.\(from)",
                         reason: "\(to)'s peers entry for \(from) allows \(theirs.operations), not \(name)", errno: EACCES)
        }
        return .allow(rule: "peers.\(to)")
    }

    // MARK: pieces

    private func unknown(_ tenant: String) -> Decision {
        .deny(rule: "identity", reason: "no tenant named \"\(tenant)\" is defined", errno: EACCES)
    }

    /// A count quota: refused when the tenant already holds `quota` objects.
    private func count(_ p: TenantPolicy, _ held: Int, _ quota: Int?, _ field: String, _ noun: String) -> Decision? {
        guard let quota, held >= quota else { return nil }
        let reason: String
        if quota == 0 {
            reason = "quotas.\(field) is 0: \(p.name) may not hold any \(noun)s"
        } else if held == quota {
            reason = "\(p.name) already holds \(held) \(plural(held, noun)), the most quotas.\(field) allows (\(quota))"
        } else {
            reason = "\(p.name) already holds \(held) \(plural(held, noun)), more than quotas.\(field) allows (\(quota))"
        }
        return .deny(rule: "quotas.\(field)", reason: reason, errno: ENOMEM)
    }

    /// A per-request bound: a depth or SGE count above its quota is EINVAL,
    /// as libibverbs answers a value above the device's limit.
    private func above(_ value: UInt32, _ quota: Int?, _ field: String, _ what: String) -> Decision? {
        guard let quota, Int(value) > quota else { return nil }
        let verb = what.hasPrefix("send requests") || what.hasPrefix("receive requests") ? "exceed" : "exceeds"
        return .deny(rule: "quotas.\(field)", reason: "\(what) \(verb) quotas.\(field) (\(quota))", errno: EINVAL)
    }

    private func plural(_ n: Int, _ noun: String) -> String { n == 1 ? noun : noun + "s" }

    private func sortedIDs(_ ids: Set<UInt32>) -> String {
        "[" + ids.sorted().map(String.init).joined(separator: ", ") + "]"
    }
}
