import XCTest
import SluiceBenchStats

/// The harness's statistics on inputs whose answers are known by hand.
final class StatsTests: XCTestCase {
    func testNearestRankOnOneToHundred() {
        let xs = Array(1...100)
        // Rank ⌈p·100⌉: p50 is the 50th value, p99 the 99th.
        XCTAssertEqual(Stats.nearestRank(sorted: xs, 0.50), 50)
        XCTAssertEqual(Stats.nearestRank(sorted: xs, 0.99), 99)
        XCTAssertEqual(Stats.nearestRank(sorted: xs, 1.0), 100)
        XCTAssertEqual(Stats.nearestRank(sorted: xs, 0.001), 1)
        XCTAssertEqual(Stats.nearestRank(sorted: xs, 0), 1, "rank 0 clamps to the smallest sample")
    }

    func testNearestRankSmallCounts() {
        XCTAssertNil(Stats.nearestRank(sorted: [Int](), 0.5))
        XCTAssertEqual(Stats.nearestRank(sorted: [7], 0.5), 7)
        XCTAssertEqual(Stats.nearestRank(sorted: [7], 0.99), 7)
        // Even count: p50 is the lower middle sample (rank 2 of 4), not an average.
        XCTAssertEqual(Stats.nearestRank(sorted: [10, 20, 30, 40], 0.5), 20)
        // Fewer than 100 samples: p99 is the largest.
        XCTAssertEqual(Stats.nearestRank(sorted: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.99), 10)
        // ⌈0.9·10⌉ = 9, exactly: no floating-point drift to rank 10.
        XCTAssertEqual(Stats.nearestRank(sorted: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), 9)
    }

    func testLatencySummaryFromUnsortedNanos() {
        // 1000 samples: 990 of 1 µs and 10 of 100 µs, shuffled.
        var ns = [UInt64](repeating: 1_000, count: 990) + [UInt64](repeating: 100_000, count: 10)
        ns.shuffle()
        let s = LatencySummary(nanos: ns)
        XCTAssertEqual(s.samples, 1000)
        XCTAssertEqual(s.p50, 1.0)
        XCTAssertEqual(s.p99, 1.0, "rank 990 is the last 1 µs sample")
        XCTAssertEqual(s.mean, 1.99, accuracy: 1e-12) // (990·1 + 10·100) / 1000

        let one = LatencySummary(nanos: ns + [100_000])
        XCTAssertEqual(one.p99, 100.0, "rank ⌈0.99·1001⌉ = 991 is a 100 µs sample")
    }

    func testMeanMedianRatio() {
        XCTAssertNil(Stats.mean([]))
        XCTAssertEqual(Stats.mean([1, 2, 3, 6]), 3)
        XCTAssertEqual(Stats.median([5, 1, 3]), 3)
        XCTAssertEqual(Stats.median([4, 1, 3, 2]), 2)
        XCTAssertEqual(Stats.ratio(3, 4), 0.75)
        XCTAssertNil(Stats.ratio(1, 0))
        XCTAssertNil(Stats.ratio(.infinity, 1))
        XCTAssertEqual(Stats.perSecond(500, nanos: 250_000_000), 2000)
        XCTAssertEqual(Stats.perSecond(1, nanos: 0), 1e9, "0 ns counts as 1 ns")
    }

    func testPercentError() {
        XCTAssertEqual(Stats.percentError(measured: 103, configured: 100)!, 3, accuracy: 1e-12)
        XCTAssertEqual(Stats.percentError(measured: 0.97e9, configured: 1e9)!, -3, accuracy: 1e-9)
        XCTAssertEqual(Stats.percentError(measured: 100, configured: 100), 0)
        XCTAssertNil(Stats.percentError(measured: 5, configured: 0))
    }

    func testJainIndex() {
        XCTAssertEqual(Stats.jainIndex([5, 5, 5]), 1)
        // One of n gets everything: 1/n.
        XCTAssertEqual(Stats.jainIndex([9, 0, 0])!, 1.0 / 3, accuracy: 1e-15)
        // (1+2+3)² / (3·(1+4+9)) = 36/42.
        XCTAssertEqual(Stats.jainIndex([1, 2, 3])!, 36.0 / 42, accuracy: 1e-15)
        // Scale-free.
        XCTAssertEqual(Stats.jainIndex([1e6, 2e6, 3e6])!, 36.0 / 42, accuracy: 1e-15)
        // (10+10+8)² / (3·264) = 784/792 ≈ 0.9899.
        XCTAssertEqual(Stats.jainIndex([10, 10, 8])!, 784.0 / 792, accuracy: 1e-15)
        XCTAssertNil(Stats.jainIndex([]))
        XCTAssertNil(Stats.jainIndex([0, 0]))
    }
}
