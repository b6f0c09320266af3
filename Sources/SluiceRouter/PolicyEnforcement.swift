#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import SluicePolicy
import SluiceWire

/// What one tenant holds at once, over all its sessions: the quotas' inputs.
struct TenantUsage {
    var pds = 0
    var mrs = 0
    var registeredBytes: UInt64 = 0
    var cqs = 0
    var qps = 0
}

extension Router {
    /// A policy decision as a refusal the control path can throw.
    func enforce(_ decision: Decision) throws {
        if case .deny(let rule, let reason, let errno) = decision {
            throw Refusal(errno, reason, rule: rule)
        }
    }

    static func reason(_ decision: Decision) -> String {
        if case .deny(_, let reason, _) = decision { return reason }
        return ""
    }

    func recordPolicyLoad(event: String, _ set: PolicySet, requestedBy: String? = nil) {
        var fields = ["tenants": set.names.joined(separator: ","), "digest": Router.digest(set)]
        if let requestedBy { fields["requestedBy"] = requestedBy }
        log.record(event: event, decision: .allow, fields: fields)
    }

    /// SHA-256 over every file's path and bytes, in load order.
    static func digest(_ set: PolicySet) -> String {
        var h = SHA256()
        for f in set.files {
            h.update(data: Array(f.path.utf8) + [0])
            h.update(data: f.bytes)
        }
        return h.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Loads the policy directory again and, only if every file is valid,
    /// puts the new policies in force. Returns whether it did, and a message.
    @discardableResult
    func reloadPolicies(requestedBy: String) -> (ok: Bool, message: String) {
        guard let dir = config.policyDirectory else {
            return (false, "this router was started without a policy directory")
        }
        let set: PolicySet
        do {
            set = try PolicySet.load(directory: dir)
        } catch {
            let text = "\(error)"
            log.record(event: "policy.reload", decision: .deny, rule: "policy", reason: text,
                       fields: ["requestedBy": requestedBy])
            FileHandle.standardError.write("sluice-router: policy reload refused, the old policies stay in force:\n\(text)\n".data(using: .utf8)!)
            return (false, text)
        }
        let problems = apply(set, requestedBy: requestedBy)
        var message = "policies reloaded: \(set.names.joined(separator: ", "))"
        if !problems.isEmpty { message += "\nbut: " + problems.joined(separator: "\nbut: ") }
        return (true, message)
    }

    /// Puts a validated policy set in force, and applies what it withdraws
    /// to what exists: sockets of removed tenants close, sessions no longer
    /// admitted close, connections no longer allowed move to ERR.
    @discardableResult
    func apply(_ set: PolicySet, requestedBy: String) -> [String] {
        var problems: [String] = []
        let old = Set(engine.policies.names)
        engine = PolicyEngine(set)
        let new = Set(set.names)
        for gone in old.subtracting(new) { removeListener(gone) }
        for added in new.subtracting(old).sorted() {
            do {
                try addListener(added)
            } catch {
                let problem = "cannot open the socket of tenant \(added): \(error)"
                problems.append(problem)
                log.record(event: "policy.reload", decision: .deny, rule: "identity", reason: problem)
            }
        }
        for s in Array(sessions.values) {
            let d = engine.admit(tenant: s.tenant, uid: s.uid, gid: s.gid)
            if !d.isAllowed { closeSession(s, reason: "policy reload: " + Router.reason(d)) }
        }
        for s in sessions.values {
            for qp in s.qps.all {
                guard let peer = qp.peer else { continue }
                let d = engine.connect(from: s.tenant, to: peer.session.tenant)
                qp.allowedOperations = engine.connectionOperations(from: s.tenant, to: peer.session.tenant)
                if !d.isAllowed && qp.state != .error && qp.state != .reset {
                    log.record(event: "policy.enforce", subject: s.subject, verb: "modify_qp",
                               object: "qpn 0x\(String(qp.qpn, radix: 16))", decision: .deny, rule: d.rule,
                               reason: "connection withdrawn by a policy reload: " + Router.reason(d))
                    enter(qp, .error)
                    s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
                }
            }
        }
        reapplyCrossHostConsent()
        // New rates take effect now, for queued work too: buckets keep their
        // levels, and requests waiting for tokens are looked at again at once.
        let now = Sys.monotonicNanos()
        for lane in fabric.allLanes {
            let limits = engine.policy(lane.tenant)?.rateLimits ?? RateLimits()
            lane.limiter.reconfigure(limits, now: now)
            lane.heldUntil = 0
            for qp in lane.qps {
                qp.shaper.reconfigure(queuePair: limits.queuePair, now: now)
                if qp.stall?.kind == .throttled { qp.stall?.retryAt = now }
            }
        }
        recordPolicyLoad(event: "policy.reload", set, requestedBy: requestedBy)
        return problems
    }
}
