import XCTest
@testable import SluiceRouter

/// The scheduler's credit is charged in the router's time; these pin down
/// the arithmetic with explicit counter values (no real clock).
final class LaneCreditTests: XCTestCase {
    func testARefillGivesOneQuantumAndUnusedCreditIsBankedUpToTheBank() {
        var c = LaneCredit()
        XCTAssertTrue(c.exhausted)
        c.refill(quantum: 100, bank: 800)
        XCTAssertEqual(c.deficit, 100)
        c.refill(quantum: 100, bank: 800)
        XCTAssertEqual(c.deficit, 200, "unused credit is kept")
        for _ in 0..<20 { c.refill(quantum: 100, bank: 800) }
        XCTAssertEqual(c.deficit, 800, "an idle lane saves up no more than the bank")
        var none = LaneCredit()
        none.refill(quantum: 100)
        none.refill(quantum: 100)
        XCTAssertEqual(none.deficit, 100, "without a bank, unused credit is not kept")
    }

    func testAHeavyLaneBanksNoMoreThanOneQuantum() {
        // The bank is absolute time: a lane of high weight, whose quantum
        // alone is above it, saves up nothing more than one quantum.
        var c = LaneCredit()
        for _ in 0..<5 { c.refill(quantum: 5_000, bank: 800) }
        XCTAssertEqual(c.deficit, 5_000)
    }

    func testABankedLaneIsServedForTwoRequestsInARowThenWaits() {
        // A ping-pong's two hops cost 70 each against a quantum of 100:
        // with credit banked over idle passes, both run without a pass
        // between them; a lane that used its credit up waits.
        var c = LaneCredit()
        for _ in 0..<3 { c.refill(quantum: 100, bank: 800) }
        c.start(0)
        c.charge(70, cap: 1_000)
        XCTAssertFalse(c.exhausted)
        c.charge(140, cap: 1_000)
        XCTAssertFalse(c.exhausted, "300 banked pays for both")
        c.charge(360, cap: 1_000)
        XCTAssertTrue(c.exhausted)
        XCTAssertEqual(c.deficit, -60)
    }

    func testEachChargeTakesTheTimeSinceThePreviousOne() {
        var c = LaneCredit()
        c.refill(quantum: 100)
        c.start(1_000)
        XCTAssertEqual(c.charge(1_030, cap: 1_000), 30)
        XCTAssertEqual(c.charge(1_100, cap: 1_000), 70)
        XCTAssertEqual(c.deficit, 0)
        XCTAssertTrue(c.exhausted)
        XCTAssertEqual(c.charged, 100)
        XCTAssertEqual(c.mark, 1_100)
    }

    func testDebtIsRepaidByLaterQuantaBeforeTheLaneIsServedAgain() {
        var c = LaneCredit()
        c.refill(quantum: 100)
        c.start(0)
        c.charge(350, cap: 1_000) // one long request
        XCTAssertEqual(c.deficit, -250)
        var passes = 0
        repeat {
            c.refill(quantum: 100)
            passes += 1
        } while c.exhausted
        XCTAssertEqual(passes, 3, "-250 needs three quanta of 100 to be positive again")
        XCTAssertEqual(c.deficit, 50)
    }

    func testAChargeIsCappedAndACounterGoingBackwardsChargesNothing() {
        var c = LaneCredit()
        c.refill(quantum: 100)
        c.start(1_000)
        XCTAssertEqual(c.charge(1_000_000, cap: 500), 500, "a preempted router charges at most the cap")
        XCTAssertEqual(c.deficit, -400)
        XCTAssertEqual(c.charge(10, cap: 500), 0)
        XCTAssertEqual(c.mark, 10, "the mark follows the counter, so the next charge is from here")
        XCTAssertEqual(c.charge(40, cap: 500), 30)
        XCTAssertEqual(c.charge(50, cap: -5), 0, "a negative cap charges nothing")
    }

    func testExtremesSaturate() {
        var c = LaneCredit()
        c.refill(quantum: .max)
        XCTAssertEqual(c.deficit, .max)
        c.refill(quantum: .max)
        XCTAssertEqual(c.deficit, .max)
        c.start(0)
        c.charge(.max, cap: .max)
        c.charge(0, cap: .max)
        c.start(0)
        c.charge(.max, cap: .max)
        c.start(0)
        c.charge(.max, cap: .max)
        XCTAssertEqual(c.deficit, .min, "debt saturates instead of wrapping to credit")
        XCTAssertTrue(c.exhausted)
    }

    func testTheClockConvertsBothWaysAndSaturates() {
        let clock = CycleClock(perMicrosecond: 3_000) // a 3 GHz counter
        XCTAssertEqual(clock.ticks(nanos: 2_000), 6_000)
        XCTAssertEqual(clock.nanos(ticks: 6_000), 2_000)
        XCTAssertEqual(clock.nanos(ticks: 2_999), 999)
        XCTAssertEqual(clock.ticks(nanos: .max), .max)
        XCTAssertEqual(CycleClock(perMicrosecond: 1).nanos(ticks: .max), .max)
    }

    func testCalibrationMeasuresACounterThatAdvances() {
        let clock = CycleClock.calibrate(nanos: 1_000_000)
        XCTAssertGreaterThanOrEqual(clock.perMicrosecond, 1)
        let t0 = CycleClock.now()
        let n0 = Sys.monotonicNanos()
        while Sys.monotonicNanos() - n0 < 1_000_000 {}
        let elapsed = clock.nanos(ticks: CycleClock.now() - t0)
        // Not a timing assertion: only that the units are nanoseconds and
        // not, say, ticks (a factor of a thousand off either way).
        XCTAssertGreaterThan(elapsed, 100_000)
        XCTAssertLessThan(elapsed, 100_000_000)
    }
}
