#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import SluicePolicy

/// One tenant's failed remote accesses within the detector's sliding window,
/// oldest first. It never holds more than `maxFailures` times: reaching that
/// many trips the detector and empties it.
struct FaultWindow {
    private var times: [UInt64] = []
    private var head = 0

    var count: Int { times.count - head }

    /// Records a fault at `now` (monotonic nanoseconds). Returns true when
    /// `max` faults, this one included, fall within the last `window`
    /// nanoseconds; the window then starts afresh.
    mutating func record(_ now: UInt64, window: UInt64, max: Int) -> Bool {
        while head < times.count, now &- times[head] >= window || times[head] > now {
            head += 1
        }
        if head > 64, head * 2 > times.count {
            times.removeFirst(head)
            head = 0
        }
        times.append(now)
        guard count >= max else { return false }
        times.removeAll(keepingCapacity: true)
        head = 0
        return true
    }
}

extension Router {
    /// Counts a failed remote access against the QP's tenant and, past the
    /// policy's threshold, trips the key-guessing detector: the tenant's QPs
    /// that faulted within the window go to ERR (with IBV_EVENT_QP_FATAL),
    /// an alert is audited, and the tenant may be quarantined.
    func noteRemoteAccessFault(_ qp: QueuePair, now: UInt64) {
        let tenant = qp.session.tenant
        let rule = engine.policy(tenant)?.keyGuessing ?? KeyGuessing()
        let window = UInt64(rule.windowSeconds) * 1_000_000_000
        qp.lastRemoteFault = now
        guard faultWindows[tenant, default: FaultWindow()].record(now, window: window, max: rule.maxFailures) else { return }
        var offending: [String] = []
        for s in sessions.values where s.tenant == tenant {
            for q in s.qps.all {
                guard let t = q.lastRemoteFault, t <= now, now - t < window else { continue }
                offending.append("0x" + String(q.qpn, radix: 16))
                if q.state != .error {
                    enter(q, .error)
                    s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: q.qpn)
                }
            }
        }
        if rule.quarantine { quarantined.insert(tenant) }
        let action = rule.quarantine ? "; tenant quarantined until an operator clears it" : ""
        log.record(event: "alert", subject: qp.session.subject, verb: "key_guessing", object: "tenant \(tenant)",
                   decision: .deny, rule: "keyGuessing",
                   reason: "\(rule.maxFailures) failed remote accesses within \(rule.windowSeconds) s: QPs moved to ERR" + action,
                   fields: ["failures": String(rule.maxFailures), "windowSeconds": String(rule.windowSeconds),
                            "queuePairs": offending.sorted().joined(separator: ","),
                            "quarantined": String(rule.quarantine)])
    }

    /// Refuses new QPs and connections of a quarantined tenant.
    func checkQuarantine(_ s: Session) throws {
        guard quarantined.contains(s.tenant) else { return }
        throw Refusal(EACCES, "tenant is quarantined for key guessing; an operator must clear it", rule: "keyGuessing")
    }

    /// The operator's `sluice quarantine clear`: returns whether the tenant was quarantined.
    func clearQuarantine(_ tenant: String, requestedBy: String) -> Bool {
        let was = quarantined.remove(tenant) != nil
        faultWindows[tenant] = nil
        log.record(event: "alert", verb: "quarantine_clear", object: "tenant \(tenant)", decision: .allow, rule: "keyGuessing",
                   reason: was ? "quarantine cleared by \(requestedBy)" : "not quarantined; fault count reset by \(requestedBy)")
        return was
    }
}
