import Foundation
import SluicePolicy

/// The router's hooks into the cluster: kept here so that Router.swift only
/// holds the calls.
extension Router {
    func serviceCluster(_ which: UInt64, now: UInt64) {
        guard let c = cluster else { return }
        if which == 1 {
            if let files = c.directoryChanged() { applyPoliciesFromDirectory(files) }
        }
        c.service(now: now)
    }

    /// A policy set from etcd is validated whole, as a reload: a bad file
    /// leaves the policies in force.
    func applyPoliciesFromDirectory(_ files: [PolicyFile]) {
        do {
            let set = try PolicySet(files: files)
            let problems = apply(set, requestedBy: "etcd")
            for p in problems {
                FileHandle.standardError.write("sluice-router: policy from etcd: \(p)\n".data(using: .utf8)!)
            }
        } catch {
            log.record(event: "policy.reload", decision: .deny, rule: "policy", reason: "\(error)", fields: ["requestedBy": "etcd"])
            FileHandle.standardError.write("sluice-router: policies from etcd refused, the old ones stay in force:\n\(error)\n".data(using: .utf8)!)
        }
    }
}

extension Router {
    /// In a cluster, a session's LID and address come from this router's
    /// own ranges in the directory, so that every router can tell which
    /// router a destination belongs to. The tenant's `addressPool` still
    /// applies: the address must be in both.
    func allocateClusterEndpoint(tenant: String, _ c: ClusterAgent) -> (UInt16, UInt32)? {
        guard let me = c.directory.router(named: c.config.name) ?? c.ownEntry else { return nil }
        var rng = SystemRandomNumberGenerator()
        let lidCount = me.lids.reduce(0) { $0 + Int($1.count) }
        guard endpointsByLID.count < lidCount else { return nil }
        func randomLID() -> UInt16 {
            var k = Int.random(in: 0..<lidCount, using: &rng)
            for r in me.lids {
                if k < r.count { return r.lowerBound + UInt16(k) }
                k -= r.count
            }
            return me.lids[0].lowerBound
        }
        var lid = randomLID()
        while endpointsByLID[lid] != nil { lid = randomLID() }
        let own = engine.policy(tenant)?.addressPool
        let pools = engine.policies.tenants.compactMap(\.addressPool)
        func usable(_ a: UInt32) -> Bool {
            endpointsByIPv4[a] == nil && (own.map { $0.contains(a) } ?? !pools.contains(where: { $0.contains(a) }))
        }
        for _ in 0..<4096 {
            let pool = me.addresses[Int.random(in: 0..<me.addresses.count, using: &rng)]
            let a = UInt32.random(in: pool.usableAddresses, using: &rng)
            if usable(a) { return (lid, a) }
        }
        return nil
    }
}
