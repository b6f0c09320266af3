import SluicePolicy

/// A token bucket for bytes or operations, in integer arithmetic only, with
/// the clock injected: every method takes `now`, monotonic nanoseconds, and
/// nothing here reads a clock or sleeps.
///
/// **Exact rate.** Refills keep their fractional remainder in nanotokens
/// (1/1_000_000_000 token), so the tokens a bucket gains between two times
/// do not depend on how often it was refilled in between: refilling in many
/// tiny steps gives exactly what one big step gives, and over any span in
/// which the bucket is never full it gains exactly
/// `floor(rate * elapsed / 1e9)` tokens (plus the carried remainder). The
/// remainder is the phase of the refill clock and is kept even while the
/// bucket is full (whole tokens beyond the burst are discarded, the phase
/// is not), so a consumer that takes each token as soon as it is due gets
/// exactly `rate` tokens per second whatever the burst: tokens fall due at
/// `ceil(k * 1e9 / rate)` nanoseconds after the bucket was made.
///
/// **Debt.** A request of `cost` tokens fits when the bucket's level (tokens,
/// or minus the debt) is at least `min(cost, burst)`. It then takes all of
/// `cost`; whatever the bucket lacks becomes debt. So a request larger than
/// the burst (a 4 MiB work request under a 1 MiB burst) is admitted when the
/// bucket is full and leaves it `cost - burst` in debt; nothing else fits
/// until the debt is repaid, at exactly the rate, which keeps the long-run
/// average at the rate even for requests larger than the burst. A request
/// no larger than the burst never makes debt.
///
/// **Clock.** Time is measured from the latest `now` seen. A `now` earlier
/// than that (a clock that went backwards) refills nothing, and a wait
/// returned for it is measured to the moment the request would fit on the
/// latest clock, so it is never negative and never too short.
///
/// **Overflow.** Rates, bursts, costs and times up to `UInt64.max` are all
/// safe: products are taken at full width and results saturate.
/// `debt + burst <= UInt64.max` always holds (debt beyond it, reachable only
/// through `charge` without a prior `wait` of 0, or by raising the burst
/// while deep in debt, is forgiven).
struct TokenBucket: Equatable {
    /// Tokens per second, above zero.
    private(set) var rate: UInt64
    /// Most tokens the bucket holds, above zero.
    private(set) var burst: UInt64
    /// Whole tokens held, `0...burst`; 0 while in debt.
    private(set) var tokens: UInt64
    /// Tokens owed, after a request larger than what was held; 0 while
    /// `tokens > 0`.
    private(set) var debt: UInt64
    /// Progress towards the next whole token, in nanotokens, `0..<1e9`.
    private(set) var fraction: UInt64
    /// The latest `now` seen: refills are measured from here.
    private(set) var last: UInt64

    /// Nanotokens per token, and nanoseconds per second.
    static let nano: UInt64 = 1_000_000_000

    /// A full bucket. A rate or burst of 0 is taken as 1 (a policy never
    /// yields 0: rates and bursts are validated above zero).
    init(rate: UInt64, burst: UInt64, now: UInt64) {
        self.rate = max(1, rate)
        self.burst = max(1, burst)
        self.tokens = self.burst
        self.debt = 0
        self.fraction = 0
        self.last = now
    }

    /// The byte bucket of `limit`: `bandwidth` bytes per second, holding
    /// `burstBytesOrDefault`. nil when the limit sets no bandwidth.
    static func bytes(from limit: RateLimit?, now: UInt64) -> TokenBucket? {
        guard let limit, let rate = limit.bandwidth, let burst = limit.burstBytesOrDefault else { return nil }
        return TokenBucket(rate: rate, burst: burst, now: now)
    }

    /// The operation bucket of `limit`: `operations` per second, holding
    /// `burstOperationsOrDefault`. nil when the limit sets no operation rate.
    static func operations(from limit: RateLimit?, now: UInt64) -> TokenBucket? {
        guard let limit, let rate = limit.operations, let burst = limit.burstOperationsOrDefault else { return nil }
        return TokenBucket(rate: rate, burst: burst, now: now)
    }

    /// The control-verb bucket of `limit`; nil when there is no limit.
    static func controlVerbs(from limit: ControlVerbLimit?, now: UInt64) -> TokenBucket? {
        guard let limit else { return nil }
        return TokenBucket(rate: limit.operations, burst: limit.burstOperationsOrDefault, now: now)
    }

