#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys
import SluicePolicy
import SluiceCluster

/// One tenant's share of the data-path poller: its QPs, served round robin,
/// its deficit-round-robin credit (in the router's time), its shaping
/// state, and what it moved (for status).
final class TenantLane {
    let tenant: String
    let limiter: TenantRateLimiter
    var qps: [QueuePair] = []
    /// The QPs the poller looks at: those with work, recently busy, or
    /// hinted by the tenant library since (`SoftwareFabric.harvestHints`).
    var active: [QueuePair] = []
    var cursor = 0
    var credit = LaneCredit()
    /// What is left of the burst of the QP at `cursor`, when the lane's
    /// credit ran out in the middle of it: the next pass resumes there, so
    /// a lane's time goes to its work, not to laps over its idle QPs.
    var carry = 0
    /// Looks between busy lanes (`SoftwareFabric.serveWoken`) that found
    /// nothing to do since the lane's last refill.
    var wokenMisses = 0
    /// The tenant's buckets hold every request until then (0: not held).
    /// The poller skips the lane until that time instead of trying each of
    /// its QPs against the same empty bucket on every pass.
    var heldUntil: UInt64 = 0
    /// In the fabric's list of lanes with active QPs.
    var listed = false
    /// Admitted by the shaper (all time).
    var bytesMoved: UInt64 = 0
    var requests: UInt64 = 0
    /// The rate over the last status sample, and where it started.
    var sample: (at: UInt64, bytes: UInt64, requests: UInt64) = (0, 0, 0)
    var rate: (bytes: UInt64, requests: UInt64) = (0, 0)
    /// Throttling counters at the last audit summary.
    var summarized = ShaperCounters()

    init(tenant: String, limiter: TenantRateLimiter) {
        self.tenant = tenant
        self.limiter = limiter
    }

    /// Send requests posted and not yet taken, over all the tenant's QPs.
    var queueDepth: UInt64 {
        qps.reduce(0) { $0 + UInt64($1.pending(prod: $1.sqProd, cons: $1.sqCons, capacity: $1.sqCapacity) ?? 0) }
    }

    /// Updates `rate` if at least `interval` passed since the last sample.
    func sampleRate(now: UInt64, interval: UInt64 = 100_000_000) {
        let dt = now &- sample.at
        guard dt >= interval else { return }
        func perSecond(_ delta: UInt64) -> UInt64 {
            let wide = delta.multipliedFullWidth(by: 1_000_000_000)
            guard wide.high < dt else { return .max }
            return dt.dividingFullWidth(wide).quotient
        }
        rate = (perSecond(bytesMoved &- sample.bytes), perSecond(requests &- sample.requests))
        sample = (now, bytesMoved, requests)
    }
}

/// The software RDMA engine: executes RC work requests between memory
/// regions on this host, with the semantics an RC QP has on a real fabric —
/// in order per QP, RNR waits per `rnr_retry`, transport retries per
/// `retry_cnt` and `timeout`, and every error a completion that moves the QP
/// to ERR. This is where a work request is checked: each one is copied out of
/// the ring, then every key, bound and flag of the copy is validated before
/// one byte moves.
final class SoftwareFabric {
    private var qps: [QueuePair] = []
    private var positions: [ObjectIdentifier: Int] = [:]
    /// One lane per tenant, served by deficit round robin.
    private var lanes: [TenantLane] = []
    /// The lanes with active QPs: what a pass visits. A router that served
    /// many tenants once keeps a lane for each; visiting those on every
    /// pass cost a 64 KiB stream a third of its bandwidth.
    private var activeLanes: [TenantLane] = []
    private var laneStart = 0
    /// Sessions whose posted-QP hints the poller reads each pass.
    private var sessions: [Session] = []
    /// Inline data is copied out of the (already copied) request into here.
    private let inlineScratch = UnsafeMutableRawPointer.allocate(byteCount: Int(SLUICE_MAX_INLINE), alignment: 64)
    private var src: [(UnsafeRawPointer, Int)] = []
    private var dst: [(UnsafeMutableRawPointer, Int)] = []
    /// The bytes of the request `execute` just handled (bounds its charge).
    private var lastBytes: UInt64 = 0
    private let clock = CycleClock.shared
    private let quantumTicks: Int64
    private let bankTicks: Int64
    /// Where the next look between busy slices starts in `activeLanes`.
    private var wokenStart = 0
    private let visitCapTicks: Int64
    /// Verbs backend: the same local and receive buffers as the device sees
    /// them (router addresses and real lkeys), built beside `src`/`dst`.
    private var realLocal: [RealSGE] = []
    private var realRecv: [RealSGE] = []
    /// Set (to the router's verbs backend) when a device moves the bytes:
    /// every check below still runs here first, then the device executes.
    /// Strong (a weak reference costs a load through a side table on
    /// every request); the router owns both for its whole life.
    var device: VerbsBackend?
    /// Benchmark only (`--bench-no-enforcement`): no policy check, no
    /// shaping. Keys, bounds and access flags are still checked: they keep
    /// the router's own memory safe, and are not optional.
    var enforcement = true

    /// Requests one QP may complete per visit, so a deep queue cannot hold
    /// the poller while other QPs of its tenant wait.
    static let burst = 16
    /// The scheduler's quantum per unit of weight: the router's time a
    /// tenant gets per pass. Small, so that a quiet tenant's next request
    /// waits for little more than a neighbour's quantum (its latency;
    /// plus at most a bank, `bankNanos`, of each lane woken before it), and large
    /// enough that a pass's own overhead stays small beside it (0.5 µs: the
    /// isolation bench's victim p99 went from ~2.5x to ~2x solo against
    /// 1 µs, three saturating tenants' total rate unchanged). Requests are
    /// charged the time they took, so a flood of tiny requests, or of
    /// requests made expensive on purpose, buys no more than its share.
    static let quantumNanos: UInt64 = 500
    /// Unused credit a lane may keep (absolute, whatever its weight): 4 µs,
    /// so a ping-pong's two requests in a row both run at once, while an
    /// idle lane saves up no more than that.
    static let bankNanos: UInt64 = 4_000
    /// Looks between busy slices that may find nothing, per lane and pass:
    /// a lane kept in the active list with nothing posted costs the others
    /// that many laps over its (at most `wokenLaneQPs`) QPs per pass.
    static let wokenMissesPerPass = 2
    /// The most one charge may cost: 50 µs plus 1 ns a byte (a copy at
    /// 1 GB/s). A request the kernel preempted the router in the middle of
    /// costs its tenant no more than that.
    static let chargeCapNanos: UInt64 = 50_000
    /// Quiet lanes looked at between busy lanes: only those with at most
    /// this many QPs, at most this many of them.
    /// A request longer than this moves in pieces of this size, one per
    /// visit of its QP, so a neighbour's next request waits for one piece
    /// (about 10 µs), not for a whole 4 MiB copy (about 150 µs). Keys,
    /// bounds and the connection are checked again before every piece.
    static let chunkBytes = 256 << 10
    static let wokenLaneQPs = 4
    static let wokenLanesPerSlice = 8
    /// How long a QP may have nothing to do before the poller stops
    /// looking at it (until the library's hint): long enough that a
    /// ping-pong or RPC QP stays in the active list between messages.
    static let retireNanos: UInt64 = 50_000

