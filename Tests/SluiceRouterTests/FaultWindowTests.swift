import XCTest
@testable import SluiceRouter

/// The key-guessing detector's sliding window, on an injected clock.
final class FaultWindowTests: XCTestCase {
    let second: UInt64 = 1_000_000_000

    func testTripsAtTheThresholdWithinTheWindow() {
        var w = FaultWindow()
        XCTAssertFalse(w.record(1 * second, window: 10 * second, max: 3))
        XCTAssertFalse(w.record(2 * second, window: 10 * second, max: 3))
        XCTAssertTrue(w.record(3 * second, window: 10 * second, max: 3))
        XCTAssertEqual(w.count, 0, "tripping starts the window afresh")
        XCTAssertFalse(w.record(4 * second, window: 10 * second, max: 3))
    }

    func testFaultsOlderThanTheWindowDoNotCount() {
        var w = FaultWindow()
        XCTAssertFalse(w.record(0, window: 10 * second, max: 3))
        XCTAssertFalse(w.record(5 * second, window: 10 * second, max: 3))
        // The first fault is exactly one window old: out.
        XCTAssertFalse(w.record(10 * second, window: 10 * second, max: 3))
        XCTAssertEqual(w.count, 2)
        // One nanosecond inside the window: in.
        XCTAssertTrue(w.record(15 * second - 1, window: 10 * second, max: 3))
    }

    func testAThresholdOfOneTripsAtOnce() {
        var w = FaultWindow()
        XCTAssertTrue(w.record(7, window: second, max: 1))
    }

    func testAClockThatGoesBackwardsDropsTheFutureFaults() {
        var w = FaultWindow()
        XCTAssertFalse(w.record(100 * second, window: 10 * second, max: 3))
        XCTAssertFalse(w.record(50 * second, window: 10 * second, max: 3))
        XCTAssertEqual(w.count, 1, "a fault stamped after now is discarded, not counted forever")
    }

    func testMemoryStaysBoundedUnderASlowSteadyTrickle() {
        var w = FaultWindow()
        for i in 0..<100_000 {
            // One fault per second against a 10-per-10-seconds threshold minus one.
            XCTAssertFalse(w.record(UInt64(i) * second, window: 10 * second, max: 11))
        }
        XCTAssertEqual(w.count, 10)
    }
}