    var isFull: Bool { tokens == burst }

    // MARK: taking

    /// Refills, then takes `cost` if it fits and returns 0; otherwise takes
    /// nothing and returns the nanoseconds until it would fit (at least 1;
    /// `UInt64.max` when that is beyond the clock's range).
    mutating func take(_ cost: UInt64, now: UInt64) -> UInt64 {
        refill(now: now)
        let w = waitRefilled(cost, now: now)
        if w == 0 { deduct(cost) }
        return w
    }

    /// What `take` would return, without taking anything.
    func wait(for cost: UInt64, now: UInt64) -> UInt64 {
        var copy = self
        copy.refill(now: now)
        return copy.waitRefilled(cost, now: now)
    }

    /// Refills, then takes `cost` whether it fits or not: for a caller that
    /// checked several buckets with `wait(for:now:)` and charges all of them
    /// or none. Whatever the bucket lacks becomes debt.
    mutating func charge(_ cost: UInt64, now: UInt64) {
        refill(now: now)
        deduct(cost)
    }

    /// Changes the rate and the burst live: refills at the old rate up to
    /// `now`, then keeps the level, the tokens clamped to the new burst and
    /// the debt kept, and the progress towards the next token too.
    mutating func reconfigure(rate newRate: UInt64, burst newBurst: UInt64, now: UInt64) {
        refill(now: now)
        rate = max(1, newRate)
        burst = max(1, newBurst)
        tokens = min(tokens, burst)
        debt = min(debt, UInt64.max - burst)
    }

    // MARK: the arithmetic

    /// Adds the tokens earned since the latest `now` seen. Idempotent for one
    /// `now`; a `now` in the past changes nothing.
    mutating func refill(now: UInt64) {
        guard now > last else { return }
        let elapsed = now - last
        last = now
        // rate * elapsed + fraction < 2^128: (2^64-1)^2 + 1e9 fits.
        let product = rate.multipliedFullWidth(by: elapsed)
        let (low, carry) = product.low.addingReportingOverflow(fraction)
        let high = product.high + (carry ? 1 : 0)
        guard high < TokenBucket.nano else {
            // At least 2^64 whole tokens, more than any debt plus burst: full.
            // (x mod n == ((high mod n) * 2^64 + low) mod n.)
            fraction = TokenBucket.nano.dividingFullWidth((high % TokenBucket.nano, low)).remainder
            tokens = burst
            debt = 0
            return
        }
        // The common case, fewer than 2^64 nanotokens, divides by a constant
        // (a multiply and a shift); the general one needs a 128-bit divide.
        let (earned, remainder) = high == 0 ? (low / TokenBucket.nano, low % TokenBucket.nano)
            : TokenBucket.nano.dividingFullWidth((high, low))
        fraction = remainder
        if earned <= debt {
            debt -= earned
            return
        }
        let gain = earned - debt
        debt = 0
        tokens = gain >= burst - tokens ? burst : tokens + gain
    }

    /// The wait for `cost` on a bucket refilled up to `now` (or past it).
    private func waitRefilled(_ cost: UInt64, now: UInt64) -> UInt64 {
        let target = min(cost, burst)
        // Whole tokens missing to reach `target`; at most burst + debt.
        let missing: UInt64
        if debt > 0 {
            missing = target + debt
        } else if tokens >= target {
            return 0
        } else {
            missing = target - tokens
        }
        // Nanotokens still to earn: missing * 1e9 - fraction (> 0, as
        // missing >= 1 and fraction < 1e9), then ceil(/ rate) nanoseconds.
        let product = missing.multipliedFullWidth(by: TokenBucket.nano)
        let (low, borrow) = product.low.subtractingReportingOverflow(fraction)
        let high = product.high - (borrow ? 1 : 0)
        guard high < rate else { return .max }
        let (quotient, remainder) = rate.dividingFullWidth((high, low))
        let (afterLast, o1) = quotient.addingReportingOverflow(remainder > 0 ? 1 : 0)
        // Measured from the latest clock seen, which is `now` unless the
        // clock went backwards.
        let (fitsAt, o2) = last.addingReportingOverflow(afterLast)
        if o1 || o2 { return .max }
        return fitsAt - min(now, last)
    }