    init() {
        quantumTicks = max(1, clock.ticks(nanos: SoftwareFabric.quantumNanos))
        bankTicks = clock.ticks(nanos: SoftwareFabric.bankNanos)
        visitCapTicks = clock.ticks(nanos: SoftwareFabric.chargeCapNanos)
        src.reserveCapacity(Int(SLUICE_MAX_SGE))
        dst.reserveCapacity(Int(SLUICE_MAX_SGE))
    }

    deinit { inlineScratch.deallocate() }

    var count: Int { qps.count }
    var allLanes: [TenantLane] { lanes }

    /// The lane of a tenant, made on first use and kept for the router's
    /// life: a tenant cannot refill its buckets by reconnecting.
    func lane(_ tenant: String, limits: RateLimits, now: UInt64) -> TenantLane {
        if let l = lanes.first(where: { $0.tenant == tenant }) { return l }
        let l = TenantLane(tenant: tenant, limiter: TenantRateLimiter(limits, now: now))
        lanes.append(l)
        return l
    }

    func add(_ qp: QueuePair) {
        positions[ObjectIdentifier(qp)] = qps.count
        qps.append(qp)
        qp.lane.qps.append(qp)
        activate(qp)
    }

    func addSession(_ s: Session) { sessions.append(s) }

    /// Every open session, in an array: the poller's idle path walks it
    /// (a Dictionary's values cost an iterator and a retain each).
    var sessionList: [Session] { sessions }

    func removeSession(_ s: Session) {
        if let i = sessions.firstIndex(where: { $0 === s }) { sessions.remove(at: i) }
    }

    /// Puts a QP in its lane's active list (a hint, a state change, a new QP).
    func activate(_ qp: QueuePair) {
        qp.idleSince = 0
        // A state change (a flush to do) must not wait out the tenant's
        // buckets; a new post costs one more refused try at most.
        qp.lane.heldUntil = 0
        guard !qp.active, !qp.destroyed, positions[ObjectIdentifier(qp)] != nil else { return }
        qp.active = true
        qp.lane.active.append(qp)
        if !qp.lane.listed {
            qp.lane.listed = true
            activeLanes.append(qp.lane)
        }
    }

    /// Reads the posted-QP hints of every session whose summary is set
    /// (one load per session otherwise) and activates the hinted QPs.
    private func harvestHints() {
        for s in sessions {
            let page = s.pagePointer
            guard sluice_hint_take_summary(page) != 0 else { continue }
            for w in 0..<Int(SLUICE_POSTED_QPS / 64) {
                var word = sluice_hint_word(page, UInt32(w))
                while word != 0 {
                    let b = word.trailingZeroBitCount
                    word &= word &- 1
                    if let qp = s.qps.lookup(UInt32(w * 64 + b + 1)), !qp.active { activate(qp) }
                }
            }
        }
    }

    /// Whether the poller may stop looking at a QP it just found idle: it
    /// has been idle `retireNanos`, holds nothing, and — after clearing its
    /// hint bit with a full barrier — still has nothing posted. If the
    /// producer index moved meanwhile the bit is set again and the QP stays.
    private func retire(_ qp: QueuePair, now: UInt64) -> Bool {
        guard qp.hinted, qp.stall == nil, qp.held == nil else {
            qp.idleSince = 0
            return false
        }
        if qp.idleSince == 0 {
            qp.idleSince = now
            return false
        }
        guard now &- qp.idleSince >= SoftwareFabric.retireNanos else { return false }
        let page = qp.session.pagePointer
        sluice_hint_mark(page, qp.handle, 0)
        if hasPostedWork(qp) {
            sluice_hint_mark(page, qp.handle, 1)
            qp.idleSince = 0
            return false
        }
        return true
    }

