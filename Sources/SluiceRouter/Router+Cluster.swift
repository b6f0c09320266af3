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