    private mutating func deduct(_ cost: UInt64) {
        if debt == 0 && cost <= tokens {
            tokens -= cost
            return
        }
        let lacking = cost - tokens // tokens < cost, or tokens == 0 when in debt
        tokens = 0
        let (owed, overflow) = debt.addingReportingOverflow(lacking)
        debt = overflow ? UInt64.max - burst : min(owed, UInt64.max - burst)
    }
}

/// The byte and operation buckets of one scope, a tenant or one QP, each
/// optional (no bucket: no limit).
struct RateBuckets: Equatable {
    var bytes: TokenBucket?
    var operations: TokenBucket?

    init(bytes: TokenBucket? = nil, operations: TokenBucket? = nil) {
        self.bytes = bytes
        self.operations = operations
    }

    /// Full buckets for `limit`; none when it is nil.
    init(_ limit: RateLimit?, now: UInt64) {
        bytes = TokenBucket.bytes(from: limit, now: now)
        operations = TokenBucket.operations(from: limit, now: now)
    }

    var isUnlimited: Bool { bytes == nil && operations == nil }

    mutating func refill(now: UInt64) {
        bytes?.refill(now: now)
        operations?.refill(now: now)
    }

    /// The wait for a request costing `bytes` bytes and one operation: the
    /// longer of the two buckets' waits, 0 when both fit.
    func wait(bytes cost: UInt64, now: UInt64) -> UInt64 {
        max(bytes?.wait(for: cost, now: now) ?? 0, operations?.wait(for: 1, now: now) ?? 0)
    }

    /// Charges a request costing `bytes` bytes and one operation.
    mutating func charge(bytes cost: UInt64, now: UInt64) {
        bytes?.charge(cost, now: now)
        operations?.charge(1, now: now)
    }

    /// Applies a changed limit live: a bucket whose rate stays set keeps its
    /// level (`TokenBucket.reconfigure`), a new one starts full, one whose
    /// rate is gone is dropped.
    mutating func reconfigure(_ limit: RateLimit?, now: UInt64) {
        TokenBucket.reconfigure(&bytes, rate: limit?.bandwidth, burst: limit?.burstBytesOrDefault, now: now)
        TokenBucket.reconfigure(&operations, rate: limit?.operations, burst: limit?.burstOperationsOrDefault, now: now)
    }
}

extension TokenBucket {
    /// Reconfigures, creates (full) or drops an optional bucket.
    static func reconfigure(_ bucket: inout TokenBucket?, rate: UInt64?, burst: UInt64?, now: UInt64) {
        guard let rate, let burst else {
            bucket = nil
            return
        }
        if bucket == nil {
            bucket = TokenBucket(rate: rate, burst: burst, now: now)
        } else {
            bucket!.reconfigure(rate: rate, burst: burst, now: now)
        }
    }
}

/// How much shaping held traffic back.
struct ShaperCounters: Equatable {
    /// Requests that had to wait at least once.
    var throttledRequests: UInt64 = 0
    /// Nanoseconds requests spent waiting, from their first refusal to their
    /// admission (or abandonment).
    var throttledNanoseconds: UInt64 = 0

    mutating func record(waitedFrom start: UInt64, until now: UInt64) {
        throttledNanoseconds &+= now > start ? now - start : 0
    }
}

/// One tenant's shaping state, shared by all its QPs and sessions: its
/// byte and operation buckets, its minimum byte charge, its control-verb
/// bucket, its scheduler weight, and its counters. One object per tenant,
/// made at load and kept across policy reloads (`reconfigure`), so that
/// nothing is allocated per request.
final class TenantRateLimiter {
    fileprivate(set) var buckets: RateBuckets
    /// What a work request is charged in the byte buckets at least.
    private(set) var minimumRequestBytes: UInt64
    /// The DRR scheduler weight, 1...1000.
    private(set) var weight: Int
    private(set) var controlVerbs: TokenBucket?
    /// All the tenant's QPs together.
    var counters = ShaperCounters()
    /// Control verbs that had to wait, and for how long in total.
    private(set) var controlVerbCounters = ShaperCounters()

    init(_ limits: RateLimits, now: UInt64) {
        buckets = RateBuckets(limits.tenant, now: now)
        minimumRequestBytes = limits.minimumRequestBytes
        weight = limits.weight
        controlVerbs = TokenBucket.controlVerbs(from: limits.controlVerbs, now: now)
    }