    /// Work the poller would do for this QP now: sends in RTS, flushes in
    /// ERR. A corrupt producer index counts as work (the visit reports it).
    private func hasPostedWork(_ qp: QueuePair) -> Bool {
        if device != nil, qp.remote != nil, qp.state == .rtr || qp.state == .rts, qp.verbsLink?.takesReceives == true,
           qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) != 0 { return true }
        switch qp.state {
        case .rts:
            return qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity) != 0
        case .error:
            return qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity) != 0
                || qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) != 0
        default:
            return false
        }
    }

    func remove(_ qp: QueuePair) {
        guard let i = positions.removeValue(forKey: ObjectIdentifier(qp)) else { return }
        let last = qps.removeLast()
        if i < qps.count {
            qps[i] = last
            positions[ObjectIdentifier(last)] = i
        }
        if let j = qp.lane.qps.firstIndex(where: { $0 === qp }) {
            qp.lane.qps.remove(at: j)
        }
        if qp.active, let j = qp.lane.active.firstIndex(where: { $0 === qp }) {
            if j == qp.lane.cursor { qp.lane.carry = 0 }
            qp.lane.active.remove(at: j)
            if qp.lane.cursor > j { qp.lane.cursor -= 1 }
        }
        qp.active = false
    }

    /// One pass: every tenant with QPs gets a quantum (times its weight) of
    /// work, served round robin over its QPs; the tenant served first
    /// rotates. Returns whether anything happened, or work is waiting only
    /// for the scheduler (so the poller must not sleep).
    func pollOnce(now: UInt64, router: Router) -> Bool {
        harvestHints()
        let n = activeLanes.count
        guard n > 0 else { return false }
        var worked = false
        var emptied = false
        for i in 0..<n {
            let lane = activeLanes[(laneStart &+ i) % n]
            if lane.active.isEmpty {
                emptied = true
                continue
            }
            if lane.heldUntil > now { continue }
            // One quantum per pass; unused credit piles up to the bank
            // only, debt (a request that took longer than the credit) is kept.
            lane.credit.refill(quantum: quantumTicks * Int64(lane.limiter.weight), bank: bankTicks)
            lane.wokenMisses = 0
            if serve(lane, now: now, router: router) {
                worked = true
                if n > 1 && serveWoken(besides: lane, now: now, router: router) { worked = true }
            }
        }
        laneStart = laneStart &+ 1
        if emptied {
            activeLanes.removeAll { lane in
                guard lane.active.isEmpty else { return false }
                lane.listed = false
                return true
            }
        }
        return worked
    }

    /// After a busy lane's slice, lanes with few QPs and credit left are
    /// looked at and served if they have work: a tenant that posts one
    /// request at a time (a ping-pong, an RPC) waits for one neighbour's
    /// slice, not for a whole pass. It spends its own credit, so it gets no
    /// more than its share. Only lanes with at most `wokenLaneQPs` QPs
    /// qualify, at most `wokenLanesPerSlice` of them (from a rotating
    /// start), and a lane whose looks found nothing `wokenMissesPerPass`
    /// times is left to its turn until the next pass, so the looks stay
    /// cheap even for a tenant that keeps idle QPs in the active list.
    /// (Until 2026-11 only lanes that had found nothing to do at their last
    /// visit were looked at: a ping-pong, which always has its next message
    /// by its turn, then waited a whole pass per message.)
    private func serveWoken(besides busy: TenantLane, now: UInt64, router: Router) -> Bool {
        var worked = false
        var looked = 0
        let n = activeLanes.count
        wokenStart = wokenStart &+ 1
        for k in 0..<n {
            let lane = activeLanes[(wokenStart &+ k) % n]
            guard lane !== busy, !lane.active.isEmpty, lane.active.count <= SoftwareFabric.wokenLaneQPs,
                  !lane.credit.exhausted, lane.heldUntil <= now, lane.wokenMisses < SoftwareFabric.wokenMissesPerPass else { continue }
            if serve(lane, now: now, router: router) {
                worked = true
            } else {
                lane.wokenMisses += 1
            }
            looked += 1
            if looked == SoftwareFabric.wokenLanesPerSlice { break }
        }
        return worked
    }

    /// Visits the lane's QPs round robin, from where the last pass stopped,
    /// until its credit is spent or a whole lap finds nothing to do.
    private func serve(_ lane: TenantLane, now: UInt64, router: Router) -> Bool {
        var worked = false
        var idle = 0
        var i = lane.cursor
        lane.credit.start(CycleClock.now())
        while idle < lane.active.count {
            if lane.heldUntil > now { break }
            if lane.credit.exhausted {
                // Out of credit with work left: the next pass goes on.
                worked = true
                break
            }
            if i >= lane.active.count { i = 0 }
            let qp = lane.active[i]
            let budget = lane.carry > 0 ? lane.carry : SoftwareFabric.burst
            lane.carry = 0
            var did: Bool
            switch qp.state {
            case .rts: did = processSends(qp, lane, budget: budget, now: now, router: router)
            case .error: did = flush(qp)
            default: did = false
            }
            // A QP connected to another router on a NIC: its receives go to the device ahead.
            if device != nil, qp.remote != nil, router.pumpRemoteReceives(qp) { did = true }
            // A visit that did something is the lane's to pay for, rings and
            // flushes included; looking at an idle QP is the router's own
            // overhead (charging it could leave a lane of many idle QPs out
            // of credit with nothing done, and the poller could not tell
            // that from work waiting).
            if did {
                lane.credit.charge(CycleClock.now(), cap: visitCapTicks)
                qp.idleSince = 0
                worked = true
                idle = 0
                if lane.carry == 0 { i += 1 }
            } else if retire(qp, now: now) {
                // Out of the active list until its next hint; the QP now
                // at `i` is the next one to look at.
                lane.credit.start(CycleClock.now())
                qp.active = false
                lane.active.remove(at: i)
            } else {
                lane.credit.start(CycleClock.now())
                idle += 1
                i += 1
            }
        }
        lane.cursor = lane.active.isEmpty ? 0 : i % lane.active.count
        return worked
    }

    /// The earliest time a waiting request should be retried.
    func nextDeadline() -> UInt64? {
        var d: UInt64?
        var soon: UInt64?
        for qp in qps {
            if let s = qp.stall, qp.state == .rts { d = min(d ?? s.retryAt, s.retryAt) }
            // A QP in ERR whose flush waits for CQ room must be looked at
            // again even if no doorbell rings (polling a CQ rings none).
            if qp.state == .error, (qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity) ?? 0) > 0
                || (qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) ?? 0) > 0 {
                let t = soon ?? Sys.monotonicNanos() + 1_000_000
                soon = t
                d = min(d ?? t, t)
            }
        }
        return d
    }

    /// `completed` and `failed` have taken the request off the send queue
    /// (before writing its completion: once a tenant polls a completion,
    /// its slot must be free, as on hardware); `wait` has not.
    enum Outcome {
        case completed
        case failed // an error completion was written; the QP goes to ERR
        case wait(Stall)
        /// A long request moved `chunkBytes` more; it stays at the head.
        case progressed
    }

    private func processSends(_ qp: QueuePair, _ lane: TenantLane, budget: Int, now: UInt64, router: Router) -> Bool {
        if device == nil, let r = qp.remote { return processRemoteSends(qp, r, lane, budget: budget, now: now, router: router) }
        var did = false
        for k in 0..<budget {
            if lane.credit.exhausted {
                // Out of credit mid-burst: the rest of it is this QP's next.
                if did { lane.carry = budget - k }
                return did
            }
            if let s = qp.stall, now < s.retryAt { return did }
            let wqe: sluice_send_wqe
            if let held = qp.held {
                wqe = held
            } else {
                guard let n = qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity) else {
                    router.denyDataPath(qp, "send queue producer index is corrupt; QP moved to ERR", rule: "ring")
                    router.enter(qp, .error)
                    return true
                }
                if n == 0 { return did }
                wqe = qp.copySendWQE(qp.sqCons)
            }
            lastBytes = 0
            let outcome = execute(qp, wqe, now: now, router: router)
            lane.credit.charge(CycleClock.now(), cap: Sys.saturatingAdd(UInt64(visitCapTicks), lastBytes &* clock.perMicrosecond / 1_000).clampedTicks)
            switch outcome {
            case .completed:
                qp.held = nil
                qp.stall = nil
                qp.paid = false
                qp.session.allows &+= 1
                did = true
            case .failed:
                router.enter(qp, .error)
                return true
            case .wait(let s):
                qp.held = wqe
                qp.stall = s
                if s.kind == .throttled && qp.shaper.tenantWide { lane.heldUntil = s.retryAt }
                return did
            case .progressed:
                // Part of a long request is done: the rest is this QP's
                // next visit, after every other QP and lane had its turn.
                qp.held = wqe
                qp.stall = nil
                return true
            }
        }
        return did
    }

    /// The send queue of a QP connected to a QP on another router (software
    /// fabric): up to `RemotePeer.maxWindow` requests in flight, completed
    /// in order as their answers come. Requests stay in the tenant's ring
    /// until they complete; the window is its first entries. A request that
    /// fails a local check while others are in flight waits until they
    /// complete, so its error completion keeps the order. An RNR answer or
    /// a timeout sends the unanswered requests again, in order, with their
    /// ids (the target runs requests strictly in id order and answers
    /// repeats from its cache).
    private func processRemoteSends(_ qp: QueuePair, _ r: RemotePeer, _ lane: TenantLane, budget: Int, now: UInt64,
                                    router: Router) -> Bool {
        guard let c = router.cluster else {
            if let head = r.window.first {
                router.failRemote(qp, head.wqe, UInt32(SLUICE_WC_RETRY_EXC_ERR), head.wcOpcode, "fabric", "this router is no longer in a cluster")
                router.enter(qp, .error)
                return true
            }
            return false
        }
        var did = false
        var throttledUntil: UInt64?
        var cqFull = false
        // 1. Answers, in order.
        while let head = r.window.first, let resp = head.response {
            guard qp.sendCQ.room >= 1 else { cqFull = true; break }
            let outcome = router.finishRemote(qp, r, head, resp, now: now)
            lane.credit.charge(CycleClock.now(), cap: visitCapTicks)
            did = true
            switch outcome {
            case .completed:
                r.window.removeFirst()
                if let k = r.resendNext { r.resendNext = max(k - 1, 0) }
                if r.window.first?.response == nil, !r.window.isEmpty {
                    // The next unanswered request's timer counts from here.
                    r.deadline = now &+ Router.remoteInterval(qp)
                    r.retriesLeft = qp.attrs.timeout == 0 ? -1 : Int(qp.attrs.retryCount)
                }
            case .failed:
                router.enter(qp, .error)
                return true
            case .notReady(let delay):
                // The target ran nothing from the refused request on.
                for i in r.window.indices { r.window[i].response = nil }
                r.resendAt = now &+ delay
                r.resendNext = nil
            }
            if r.resendAt != nil { break }
        }
        // 2. Timers: after an RNR delay, or the oldest unanswered timing out,
        // the window goes again from its head (go-back-N).
        if let t = r.resendAt {
            if now >= t {
                r.resendAt = nil
                r.resendNext = 0
                r.deadline = now &+ Router.remoteInterval(qp)
            }
        } else if r.resendNext == nil, let head = r.window.first, head.response == nil, now >= r.deadline {
            // (While answered requests wait for CQ room, the timer waits
            // too: they complete first, and restart it.)
            if r.retriesLeft == 0 {
                guard qp.sendCQ.room >= 1 else {
                    qp.stall = Stall(kind: .completionQueueFull, retryAt: now &+ 50_000, retriesLeft: -1)
                    return did
                }
                router.failRemote(qp, head.wqe, UInt32(SLUICE_WC_RETRY_EXC_ERR), head.wcOpcode, "retry.transport",
                                  "no response from router \(r.router) for QP 0x\(String(r.qpn, radix: 16)): retries exhausted")
                router.enter(qp, .error)
                return true
            }
            if router.linkHasRoom(c, to: r.router, bytes: head.frame.count) {
                if r.retriesLeft > 0 { r.retriesLeft -= 1 }
                r.resendNext = 0
                r.deadline = now &+ Router.remoteInterval(qp)
            } else {
                // Not lost: it has not left yet (a backlogged link); no retry spent.
                r.deadline = now &+ 200_000
            }
        }
        var backlogUntil: UInt64?
        if r.resendNext != nil {
            did = true
            if !router.resendRemote(r, c) { backlogUntil = now &+ 200_000 }
        }
        // 3. New requests, while the window has room.
        let limit = min(RemotePeer.maxWindow, Int(qp.sqCapacity))
        var sent = 0
        while sent < budget, r.resendAt == nil, r.resendNext == nil, !cqFull, r.window.count < limit, !lane.credit.exhausted {
            guard let n = qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity) else {
                router.denyDataPath(qp, "send queue producer index is corrupt; QP moved to ERR", rule: "ring")
                router.enter(qp, .error)
                return true
            }
            if n <= UInt32(r.window.count) { break }
            let w = qp.copySendWQE(qp.sqCons &+ UInt32(r.window.count))
            // A local failure completes in order: at once if nothing is in
            // flight (it is the head), else once the window has drained.
            var failure: LocalFailure?
            var total: UInt64 = 0
            let wcOpcode = SoftwareFabric.completionOpcode(w.opcode)
            if wcOpcode == nil {
                failure = LocalFailure(status: UInt32(SLUICE_WC_LOC_QP_OP_ERR), rule: "opcode", reason: "opcode \(w.opcode) is not supported")
            } else {
                switch gatherLocal(qp, w) {
                case .failure(let f): failure = f
                case .success(let t):
                    total = t
                    if let (st, rule, reason) = router.checkRemoteRequest(qp, w, total: t, enforcement: enforcement) {
                        failure = LocalFailure(status: st, rule: rule, reason: reason)
                    }
                }
            }
            if let f = failure {
                if !r.window.isEmpty { break }
                guard qp.sendCQ.room >= 1 else { cqFull = true; break }
                _ = fail(qp, w, f.status, wcOpcode ?? 0, router, f.rule, f.reason)
                router.enter(qp, .error)
                return true
            }
            // The frames of the window are kept for retransmission: at most
            // one maximal message's worth per QP (as with one request in
            // flight), so many QPs of large messages cannot exhaust the
            // router's memory; small messages still pipeline.
            if !r.window.isEmpty, r.windowBytes &+ total > UInt64(maxRemoteMessage) { break }
            if !router.linkHasRoom(c, to: r.router, bytes: Int(total) + 256) {
                // The link is backlogged: the request waits its turn.
                backlogUntil = now &+ 200_000
                break
            }
            // Shaping: charged once, right before the request leaves.
            if enforcement {
                let wait = qp.shaper.admit(bytes: total, now: now)
                if wait > 0 {
                    throttledUntil = Sys.saturatingAdd(now, wait)
                    break
                }
                lane.bytesMoved &+= total
                lane.requests &+= 1
            }
            router.sendRemote(qp, r, c, w, wcOpcode!, total: total, gather: src, now: now)
            lane.credit.charge(CycleClock.now(), cap: Sys.saturatingAdd(UInt64(visitCapTicks), total &* clock.perMicrosecond / 1_000).clampedTicks)
            sent += 1
            did = true
        }
        // When to look again without an event: the oldest request's timer,
        // the RNR delay, the shaper, or room in the CQ.
        var wake: [UInt64] = []
        if let t = r.resendAt {
            wake.append(t)
        } else if let head = r.window.first, head.response == nil {
            wake.append(r.deadline)
        }
        if let t = throttledUntil { wake.append(t) }
        if cqFull { wake.append(now &+ 50_000) }
        if let t = backlogUntil { wake.append(t) }
        if let t = wake.min() {
            // Throttled is kept as the kind whatever comes first: a reload
            // wakes it, and an error abandons the shaper's wait.
            qp.stall = Stall(kind: throttledUntil != nil ? .throttled : .peerNotReady, retryAt: t, retriesLeft: -1)
        } else {
            qp.stall = nil
        }
        return did
    }

    // MARK: executing one request

    struct LocalFailure: Error {
        var status: UInt32
        var rule: String
        var reason: String
    }

    /// The local side of a request: inline bytes or its gather/scatter
    /// list, all in the QP's own PD, into the scratch lists (`src` for
    /// what is sent, `dst` for what READ and atomics bring back,
    /// `realLocal` for the device). Returns the message length, or why the
    /// request fails locally (nothing is written or consumed).
    private func gatherLocal(_ qp: QueuePair, _ w: sluice_send_wqe) -> Result<UInt64, LocalFailure> {
        let isAtomic = w.opcode == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
        let isRead = w.opcode == UInt32(SLUICE_WR_RDMA_READ) || isAtomic
        src.removeAll(keepingCapacity: true)
        dst.removeAll(keepingCapacity: true)
        realLocal.removeAll(keepingCapacity: true)
        var total: UInt64 = 0
        if w.send_flags & UInt32(SLUICE_SEND_INLINE) != 0 {
            guard !isRead else { return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_QP_OP_ERR), rule: "inline", reason: "inline data on an RDMA READ or atomic")) }
            guard w.inline_len <= qp.maxInline else {
                return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_LEN_ERR), rule: "inline", reason: "inline length \(w.inline_len) above \(qp.maxInline)"))
            }
            let n = Int(w.inline_len)
            withUnsafeBytes(of: w.inline_data) { raw in
                // SAFETY: n <= maxInline <= SLUICE_MAX_INLINE, the size of both buffers.
                inlineScratch.copyMemory(from: raw.baseAddress!, byteCount: n)
            }
            if n > 0 { src.append((UnsafeRawPointer(inlineScratch), n)) }
            total = UInt64(n)
        } else {
            guard w.num_sge <= qp.maxSendSGE else {
                return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_QP_OP_ERR), rule: "sge", reason: "\(w.num_sge) SGEs, above the QP's \(qp.maxSendSGE)"))
            }
            for i in 0..<Int(w.num_sge) {
                let sge = w.sge(i)
                if sge.length == 0 { continue }
                guard let mr = qp.session.lkeys[sge.lkey], mr.pd === qp.pd,
                      let p = mr.local(sge.addr, UInt64(sge.length)) else {
                    return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_PROT_ERR), rule: "lkey", reason: "lkey 0x\(String(sge.lkey, radix: 16)) does not cover [0x\(String(sge.addr, radix: 16)), +\(sge.length)) in the QP's PD"))
                }
                if isRead {
                    guard mr.writable else {
                        return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_PROT_ERR), rule: "lkey", reason: "RDMA READ or atomic result into a region without local write"))
                    }
                    dst.append((p, Int(sge.length)))
                } else {
                    src.append((UnsafeRawPointer(p), Int(sge.length)))
                }
                if device != nil {
                    // Never a key the router did not get from the device (0 is
                    // the reserved lkey on some NICs: all of memory).
                    guard let real = mr.real else {
                        return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_PROT_ERR), rule: "device", reason: "lkey 0x\(String(sge.lkey, radix: 16)) has no device registration"))
                    }
                    realLocal.append(RealSGE(address: UInt64(UInt(bitPattern: p)), length: sge.length, lkey: real.lkey))
                }
                total += UInt64(sge.length)
            }
            guard total <= 1 << 31 else {
                return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_LEN_ERR), rule: "length", reason: "message of \(total) bytes is above 2 GiB"))
            }
        }
        if isAtomic && total != 8 {
            return .failure(LocalFailure(status: UInt32(SLUICE_WC_LOC_LEN_ERR), rule: "atomic.length", reason: "an atomic's local buffer is \(total) bytes, not 8"))
        }
        return .success(total)
    }

    /// The completion opcode of a work request's opcode; nil if unsupported.
    static func completionOpcode(_ opcode: UInt32) -> UInt32? {
        switch Int(opcode) {
        case Int(SLUICE_WR_SEND), Int(SLUICE_WR_SEND_WITH_IMM): return UInt32(SLUICE_WC_OP_SEND)
        case Int(SLUICE_WR_RDMA_WRITE), Int(SLUICE_WR_RDMA_WRITE_WITH_IMM): return UInt32(SLUICE_WC_OP_RDMA_WRITE)
        case Int(SLUICE_WR_RDMA_READ): return UInt32(SLUICE_WC_OP_RDMA_READ)
        case Int(SLUICE_WR_ATOMIC_CMP_AND_SWP): return UInt32(SLUICE_WC_OP_COMP_SWAP)
        case Int(SLUICE_WR_ATOMIC_FETCH_AND_ADD): return UInt32(SLUICE_WC_OP_FETCH_ADD)
        default: return nil
        }
    }

    private func execute(_ qp: QueuePair, _ w: sluice_send_wqe, now: UInt64, router: Router) -> Outcome {
        // Every outcome writes at most one completion to the send CQ.
        guard qp.sendCQ.room >= 1 else { return .wait(Stall(kind: .completionQueueFull, retryAt: now + 50_000, retriesLeft: -1)) }
        let signaled = qp.sqSigAll || w.send_flags & UInt32(SLUICE_SEND_SIGNALED) != 0
        guard let wcOpcode = SoftwareFabric.completionOpcode(w.opcode) else {
            return fail(qp, w, UInt32(SLUICE_WC_LOC_QP_OP_ERR), 0, router, "opcode", "opcode \(w.opcode) is not supported")
        }
        let isAtomic = w.opcode == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
        // READ and atomics bring data back into the local buffers.
        let isRead = w.opcode == UInt32(SLUICE_WR_RDMA_READ) || isAtomic
        let isSend = w.opcode == UInt32(SLUICE_WR_SEND) || w.opcode == UInt32(SLUICE_WR_SEND_WITH_IMM)
        let withImm = w.opcode == UInt32(SLUICE_WR_SEND_WITH_IMM) || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)

        let total: UInt64
        switch gatherLocal(qp, w) {
        case .failure(let f): return fail(qp, w, f.status, wcOpcode, router, f.rule, f.reason)
        case .success(let t): total = t
        }
        lastBytes = total
        realRecv.removeAll(keepingCapacity: true)

        // Shaping: charged once per request, before it runs; one that does
        // not fit waits at the head of its queue (order kept, nothing dropped).
        if enforcement && !qp.paid {
            let wait = qp.shaper.admit(bytes: total, now: now)
            if wait > 0 { return .wait(Stall(kind: .throttled, retryAt: Sys.saturatingAdd(now, wait), retriesLeft: -1)) }
            qp.paid = true
            qp.lane.bytesMoved &+= total
            qp.lane.requests &+= 1
        }

        // A QP on another router (many hosts): over the fabric link.
        if qp.remote != nil {
            if let device {
                return router.executeRemoteVerbs(device, qp, w, wcOpcode, total: total, local: realLocal, inline: inlineSGE(w), now: now)
            }
            // On the software fabric processRemoteSends runs these, never
            // this path; should one get here, it waits rather than run twice.
            return .wait(Stall(kind: .peerNotReady, retryAt: now &+ 1_000_000, retriesLeft: -1))
        }
        // The connection: only the QP the router resolved at RTR, and only
        // while it is connected back to this one.
        guard let peer = qp.peer, !peer.destroyed, peer.state == .rtr || peer.state == .rts, peer.peer === qp else {
            return stallOrFail(qp, w, .peerNotReady, wcOpcode, now: now, router: router)
        }
        // Both tenants' policies, precomputed for this connection: one AND.
        guard qp.allowedOperations.allowsWireOpcode(w.opcode) || !enforcement else {
            return refuseOperation(qp, peer, w, wcOpcode, router)
        }

        // Anything that consumes a receive request at the peer.
        var recv: sluice_recv_wqe?
        if isSend || withImm {
            guard let avail = peer.pending(prod: peer.rqProd, cons: peer.rqCons, capacity: peer.rqCapacity) else {
                router.denyDataPath(peer, "receive queue producer index is corrupt; QP moved to ERR", rule: "ring")
                router.enter(peer, .error)
                return stallOrFail(qp, w, .peerNotReady, wcOpcode, now: now, router: router)
            }
            if avail == 0 { return stallOrFail(qp, w, .receiverNotReady, wcOpcode, now: now, router: router) }
            let needed: UInt32 = peer.recvCQ === qp.sendCQ ? 2 : 1
            guard peer.recvCQ.room >= needed else {
                return .wait(Stall(kind: .completionQueueFull, retryAt: now + 50_000, retriesLeft: -1))
            }
            recv = peer.copyRecvWQE(peer.rqCons)
        }

        if isSend, let r = recv {
            // Scatter into the receive request's buffers, in the peer's PD.
            guard r.num_sge <= peer.maxRecvSGE else {
                return responderError(qp, peer, w, r, local: UInt32(SLUICE_WC_LOC_QP_OP_ERR), remote: UInt32(SLUICE_WC_REM_OP_ERR),
                                      wcOpcode, router, "sge", "receive request with \(r.num_sge) SGEs, above the QP's \(peer.maxRecvSGE)")
            }
            var room: UInt64 = 0
            for i in 0..<Int(r.num_sge) {
                let sge = r.sge(i)
                if sge.length == 0 { continue }
                guard let mr = peer.session.lkeys[sge.lkey], mr.pd === peer.pd, mr.writable,
                      let p = mr.local(sge.addr, UInt64(sge.length)) else {
                    return responderError(qp, peer, w, r, local: UInt32(SLUICE_WC_LOC_PROT_ERR), remote: UInt32(SLUICE_WC_REM_OP_ERR),
                                          wcOpcode, router, "lkey", "receive lkey 0x\(String(sge.lkey, radix: 16)) does not cover its buffer")
                }
                dst.append((p, Int(sge.length)))
                if device != nil {
                    guard let real = mr.real else {
                        return responderError(qp, peer, w, r, local: UInt32(SLUICE_WC_LOC_PROT_ERR), remote: UInt32(SLUICE_WC_REM_OP_ERR),
                                              wcOpcode, router, "device", "receive lkey 0x\(String(sge.lkey, radix: 16)) has no device registration")
                    }
                    realRecv.append(RealSGE(address: UInt64(UInt(bitPattern: p)), length: sge.length, lkey: real.lkey))
                }
                room += UInt64(sge.length)
            }
            guard room >= total else {
                return responderError(qp, peer, w, r, local: UInt32(SLUICE_WC_LOC_LEN_ERR), remote: UInt32(SLUICE_WC_REM_INV_REQ_ERR),
                                      wcOpcode, router, "length", "message of \(total) bytes does not fit the \(room)-byte receive buffers")
            }
            if let device {
                return onDevice(device, qp, peer, w, wcOpcode, recv: r, local: realLocal, inline: inlineSGE(w), receive: realRecv,
                                   remote: nil, now: now, router: router)
            }
            if copyPiece(qp, total) == nil { return .progressed }
        } else if !isSend {
            // RDMA WRITE, READ or atomic: the rkey resolves only in the peer QP's PD.
            let needFlag = UInt32(isAtomic ? SLUICE_ACCESS_REMOTE_ATOMIC : isRead ? SLUICE_ACCESS_REMOTE_READ : SLUICE_ACCESS_REMOTE_WRITE)
            let what = isAtomic ? "atomic" : isRead ? "read" : "write"
            guard peer.attrs.accessFlags & needFlag != 0 else {
                return fail(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, router, "qp.access",
                            "the remote QP does not allow remote \(what)")
            }
            if isAtomic && w.remote_addr & 7 != 0 {
                return fail(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, router, "atomic.alignment",
                            "atomic at 0x\(String(w.remote_addr, radix: 16)) is not 8-byte aligned")
            }
            // A zero-length transfer touches no memory: like a NIC, do not
            // check its rkey (zero-byte WRITE_WITH_IMM is a common notify).
            if total > 0 {
                // The three refusals look the same to the tenant (no oracle
                // for which part of a guess was right); the log tells them apart.
                guard let mr = peer.session.rkeys[w.rkey], mr.pd === peer.pd else {
                    return remoteAccessFault(qp, w, wcOpcode, router, now: now, rule: "rkey",
                                             "rkey 0x\(String(w.rkey, radix: 16)) does not exist in the peer QP's PD")
                }
                guard mr.access & needFlag != 0 else {
                    return remoteAccessFault(qp, w, wcOpcode, router, now: now, rule: "rkey.access",
                                             "rkey 0x\(String(w.rkey, radix: 16)) does not grant remote \(what)")
                }
                guard let p = mr.remote(w.remote_addr, total) else {
                    return remoteAccessFault(qp, w, wcOpcode, router, now: now, rule: "rkey.bounds",
                                             "[0x\(String(w.remote_addr, radix: 16)), +\(total)) is outside the region of rkey 0x\(String(w.rkey, radix: 16))")
                }
                if isAtomic {
                    // The mapping's alignment follows the region's iova, which
                    // the tenant chose: check the word itself too.
                    guard UInt(bitPattern: p) & 7 == 0 else {
                        return fail(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, router, "atomic.alignment",
                                    "atomic target is not 8-byte aligned in the region's memory")
                    }
                }
                if let device {
                    // The device's rkey for the router's own mapping, at the
                    // router's address of the checked range; never a key the
                    // router did not get from the device. (Not a guess by the
                    // tenant: not counted toward key guessing.)
                    guard let real = mr.real else {
                        return fail(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), wcOpcode, router, "device",
                                    "rkey 0x\(String(w.rkey, radix: 16)) has no device registration")
                    }
                    return onDevice(device, qp, peer, w, wcOpcode, recv: recv, local: realLocal, inline: inlineSGE(w), receive: [],
                                       remote: (UInt64(UInt(bitPattern: p)), real.rkey), now: now, router: router)
                }
                if isAtomic {
                    let word = p.assumingMemoryBound(to: UInt64.self)
                    let old = w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
                        ? sluice_atomic_fetch_add64(word, w.compare_add)
                        : sluice_atomic_cmp_swap64(word, w.compare_add, w.swap)
                    // The original value goes to the local buffers (8 bytes,
                    // perhaps over several SGEs), by way of the scratch.
                    inlineScratch.storeBytes(of: old, as: UInt64.self)
                    src.append((UnsafeRawPointer(inlineScratch), 8))
                    copyRange(from: 0, count: 8)
                } else if isRead {
                    src.append((UnsafeRawPointer(p), Int(total)))
                    if copyPiece(qp, total) == nil { return .progressed }
                } else {
                    dst.append((p, Int(total)))
                    if copyPiece(qp, total) == nil { return .progressed }
                }
            }
        }
        if let device {
            // Nothing to move (a zero-byte WRITE or WRITE_WITH_IMM): the
            // device still carries it, and any immediate data.
            return onDevice(device, qp, peer, w, wcOpcode, recv: recv, local: realLocal, inline: inlineSGE(w), receive: [],
                               remote: (0, 0), now: now, router: router)
        }

        qp.consumeSend()
        if let r = recv {
            peer.consumeRecv()
            var c = sluice_cqe()
            c.wr_id = r.wr_id
            c.status = UInt32(SLUICE_WC_SUCCESS)
            c.opcode = UInt32(isSend ? SLUICE_WC_OP_RECV : SLUICE_WC_OP_RECV_RDMA_WITH_IMM)
            c.byte_len = UInt32(total)
            c.qp_num = peer.qpn
            c.src_qp = qp.qpn
            c.slid = qp.session.lid
            c.sl = qp.attrs.ah.sl
            if withImm {
                c.imm_data = w.imm_data
                c.wc_flags |= UInt32(SLUICE_WC_FLAG_WITH_IMM)
            }
            if qp.attrs.ah.is_global != 0 { c.wc_flags |= UInt32(SLUICE_WC_FLAG_GRH) }
            peer.recvCQ.push(c, solicited: w.send_flags & UInt32(SLUICE_SEND_SOLICITED) != 0)
        }
        if signaled {
            qp.sendCQ.push(requesterCQE(qp, w, UInt32(SLUICE_WC_SUCCESS), wcOpcode, UInt32(total)), solicited: false)
        }
        return .completed
    }

    /// A work request the policies do not allow on this connection: refused
    /// locally when the poster's own policy lacks it, as an invalid request
    /// at the responder when the peer's consent lacks it.
    private func refuseOperation(_ qp: QueuePair, _ peer: QueuePair, _ w: sluice_send_wqe, _ opcode: UInt32,
                                 _ router: Router) -> Outcome {
        let from = qp.session.tenant, to = peer.session.tenant
        let decision = router.engine.workRequest(from: from, to: to, operation: OperationSet.wireOpcode(w.opcode) ?? [])
        let byPeer = decision.rule.hasPrefix("\(to):")
        let status = byPeer ? SLUICE_WC_REM_INV_REQ_ERR : SLUICE_WC_LOC_QP_OP_ERR
        return fail(qp, w, UInt32(status), opcode, router, decision.rule, Router.reason(decision))
    }

    /// Hands a checked, translated request to the device. Posted, it has
    /// left the send queue (and the receive it consumes, the peer's receive
    /// queue); its completion comes from the device.
    private func onDevice(_ device: VerbsBackend, _ qp: QueuePair, _ peer: QueuePair, _ w: sluice_send_wqe, _ wcOpcode: UInt32,
                          recv: sluice_recv_wqe?, local: [RealSGE], inline: RealSGE?, receive: [RealSGE],
                          remote: (UInt64, UInt32)?, now: UInt64, router: Router) -> Outcome {
        switch device.post(qp, peer, w, recv: recv, local: local, inline: inline, receive: receive, remote: remote) {
        case .posted:
            qp.consumeSend()
            if recv != nil { peer.consumeRecv() }
            return .completed
        case .busy:
            return .wait(Stall(kind: .completionQueueFull, retryAt: now + 20_000, retriesLeft: -1))
        case .refused(let reason):
            return fail(qp, w, UInt32(SLUICE_WC_LOC_QP_OP_ERR), wcOpcode, router, "device", reason)
        }
    }

    /// Inline data for the device: the copy in the router's scratch buffer
    /// (the device copies it at post time, so the buffer is free after).
    private func inlineSGE(_ w: sluice_send_wqe) -> RealSGE? {
        guard w.send_flags & UInt32(SLUICE_SEND_INLINE) != 0 else { return nil }
        return RealSGE(address: UInt64(UInt(bitPattern: inlineScratch)), length: w.inline_len, lkey: 0)
    }

    private func requesterCQE(_ qp: QueuePair, _ w: sluice_send_wqe, _ status: UInt32, _ opcode: UInt32, _ len: UInt32) -> sluice_cqe {
        var c = sluice_cqe()
        c.wr_id = w.wr_id
        c.status = status
        c.opcode = opcode
        c.byte_len = len
        c.qp_num = qp.qpn
        return c
    }

    /// An error on the requester's side: an error completion (always, even
    /// for an unsignaled request), and the QP goes to ERR.
    private func fail(_ qp: QueuePair, _ w: sluice_send_wqe, _ status: UInt32, _ opcode: UInt32, _ router: Router,
                      _ rule: String, _ reason: String) -> Outcome {
        // Recorded before the tenant can see the completion.
        router.denyDataPath(qp, reason, rule: rule)
        qp.consumeSend()
        let cqe = requesterCQE(qp, w, status, opcode, 0)
        if !qp.inFlight.isEmpty {
            // Requests before it are still on the device: completions keep
            // the order of the send queue.
            qp.behindInFlight.append(cqe)
        } else {
            qp.sendCQ.pushInOrder(cqe, solicited: false)
        }
        qp.held = nil
        qp.stall = nil
        qp.paid = false
        qp.progress = 0
        return .failed
    }

    /// A remote key that did not resolve, or did not cover the access: the
    /// requester's QP fails, and the fault counts toward key guessing.
    private func remoteAccessFault(_ qp: QueuePair, _ w: sluice_send_wqe, _ opcode: UInt32, _ router: Router,
                                   now: UInt64, rule: String, _ reason: String) -> Outcome {
        let outcome = fail(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), opcode, router, rule, reason)
        router.noteRemoteAccessFault(qp, now: now)
        return outcome
    }

    /// The receive request could not take the message: the responder gets
    /// the local error and goes to ERR; the requester gets the remote error.
    private func responderError(_ qp: QueuePair, _ peer: QueuePair, _ w: sluice_send_wqe, _ r: sluice_recv_wqe,
                                local: UInt32, remote: UInt32, _ opcode: UInt32, _ router: Router, _ rule: String,
                                _ reason: String) -> Outcome {
        peer.consumeRecv()
        var c = sluice_cqe()
        c.wr_id = r.wr_id
        c.status = local
        c.opcode = UInt32(SLUICE_WC_OP_RECV)
        c.qp_num = peer.qpn
        c.src_qp = qp.qpn
        peer.recvCQ.pushInOrder(c, solicited: true)
        router.denyDataPath(peer, reason, rule: rule)
        router.enter(peer, .error)
        return fail(qp, w, remote, opcode, router, rule, "remote: " + reason)
    }

    /// RNR and transport retries: wait and try again, up to the QP's count.
    private func stallOrFail(_ qp: QueuePair, _ w: sluice_send_wqe, _ kind: Stall.Kind, _ opcode: UInt32,
                             now: UInt64, router: Router) -> Outcome {
        let interval: UInt64
        let budget: Int
        switch kind {
        case .receiverNotReady:
            interval = SoftwareFabric.rnrDelayNanos(qp.peer?.attrs.minRNRTimer ?? 0)
            budget = qp.attrs.rnrRetry == 7 ? -1 : Int(qp.attrs.rnrRetry)
        case .peerNotReady, .completionQueueFull, .throttled:
            interval = qp.attrs.timeout == 0 ? 1_000_000 : 4096 << UInt64(qp.attrs.timeout)
            budget = qp.attrs.timeout == 0 ? -1 : Int(qp.attrs.retryCount)
        }
        // retriesLeft counts the retries still allowed after the one being
        // scheduled; a budget of N means N retries, so 0 fails at the first
        // NAK, as on hardware.
        let left = qp.stall.map { $0.kind == kind ? $0.retriesLeft : budget } ?? budget
        if left == 0 {
            let status = kind == .receiverNotReady ? SLUICE_WC_RNR_RETRY_EXC_ERR : SLUICE_WC_RETRY_EXC_ERR
            return fail(qp, w, UInt32(status), opcode, router, kind == .receiverNotReady ? "retry.rnr" : "retry.transport",
                        kind == .receiverNotReady ? "receiver not ready: RNR retries exhausted" : "no response from the peer QP: retries exhausted")
        }
        return .wait(Stall(kind: kind, retryAt: now + interval, retriesLeft: left < 0 ? -1 : left - 1))
    }

    /// IB's RNR NAK timer encoding (IBTA table 45), in nanoseconds.
    static func rnrDelayNanos(_ code: UInt8) -> UInt64 {
        let micros: [UInt64] = [655_360, 10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 480, 640, 960, 1280, 1920, 2560, 3840,
                                5120, 7680, 10240, 15360, 20480, 30720, 40960, 61440, 81920, 122_880, 163_840, 245_760,
                                327_680, 491_520]
        return micros[Int(code & 31)] * 1000
    }

    // MARK: moving bytes

    /// Moves the next piece of the request's `total` bytes from `src` to
    /// `dst` (the gather and scatter lists, each covering at least `total`
    /// bytes): all of it when it is at most `chunkBytes`, else the next
    /// `chunkBytes` after `qp.progress`. Returns nil while bytes remain (the
    /// request stays at the head), or the bytes moved in all once done.
    private func copyPiece(_ qp: QueuePair, _ total: UInt64) -> UInt64? {
        let total = Int(total)
        let from = qp.progress
        let count = min(total - from, SoftwareFabric.chunkBytes)
        copyRange(from: from, count: count)
        if from + count < total {
            qp.progress = from + count
            return nil
        }
        qp.progress = 0
        return UInt64(total)
    }

    /// Copies bytes [from, from + count) of the gather list `src` to the
    /// same bytes of the scatter list `dst`.
    private func copyRange(from: Int, count: Int) {
        var si = 0, soff = from
        while si < src.count && soff >= src[si].1 {
            soff -= src[si].1
            si += 1
        }
        var di = 0, doff = from
        while di < dst.count && doff >= dst[di].1 {
            doff -= dst[di].1
            di += 1
        }
        var left = count
        while left > 0 {
            let (sp, slen) = src[si], (dp, dlen) = dst[di]
            let n = min(left, slen - soff, dlen - doff)
            memmove(dp + doff, sp + soff, n)
            left -= n
            soff += n
            doff += n
            if soff == slen {
                si += 1
                soff = 0
            }
            if doff == dlen {
                di += 1
                doff = 0
            }
        }
    }

    // MARK: error state

    /// A QP in ERR completes everything posted with a flush error.
    private func flush(_ qp: QueuePair) -> Bool {
        var did = false
        // On the verbs backend, what the device still holds completes (as a
        // flush) first; the ring's rest follows in order.
        let deviceHoldsSends = !qp.inFlight.isEmpty || !qp.behindInFlight.isEmpty
        if !deviceHoldsSends, let n = qp.pending(prod: qp.sqProd, cons: qp.sqCons, capacity: qp.sqCapacity), n > 0 {
            for _ in 0..<min(Int(n), 64) {
                guard qp.sendCQ.room >= 1 else { break }
                let w = qp.copySendWQE(qp.sqCons)
                qp.sendCQ.pushInOrder(requesterCQE(qp, w, UInt32(SLUICE_WC_WR_FLUSH_ERR), 0, 0), solicited: false)
                qp.consumeSend()
                did = true
            }
        }
        if qp.recvInFlight == 0, let n = qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity), n > 0 {
            for _ in 0..<min(Int(n), 64) {
                guard qp.recvCQ.room >= 1 else { break }
                let r = qp.copyRecvWQE(qp.rqCons)
                var c = sluice_cqe()
                c.wr_id = r.wr_id
                c.status = UInt32(SLUICE_WC_WR_FLUSH_ERR)
                c.opcode = UInt32(SLUICE_WC_OP_RECV)
                c.qp_num = qp.qpn
                qp.recvCQ.pushInOrder(c, solicited: true)
                qp.consumeRecv()
                did = true
            }
        }
        return did
    }
}

extension Router {
    /// Records a refused or failed work request, one record each (allows
    /// are only counted).
    func denyDataPath(_ qp: QueuePair, _ reason: String, rule: String) {
        log.record(event: "datapath", subject: qp.session.subject, verb: "post_send",
                   object: "qpn 0x\(String(qp.qpn, radix: 16))", decision: .deny, rule: rule, reason: reason)
    }
}

private extension UInt64 {
    var clampedTicks: Int64 { Int64(clamping: self) }
}
