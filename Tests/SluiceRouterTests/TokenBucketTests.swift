import XCTest
import SluicePolicy
@testable import SluiceRouter

/// The shaper's token buckets, on an injected clock: every expected value is
/// exact (nanoseconds, whole tokens, nanotokens).
final class TokenBucketTests: XCTestCase {
    let ms: UInt64 = 1_000_000
    let s: UInt64 = 1_000_000_000

    // MARK: taking and refilling

    func testStartsFullAndTakesOnlyWhatFits() {
        var b = TokenBucket(rate: 1000, burst: 10, now: 5)
        XCTAssertEqual(b.tokens, 10)
        XCTAssertTrue(b.isFull)
        XCTAssertEqual(b.take(4, now: 5), 0)
        XCTAssertEqual(b.tokens, 6)
        XCTAssertEqual(b.take(7, now: 5), 1 * ms, "one token short at 1000/s")
        XCTAssertEqual(b.tokens, 6, "a refused request takes nothing")
        XCTAssertEqual(b.take(6, now: 5), 0)
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.debt, 0)
        XCTAssertEqual(b.take(1, now: 5), 1 * ms)
    }

    func testATokenIsDueNotBeforeItsTime() {
        var b = TokenBucket(rate: 1000, burst: 1, now: 0)
        XCTAssertEqual(b.take(1, now: 0), 0)
        XCTAssertEqual(b.take(1, now: 999_999), 1, "1 ns early")
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.fraction, 999_999_000)
        XCTAssertEqual(b.take(1, now: 1_000_000), 0, "on time")
        XCTAssertEqual(b.take(1, now: 1_000_000), 1 * ms)
    }

    func testTheWaitIsRoundedUpAndExact() {
        // 3 tokens per second: one every 333_333_333.3 ns.
        var b = TokenBucket(rate: 3, burst: 2, now: 0)
        XCTAssertEqual(b.take(2, now: 0), 0)
        XCTAssertEqual(b.wait(for: 1, now: 0), 333_333_334)
        XCTAssertEqual(b.wait(for: 2, now: 0), 666_666_667)
        XCTAssertEqual(b.take(1, now: 333_333_333), 1)
        XCTAssertEqual(b.take(1, now: 333_333_334), 0)
        XCTAssertEqual(b.fraction, 2, "the 2 nanotokens beyond the token are kept")
        XCTAssertEqual(b.wait(for: 1, now: 333_333_334), 333_333_333)
    }

    func testWaitPredictsTakeAndChangesNothing() {
        var b = TokenBucket(rate: 7, burst: 5, now: 0)
        XCTAssertEqual(b.take(5, now: 0), 0)
        let before = b
        let predicted = b.wait(for: 3, now: 100 * ms)
        XCTAssertEqual(b, before, "wait does not refill the bucket itself")
        XCTAssertEqual(predicted, 428_571_429 - 100 * ms) // ceil(3e9 / 7) from 0
        XCTAssertEqual(b.take(3, now: 100 * ms), predicted)
        XCTAssertEqual(b.wait(for: 3, now: 428_571_429), 0)
        XCTAssertEqual(b.take(3, now: 428_571_429), 0)
        XCTAssertEqual(b.tokens, 0)
    }

    func testAZeroCostFitsUnlessInDebt() {
        var b = TokenBucket(rate: 1000, burst: 10, now: 0)
        XCTAssertEqual(b.take(10, now: 0), 0)
        XCTAssertEqual(b.take(0, now: 0), 0)
        XCTAssertEqual(b.take(20, now: 10 * ms), 0, "full: admitted, 10 in debt")
        XCTAssertEqual(b.take(0, now: 10 * ms), 10 * ms, "nothing passes until the debt is repaid")
    }

    func testARateOrBurstOfZeroIsTakenAsOne() {
        let b = TokenBucket(rate: 0, burst: 0, now: 0)
        XCTAssertEqual(b.rate, 1)
        XCTAssertEqual(b.burst, 1)
        XCTAssertEqual(b.tokens, 1)
    }

    // MARK: exactness

    func testTheLongRunRateIsExactWhenTheRateDoesNotDivideASecond() {
        for (rate, burst) in [(UInt64(3), UInt64(1)), (7, 1000), (9_973, 1)] {
            var b = TokenBucket(rate: rate, burst: burst, now: 0)
            XCTAssertEqual(b.take(burst, now: 0), 0)
            // A consumer that takes one token whenever the bucket says it may.
            var now: UInt64 = 0
            var admitted: UInt64 = 0
            var waits: UInt64 = 0
            while admitted < 3 * rate {
                let w = b.take(1, now: now)
                if w == 0 { admitted += 1 } else { now += w; waits += 1 }
                if waits > 4 * rate { break }
            }
            XCTAssertEqual(now, 3 * s, "rate \(rate): 3 seconds' worth of tokens in exactly 3 seconds")
            XCTAssertEqual(waits, 3 * rate, "rate \(rate): every wait was exactly long enough")
            XCTAssertEqual(b.fraction, 0)
        }
    }

    func testManySmallStepsGiveWhatOneBigStepGives() {
        // Draining, in debt, and reaching the cap on the way.
        let setups: [(rate: UInt64, burst: UInt64, charge: UInt64)] = [
            (999_999_937, 10_000_000_000, 10_000_000_000), // drained, never full again
            (999_999_937, 1_000, 250_000), // in debt most of the way, then full
            (7, 3, 3), (3, 1, 5), (UInt64.max, UInt64.max, UInt64.max),
        ]
        for (rate, burst, charge) in setups {
            var stepped = TokenBucket(rate: rate, burst: burst, now: 0)
            stepped.charge(charge, now: 0)
            var direct = stepped
            var lcg: UInt64 = 12345
            var now: UInt64 = 0
            for i in 0..<20_000 {
                lcg = lcg &* 6364136223846793005 &+ 1442695040888963407
                now += i < 10_000 ? 1 : (lcg >> 33) % 1_000
                stepped.refill(now: now)
            }
            direct.refill(now: now)
            XCTAssertEqual(stepped, direct, "rate \(rate) burst \(burst)")
        }
        // And the exact amount: 999_999_937 tokens/s for 100 µs from empty.
        var b = TokenBucket(rate: 999_999_937, burst: 10_000_000_000, now: 0)
        b.charge(10_000_000_000, now: 0)
        for t in 1...100_000 as ClosedRange<UInt64> { b.refill(now: t) }
        XCTAssertEqual(b.tokens, 99_999)
        XCTAssertEqual(b.fraction, 993_700_000)
    }

    // MARK: requests larger than the burst, and debt

    func testARequestLargerThanTheBurstIsAdmittedFromAFullBucketIntoDebt() {
        var b = TokenBucket(rate: 1000, burst: 100, now: 0)
        XCTAssertEqual(b.take(5, now: 0), 0)
        XCTAssertEqual(b.take(250, now: 0), 5 * ms, "needs a full bucket (min(cost, burst) tokens)")
        XCTAssertEqual(b.take(250, now: 5 * ms), 0)
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.debt, 150)
        XCTAssertEqual(b.wait(for: 0, now: 5 * ms), 150 * ms)
        XCTAssertEqual(b.wait(for: 1, now: 5 * ms), 151 * ms)
        XCTAssertEqual(b.wait(for: 100, now: 5 * ms), 250 * ms)
        XCTAssertEqual(b.wait(for: 4 << 20, now: 5 * ms), 250 * ms, "any oversize request waits for a full bucket")
        XCTAssertEqual(b.take(1, now: 155 * ms), 1 * ms, "debt repaid, the token not yet earned")
        XCTAssertEqual(b.debt, 0)
        XCTAssertEqual(b.take(1, now: 156 * ms), 0)
        XCTAssertEqual(b.tokens, 0)
    }

    func testDebtIsRepaidAtExactlyTheRate() {
        // 250-token requests under a 100-token burst at 1000/s: one every
        // 250 ms, exactly, so the average is the rate.
        var b = TokenBucket(rate: 1000, burst: 100, now: 0)
        var now: UInt64 = 0
        var times: [UInt64] = []
        for _ in 0..<100 where times.count < 41 { // bounded: a bug fails, not hangs
            let w = b.take(250, now: now)
            if w == 0 { times.append(now) } else { now += w }
        }
        XCTAssertEqual(times, (0...40).map { UInt64($0) * 250 * ms })
        XCTAssertEqual(b.debt, 150)
        // A rate that does not divide a second: 10 tokens under a burst of 1
        // at 3/s leave 9 in debt, and the next token is 10 tokens away.
        var c = TokenBucket(rate: 3, burst: 1, now: 0)
        XCTAssertEqual(c.take(10, now: 0), 0)
        XCTAssertEqual(c.debt, 9)
        XCTAssertEqual(c.wait(for: 1, now: 0), 3_333_333_334)
        XCTAssertEqual(c.take(1, now: 3_333_333_333), 1)
        XCTAssertEqual(c.take(1, now: 3_333_333_334), 0)
        XCTAssertEqual(c.debt, 0)
        XCTAssertEqual(c.fraction, 2)
    }

    func testChargeTakesWhatItIsGivenAndCapsTheDebt() {
        var b = TokenBucket(rate: 1, burst: 10, now: 0)
        b.charge(4, now: 0)
        XCTAssertEqual(b.tokens, 6)
        b.charge(8, now: 0)
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.debt, 2)
        b.charge(.max, now: 0)
        XCTAssertEqual(b.debt, .max - 10, "debt + burst stays within 64 bits")
        b.charge(5, now: 0)
        XCTAssertEqual(b.debt, .max - 10)
    }

    // MARK: the clock

    func testAClockGoingBackwardsRefillsNothingAndWaitsFromTheLatestTime() {
        var b = TokenBucket(rate: 1000, burst: 1, now: s)
        XCTAssertEqual(b.take(1, now: s), 0)
        XCTAssertEqual(b.take(1, now: 500), s - 500 + 1 * ms, "fits 1 ms after the latest time seen")
        XCTAssertEqual(b.last, s)
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.take(1, now: 0), s + 1 * ms)
        XCTAssertEqual(b.take(1, now: s + 999_999), 1, "forward time is measured from the latest seen")
        XCTAssertEqual(b.take(1, now: s + 1 * ms), 0)
        // Full, a past time needs no wait.
        let full = TokenBucket(rate: 1000, burst: 1, now: s)
        XCTAssertEqual(full.wait(for: 1, now: 0), 0)
    }

    func testHugeValuesNeitherOverflowNorTrap() {
        var b = TokenBucket(rate: .max, burst: .max, now: 0)
        XCTAssertEqual(b.take(.max, now: 0), 0)
        XCTAssertEqual(b.wait(for: 1, now: 0), 1)
        XCTAssertEqual(b.wait(for: .max, now: 0), s, "2^64-1 tokens at 2^64-1 per second")
        XCTAssertEqual(b.take(.max, now: .max), 0, "a gap of 2^64-1 ns at 2^64-1 tokens/s refills it")
        XCTAssertEqual(b.tokens, 0)
        XCTAssertEqual(b.fraction, 349_108_225) // (2^64-1)^2 mod 1e9
        XCTAssertEqual(b.take(1, now: .max), .max, "beyond the clock's range: saturated")

        var slow = TokenBucket(rate: 1, burst: .max, now: 0)
        XCTAssertEqual(slow.take(.max, now: 0), 0)
        XCTAssertEqual(slow.wait(for: 1, now: 0), s)
        XCTAssertEqual(slow.wait(for: .max, now: 0), .max)

        var owing = TokenBucket(rate: 1, burst: 1, now: 0)
        XCTAssertEqual(owing.take(.max, now: 0), 0)
        XCTAssertEqual(owing.debt, .max - 1)
        XCTAssertEqual(owing.wait(for: 1, now: 0), .max)
        owing.refill(now: .max)
        XCTAssertEqual(owing.debt, 18_446_744_055_262_807_541) // (2^64-2) - floor((2^64-1) / 1e9)
        XCTAssertEqual(owing.fraction, 709_551_615)

        var late = TokenBucket(rate: 1, burst: 1, now: .max - 5)
        XCTAssertEqual(late.take(1, now: .max - 5), 0)
        XCTAssertEqual(late.take(1, now: .max - 5), .max)
    }

    // MARK: reconfiguring

    func testReconfigureRefillsAtTheOldRateThenKeepsTheLevel() {
        var b = TokenBucket(rate: 1000, burst: 1000, now: 0)
        XCTAssertEqual(b.take(1000, now: 0), 0)
        b.reconfigure(rate: 1, burst: 1000, now: 500 * ms)
        XCTAssertEqual(b.tokens, 500, "500 ms at the old rate")
        XCTAssertEqual(b.rate, 1)
        XCTAssertEqual(b.wait(for: 501, now: 500 * ms), s)

        var full = TokenBucket(rate: 1000, burst: 100, now: 0)
        full.reconfigure(rate: 1000, burst: 10, now: 0)
        XCTAssertEqual(full.tokens, 10, "clamped to the new burst")
        full.reconfigure(rate: 1000, burst: 1000, now: 0)
        XCTAssertEqual(full.tokens, 10, "a larger burst is not a gift")
        XCTAssertEqual(full.wait(for: 1000, now: 0), 990 * ms)
    }

    func testReconfigureMidDebtKeepsTheDebt() {
        var b = TokenBucket(rate: 1000, burst: 100, now: 0)
        XCTAssertEqual(b.take(250, now: 0), 0)
        XCTAssertEqual(b.debt, 150)
        b.reconfigure(rate: 2000, burst: 50, now: 100 * ms)
        XCTAssertEqual(b.debt, 50, "100 ms repaid at the old rate")
        XCTAssertEqual(b.burst, 50)
        XCTAssertEqual(b.wait(for: 1, now: 100 * ms), 25_500_000, "51 tokens at the new 2000/s")
        XCTAssertEqual(b.take(1, now: 125_499_999), 1)
        XCTAssertEqual(b.take(1, now: 125_500_000), 0)

        var deep = TokenBucket(rate: 1, burst: 10, now: 0)
        deep.charge(.max, now: 0)
        XCTAssertEqual(deep.debt, .max - 10)
        deep.reconfigure(rate: 1, burst: 20, now: 0)
        XCTAssertEqual(deep.debt, .max - 20)
    }

    // MARK: from a policy

    func testBucketsFromAPolicyRateLimit() throws {
        let limit = RateLimit(bandwidth: 1_250_000_000, operations: 5, burstBytes: 4 << 20)
        let bytes = try XCTUnwrap(TokenBucket.bytes(from: limit, now: 7))
        XCTAssertEqual(bytes, TokenBucket(rate: 1_250_000_000, burst: 4 << 20, now: 7))
        XCTAssertEqual(bytes.tokens, 4 << 20)
        XCTAssertEqual(bytes.last, 7)
        XCTAssertEqual(TokenBucket.operations(from: limit, now: 7), TokenBucket(rate: 5, burst: 1, now: 7))
        XCTAssertNil(TokenBucket.bytes(from: RateLimit(operations: 5), now: 0))
        XCTAssertNil(TokenBucket.operations(from: RateLimit(bandwidth: 5), now: 0))
        XCTAssertNil(TokenBucket.bytes(from: nil, now: 0))
        XCTAssertEqual(TokenBucket.bytes(from: RateLimit(bandwidth: 1000), now: 0)?.burst, 100)
        XCTAssertEqual(TokenBucket.controlVerbs(from: ControlVerbLimit(operations: 100), now: 0),
                       TokenBucket(rate: 100, burst: 10, now: 0))
        XCTAssertEqual(TokenBucket.controlVerbs(from: ControlVerbLimit(operations: 100, burstOperations: 3), now: 0)?.burst, 3)
        XCTAssertNil(TokenBucket.controlVerbs(from: nil, now: 0))
    }

    func testRateBucketsReconfigureKeepAddOrDropBuckets() {
        var r = RateBuckets(RateLimit(bandwidth: 1000, burstBytes: 100), now: 0)
        XCTAssertNil(r.operations)
        r.bytes?.charge(100, now: 0)
        r.reconfigure(RateLimit(bandwidth: 2000, operations: 10, burstBytes: 100), now: 10 * ms)
        XCTAssertEqual(r.bytes?.tokens, 10, "kept its level, refilled at the old rate")
        XCTAssertEqual(r.bytes?.rate, 2000)
        XCTAssertEqual(r.operations, TokenBucket(rate: 10, burst: 1, now: 10 * ms), "a new bucket starts full")
        r.reconfigure(RateLimit(operations: 10), now: 20 * ms)
        XCTAssertNil(r.bytes)
        XCTAssertFalse(r.isUnlimited)
        r.reconfigure(nil, now: 30 * ms)
        XCTAssertTrue(r.isUnlimited)
    }

    // MARK: the shaper

    /// Tenant: 1000 B/s (burst 1000), 10 ops/s (burst 2); each QP 500 B/s
    /// (burst 500); requests cost at least 64 bytes.
    func limits() -> RateLimits {
        RateLimits(tenant: RateLimit(bandwidth: 1000, operations: 10, burstBytes: 1000, burstOperations: 2),
                   queuePair: RateLimit(bandwidth: 500, burstBytes: 500))
    }

    func testTheShaperChargesEveryBucketOrNone() {
        let tenant = TenantRateLimiter(limits(), now: 0)
        var qp = RateShaper(tenant: tenant, queuePair: limits().queuePair, now: 0)
        XCTAssertEqual(qp.admit(bytes: 400, now: 0), 0)
        XCTAssertEqual(tenant.buckets.bytes?.tokens, 600)
        XCTAssertEqual(tenant.buckets.operations?.tokens, 1)
        XCTAssertEqual(qp.queuePair.bytes?.tokens, 100)

        // The QP's byte bucket lacks 100 bytes: 200 ms at 500 B/s. Nothing is
        // charged, though the tenant's buckets had room.
        XCTAssertEqual(qp.admit(bytes: 200, now: 0), 200 * ms)
        XCTAssertFalse(qp.tenantWide, "the QP's own bucket held it: the tenant's other QPs may go")
        XCTAssertEqual(tenant.buckets.bytes?.tokens, 600)
        XCTAssertEqual(tenant.buckets.operations?.tokens, 1)
        XCTAssertEqual(qp.queuePair.bytes?.tokens, 100)
        XCTAssertEqual(qp.admit(bytes: 200, now: 100 * ms), 100 * ms, "retried early: the rest of the wait")
        XCTAssertEqual(qp.admit(bytes: 200, now: 200 * ms), 0)
        XCTAssertEqual(qp.queuePair.bytes?.tokens, 0)
        XCTAssertEqual(tenant.buckets.bytes?.tokens, 600) // 600 + 200 earned - 200
        XCTAssertEqual(tenant.buckets.operations?.tokens, 1) // 1 + 2 earned, capped at 2, - 1
        XCTAssertEqual(qp.counters, ShaperCounters(throttledRequests: 1, throttledNanoseconds: 200 * ms))
        XCTAssertEqual(tenant.counters, ShaperCounters(throttledRequests: 1, throttledNanoseconds: 200 * ms))

        // A second QP shares the tenant's buckets, not the first QP's.
        var qp2 = RateShaper(tenant: tenant, queuePair: limits().queuePair, now: 200 * ms)
        XCTAssertEqual(qp2.admit(bytes: 0, now: 200 * ms), 0, "charged 64 bytes and one operation")
        XCTAssertEqual(tenant.buckets.bytes?.tokens, 536)
        XCTAssertEqual(tenant.buckets.operations?.tokens, 0)
        XCTAssertEqual(qp2.queuePair.bytes?.tokens, 436)
        XCTAssertEqual(qp2.admit(bytes: 0, now: 200 * ms), 100 * ms, "the tenant's operations: 100 ms at 10/s")
        XCTAssertTrue(qp2.tenantWide, "the tenant's bucket held it: no QP of the tenant can go before")
        // Two buckets short: the wait is the longer one (64 bytes at 500 B/s).
        XCTAssertEqual(qp.admit(bytes: 0, now: 200 * ms), 128 * ms)
        XCTAssertFalse(qp.tenantWide, "the longer wait is the QP's own")
        XCTAssertEqual(qp.admit(bytes: 0, now: 328 * ms), 0)
        XCTAssertEqual(qp2.admit(bytes: 0, now: 328 * ms), 72 * ms, "qp took the operation due at 300 ms")
        XCTAssertEqual(qp2.admit(bytes: 0, now: 400 * ms), 0)
        XCTAssertEqual(qp.counters, ShaperCounters(throttledRequests: 2, throttledNanoseconds: 328 * ms))
        XCTAssertEqual(qp2.counters, ShaperCounters(throttledRequests: 1, throttledNanoseconds: 200 * ms))
        XCTAssertEqual(tenant.counters, ShaperCounters(throttledRequests: 3, throttledNanoseconds: 528 * ms))
    }

    func testTheMinimumRequestBytes() {
        var l = limits()
        let tenant = TenantRateLimiter(l, now: 0)
        let qp = RateShaper(tenant: tenant, queuePair: nil, now: 0)
        XCTAssertEqual(tenant.minimumRequestBytes, 64)
        XCTAssertEqual(qp.cost(bytes: 0), 64)
        XCTAssertEqual(qp.cost(bytes: 63), 64)
        XCTAssertEqual(qp.cost(bytes: 65), 65)
        l.minimumRequestBytes = 0
        tenant.reconfigure(l, now: 0)
        XCTAssertEqual(qp.cost(bytes: 0), 0)
        XCTAssertEqual(qp.cost(bytes: 1), 1)
    }

    func testWithoutLimitsEverythingIsAdmitted() {
        let tenant = TenantRateLimiter(RateLimits(), now: 0)
        var qp = RateShaper(tenant: tenant, queuePair: nil, now: 0)
        for _ in 0..<1000 { XCTAssertEqual(qp.admit(bytes: .max, now: 0), 0) }
        XCTAssertEqual(tenant.admitControlVerb(now: 0), 0)
        XCTAssertEqual(qp.counters, ShaperCounters())
        XCTAssertEqual(tenant.weight, 1)
    }

    func testAnAbandonedWaitIsCountedAndTheNextRequestStartsAfresh() {
        let tenant = TenantRateLimiter(RateLimits(tenant: RateLimit(operations: 1, burstOperations: 1)), now: 0)
        var qp = RateShaper(tenant: tenant, queuePair: nil, now: 0)
        XCTAssertEqual(qp.admit(bytes: 0, now: 0), 0)
        XCTAssertEqual(qp.admit(bytes: 0, now: 0), s)
        qp.abandonWait(now: 50 * ms)
        XCTAssertNil(qp.waitingSince)
        XCTAssertEqual(qp.counters, ShaperCounters(throttledRequests: 1, throttledNanoseconds: 50 * ms))
        XCTAssertEqual(qp.admit(bytes: 0, now: 60 * ms), 940 * ms)
        XCTAssertEqual(qp.admit(bytes: 0, now: s), 0)
        XCTAssertEqual(qp.counters, ShaperCounters(throttledRequests: 2, throttledNanoseconds: 990 * ms))
        XCTAssertEqual(tenant.counters, qp.counters)
    }

    func testReloadingTheTenantKeepsItsLevels() {
        let tenant = TenantRateLimiter(limits(), now: 0)
        var qp = RateShaper(tenant: tenant, queuePair: limits().queuePair, now: 0)
        XCTAssertEqual(qp.admit(bytes: 500, now: 0), 0)
        var l = limits()
        l.tenant = RateLimit(operations: 100)
        l.weight = 7
        l.minimumRequestBytes = 128
        l.controlVerbs = ControlVerbLimit(operations: 50)
        tenant.reconfigure(l, now: 0)
        qp.reconfigure(queuePair: RateLimit(bandwidth: 1000, burstBytes: 500), now: 0)
        XCTAssertNil(tenant.buckets.bytes)
        XCTAssertEqual(tenant.buckets.operations?.rate, 100)
        XCTAssertEqual(tenant.buckets.operations?.burst, 10)
        XCTAssertEqual(tenant.buckets.operations?.tokens, 1, "the operation bucket keeps its level")
        XCTAssertEqual(tenant.weight, 7)
        XCTAssertEqual(tenant.minimumRequestBytes, 128)
        XCTAssertEqual(tenant.controlVerbs, TokenBucket(rate: 50, burst: 5, now: 0))
        XCTAssertEqual(qp.queuePair.bytes?.tokens, 0, "the QP's bucket stays empty")
        XCTAssertEqual(qp.admit(bytes: 0, now: 0), 128 * ms, "128 bytes at the new 1000 B/s")
    }

    func testControlVerbs() {
        let tenant = TenantRateLimiter(RateLimits(controlVerbs: ControlVerbLimit(operations: 10, burstOperations: 2)), now: 0)
        XCTAssertEqual(tenant.admitControlVerb(now: 0), 0)
        XCTAssertEqual(tenant.admitControlVerb(now: 0), 0)
        XCTAssertEqual(tenant.admitControlVerb(now: 0), 100 * ms)
        XCTAssertEqual(tenant.admitControlVerb(now: 50 * ms, waitingSince: 0), 50 * ms)
        XCTAssertEqual(tenant.admitControlVerb(now: 100 * ms, waitingSince: 0), 0)
        XCTAssertEqual(tenant.controlVerbCounters, ShaperCounters(throttledRequests: 1, throttledNanoseconds: 100 * ms))
        XCTAssertEqual(tenant.counters, ShaperCounters(), "work-request counters are separate")
    }
}