    /// A reloaded policy: buckets keep their levels (see `RateBuckets.reconfigure`).
    /// The QPs' own buckets are reconfigured through their `RateShaper`s.
    func reconfigure(_ limits: RateLimits, now: UInt64) {
        buckets.reconfigure(limits.tenant, now: now)
        minimumRequestBytes = limits.minimumRequestBytes
        weight = limits.weight
        TokenBucket.reconfigure(&controlVerbs, rate: limits.controlVerbs?.operations,
                                burst: limits.controlVerbs?.burstOperationsOrDefault, now: now)
    }

    /// One control verb: 0 when it may run now (it is charged), else the
    /// nanoseconds until it may (nothing is charged). `waitingSince` is when
    /// this same verb was first refused (nil on its first try), so that a
    /// verb is counted as throttled once, and its whole wait on admission.
    func admitControlVerb(now: UInt64, waitingSince: UInt64? = nil) -> UInt64 {
        guard controlVerbs != nil else { return 0 }
        let w = controlVerbs!.take(1, now: now)
        if w > 0 {
            if waitingSince == nil { controlVerbCounters.throttledRequests &+= 1 }
        } else if let start = waitingSince {
            controlVerbCounters.record(waitedFrom: start, until: now)
        }
        return w
    }
}

/// The shaper of one QP: the buckets that apply to its work requests — its
/// tenant's (shared, through `tenant`) and its own — charged all or none.
///
/// A QP's requests are admitted in order, so the shaper tracks the one it
/// is holding back: `throttledRequests` counts requests that had to wait,
/// `throttledNanoseconds` the time from their first refusal to admission,
/// here and in the tenant's counters.
struct RateShaper {
    let tenant: TenantRateLimiter
    private(set) var queuePair: RateBuckets
    private(set) var counters = ShaperCounters()
    /// When the request being held back was first refused.
    private(set) var waitingSince: UInt64?
    /// The last refusal came from the tenant's buckets, which every QP of
    /// the tenant shares: none of them can go before that wait is over.
    private(set) var tenantWide = false

    init(tenant: TenantRateLimiter, queuePair limit: RateLimit?, now: UInt64) {
        self.tenant = tenant
        self.queuePair = RateBuckets(limit, now: now)
    }

    /// A reloaded policy's `queuePair` limit.
    mutating func reconfigure(queuePair limit: RateLimit?, now: UInt64) {
        queuePair.reconfigure(limit, now: now)
    }

    /// The byte cost of a request of `bytes` bytes: at least the tenant's
    /// `minimumRequestBytes`.
    func cost(bytes: UInt64) -> UInt64 { max(bytes, tenant.minimumRequestBytes) }

    /// A work request moving `bytes` bytes (SEND/WRITE: its SGE or inline
    /// bytes; READ: the response bytes): 0 when it may run now, after
    /// charging every bucket (byte cost `max(bytes, minimumRequestBytes)`,
    /// one operation); otherwise the nanoseconds until every bucket would
    /// admit it (the largest wait), charging none.
    mutating func admit(bytes: UInt64, now: UInt64) -> UInt64 {
        let byteCost = cost(bytes: bytes)
        // Worked on copies, written back once: one access to the shared
        // tenant object instead of one per bucket operation. Refilling first
        // is invisible (a refill's outcome does not depend on how often it
        // runs) and makes the waits and charges below refill-free.
        var shared = tenant.buckets
        shared.refill(now: now)
        queuePair.refill(now: now)
        let tenantWait = shared.wait(bytes: byteCost, now: now)
        let wait = max(tenantWait, queuePair.wait(bytes: byteCost, now: now))
        tenantWide = tenantWait > 0 && tenantWait == wait
        if wait > 0 {
            if waitingSince == nil {
                waitingSince = now
                counters.throttledRequests &+= 1
                tenant.counters.throttledRequests &+= 1
            }
            return wait
        }
        shared.charge(bytes: byteCost, now: now)
        tenant.buckets = shared
        queuePair.charge(bytes: byteCost, now: now)
        if let start = waitingSince {
            counters.record(waitedFrom: start, until: now)
            tenant.counters.record(waitedFrom: start, until: now)
            waitingSince = nil
        }
        return 0
    }

    /// The request being held back will not be retried (the QP went to
    /// ERR, or was destroyed): its wait so far is counted, and the next
    /// request starts afresh.
    mutating func abandonWait(now: UInt64) {
        guard let start = waitingSince else { return }
        counters.record(waitedFrom: start, until: now)
        tenant.counters.record(waitedFrom: start, until: now)
        waitingSince = nil
    }
}
