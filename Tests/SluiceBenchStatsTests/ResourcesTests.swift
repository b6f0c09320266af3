import XCTest
import SluiceBenchStats

/// /proc parsing, CPU share, memory per object, CSV quoting, target checks
/// and the plot's log axis, on inputs whose answers are known by hand.
final class ResourcesTests: XCTestCase {
    func testCPUTicksFromStat() {
        // A command name with a space and a ')' in it: fields count from the last ')'.
        let stat = "1234 (sluice (x) r) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 2 0 100 1000000 300 18446744073709551615"
        XCTAssertEqual(ProcFields.cpuTicks(stat: stat), 325)
        XCTAssertNil(ProcFields.cpuTicks(stat: "1234 (short) S 1 2"))
        XCTAssertNil(ProcFields.cpuTicks(stat: "no parenthesis"))
    }

    func testSchedstat() {
        XCTAssertEqual(ProcFields.schedstatNanos("2429690 110304 2\n"), 2_429_690)
        XCTAssertNil(ProcFields.schedstatNanos(""))
    }

    func testKilobyteLines() {
        let status = "Name:\tsluice-router\nVmPeak:\t  123456 kB\nVmRSS:\t   20480 kB\nRssAnon:\t    4096 kB\n"
        XCTAssertEqual(ProcFields.kilobytes("VmRSS", in: status), 20480)
        XCTAssertEqual(ProcFields.kilobytes("RssAnon", in: status), 4096)
        XCTAssertNil(ProcFields.kilobytes("VmSwap", in: status))
        XCTAssertNil(ProcFields.kilobytes("Name", in: status), "not a number")
        let rollup = "55a0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:               10240 kB\nPss:                6000 kB\n"
        XCTAssertEqual(ProcFields.kilobytes("Pss", in: rollup), 6000)
        XCTAssertEqual(ProcFields.kilobytes("Rss", in: rollup), 10240, "Rss, not a prefix match on another line")
    }

    func testCPUPercentAndTicks() {
        XCTAssertEqual(Stats.cpuPercent(cpuNanos: 10_000_000, wallNanos: 2_000_000_000), 0.5)
        XCTAssertEqual(Stats.cpuPercent(cpuNanos: 3_000_000_000, wallNanos: 1_500_000_000), 200)
        XCTAssertNil(Stats.cpuPercent(cpuNanos: 1, wallNanos: 0))
        XCTAssertEqual(Stats.ticksToNanos(325, ticksPerSecond: 100), 3_250_000_000)
    }

    func testBytesPerObject() {
        // 1000 objects took 2000 KiB: 2048 bytes each.
        XCTAssertEqual(Stats.bytesPerObject(beforeKiB: 10_000, afterKiB: 12_000, count: 1000), 2048)
        XCTAssertEqual(Stats.bytesPerObject(beforeKiB: 12_000, afterKiB: 11_000, count: 512), -2000)
        XCTAssertNil(Stats.bytesPerObject(beforeKiB: 1, afterKiB: 2, count: 0))
        // 9,990 more objects grew it 40,000 KiB more than the base did.
        XCTAssertEqual(Stats.bytesPerObject(growthKiB: 40_000 - 40, count: 9_990)!, 4096, accuracy: 1e-9)
        XCTAssertNil(Stats.bytesPerObject(growthKiB: .nan, count: 3))
    }

    func testCSVQuoting() {
        XCTAssertEqual(CSVText.field("plain"), "plain")
        XCTAssertEqual(CSVText.field("a,b"), "\"a,b\"")
        XCTAssertEqual(CSVText.field("say \"hi\""), "\"say \"\"hi\"\"\"")
        XCTAssertEqual(CSVText.field("two\nlines"), "\"two\nlines\"")
        XCTAssertEqual(CSVText.row(["m", "x,y", "8"]), "m,\"x,y\",8\n")
    }

    func testTargetChecks() {
        XCTAssertEqual(TargetCheck(0.85, .atLeast(0.8)).met, true)
        XCTAssertEqual(TargetCheck(0.8, .atLeast(0.8)).met, true, "the bound itself meets it")
        XCTAssertEqual(TargetCheck(0.4, .atLeast(0.8)).met, false)
        XCTAssertEqual(TargetCheck(0.4, .atLeast(0.8)).shortfall, 2)
        XCTAssertEqual(TargetCheck(0.05, .atMost(0.1)).met, true)
        XCTAssertEqual(TargetCheck(0.5, .atMost(0.1)).met, false)
        XCTAssertEqual(TargetCheck(0.5, .atMost(0.1)).shortfall!, 5, accuracy: 1e-12)
        XCTAssertNil(TargetCheck(nil, .atMost(1)).met)
        XCTAssertNil(TargetCheck(.nan, .atMost(1)).met)
        XCTAssertNil(TargetCheck(0, .atLeast(2)).shortfall)
    }

    func testLogAxis() {
        let a = LogAxis(covering: [8, 4_194_304])
        XCTAssertEqual(a.low, 1)
        XCTAssertEqual(a.high, 10_000_000)
        XCTAssertEqual(a.decades.count, 8)
        XCTAssertEqual(a.fraction(1), 0)
        XCTAssertEqual(a.fraction(10_000_000), 1, accuracy: 1e-12)
        XCTAssertEqual(a.fraction(1000), 3.0 / 7, accuracy: 1e-12)
        // A range inside one decade still spans one.
        let b = LogAxis(covering: [2, 3])
        XCTAssertEqual(b.low, 1)
        XCTAssertEqual(b.high, 10)
        // Exactly a power of ten at the top stays there; a value at a decade bottom widens down.
        let c = LogAxis(covering: [0.5, 100, 0, -3])
        XCTAssertEqual(c.low, 0.1, accuracy: 1e-15)
        XCTAssertEqual(c.high, 100)
        let d = LogAxis(covering: [])
        XCTAssertEqual(d.low, 1)
        XCTAssertEqual(d.high, 10)
    }
}
