import XCTest
@testable import SluicePolicy

final class UnitsTests: XCTestCase {
    func testSizes() {
        let good: [(String, UInt64)] = [
            ("0", 0), ("4096", 4096), ("4Ki", 4096), ("256Mi", 256 << 20), ("4Gi", 4 << 30), ("1Ti", 1 << 40),
            ("1Pi", 1 << 50), ("15Ei", 15 << 60), ("4K", 4000), ("4k", 4000), ("4M", 4_000_000), ("4G", 4_000_000_000),
            ("2T", 2_000_000_000_000), ("18446744073709551615", .max), ("18E", 18_000_000_000_000_000_000),
        ]
        for (text, value) in good {
            XCTAssertEqual(try Units.parseSize(text).get(), value, text)
        }
        for bad in ["", "Gi", "4 Gi", "4GiB", "4GB", "4B", "4ki", "4KI", "1.5Gi", "-1", "+4", "0x10", "4Gi ", " 4", "4g", "٤"] {
            XCTAssertEqual(Units.parseSize(bad), .failure(.malformed), bad)
        }
    }

    func testSizesOverflowInsteadOfWrapping() {
        XCTAssertEqual(Units.parseSize("18446744073709551616"), .failure(.tooLarge))
        XCTAssertEqual(Units.parseSize("16Ei"), .failure(.tooLarge))
        XCTAssertEqual(Units.parseSize("19E"), .failure(.tooLarge))
        XCTAssertEqual(Units.parseSize("17179869184Gi"), .failure(.tooLarge))
        XCTAssertEqual(Units.parseSize("17179869183Gi"), .success(UInt64.max - (1 << 30) + 1))
        XCTAssertEqual(Units.parseSize(String(repeating: "9", count: 400)), .failure(.tooLarge))
    }

    func testBandwidths() {
        let good: [(String, UInt64)] = [
            ("10Gbit/s", 1_250_000_000), ("100Mbit/s", 12_500_000), ("8bit/s", 1), ("1Kibit/s", 128),
            ("1GB/s", 1_000_000_000), ("512MiB/s", 512 << 20), ("1B/s", 1), ("2TB/s", 2_000_000_000_000),
            ("1kB/s", 1000), ("0B/s", 0),
        ]
        for (text, value) in good {
            XCTAssertEqual(try Units.parseBandwidth(text).get(), value, text)
        }
        for bad in ["10Gbps", "10Gb/s", "10G", "10", "1Pbit/s", "1EB/s", "1GiB", "GB/s", "10 Gbit/s", "1.5GB/s", "1gbit/s"] {
            XCTAssertEqual(Units.parseBandwidth(bad), .failure(.malformed), bad)
        }
        XCTAssertEqual(Units.parseBandwidth("1001bit/s"), .failure(.fractionalBytes))
        XCTAssertEqual(Units.parseBandwidth("99999999999Tbit/s"), .failure(.tooLarge))
        XCTAssertEqual(Units.parseBandwidth("18446744073709551615B/s"), .success(.max))
        // In bits the limit is the bit count, 8 times smaller in bytes.
        XCTAssertEqual(Units.parseBandwidth("18446744073709551615bit/s"), .failure(.fractionalBytes))
        XCTAssertEqual(Units.parseBandwidth("18446744073709551616bit/s"), .failure(.tooLarge))
    }

    func testOperationRates() {
        let good: [(String, UInt64)] = [("2M/s", 2_000_000), ("500K/s", 500_000), ("500k/s", 500_000), ("1000/s", 1000),
                                        ("3G/s", 3_000_000_000), ("0/s", 0)]
        for (text, value) in good {
            XCTAssertEqual(try Units.parseOperationRate(text).get(), value, text)
        }
        for bad in ["2M", "2Mi/s", "2T/s", "/s", "2 M/s", "2M/sec", "2m/s", "1.5K/s", "-1/s"] {
            XCTAssertEqual(Units.parseOperationRate(bad), .failure(.malformed), bad)
        }
        XCTAssertEqual(Units.parseOperationRate("18446744073709552G/s"), .failure(.tooLarge))
    }

    func testSizesForPeople() {
        XCTAssertEqual(Units.formatSize(0), "0 bytes")
        XCTAssertEqual(Units.formatSize(1), "1 byte")
        XCTAssertEqual(Units.formatSize(1500), "1500 bytes")
        XCTAssertEqual(Units.formatSize(1024), "1 KiB")
        XCTAssertEqual(Units.formatSize(1536 << 20), "1536 MiB")
        XCTAssertEqual(Units.formatSize(1 << 30), "1 GiB")
        XCTAssertEqual(Units.formatSize(4_000_000_000), "4 GB")
        XCTAssertEqual(Units.formatSize(2000), "2 kB")
        XCTAssertEqual(Units.formatSize(.max), "18446744073709551615 bytes")
    }

    func testAddressPools() throws {
        let pool = try IPv4Pool.parse("10.77.1.0/24").get()
        XCTAssertEqual(pool.network, 0x0a4d_0100)
        XCTAssertEqual(pool.prefixLength, 24)
        XCTAssertEqual(pool.mask, 0xffff_ff00)
        XCTAssertEqual(pool.usableAddresses, 0x0a4d_0101...0x0a4d_01fe)
        XCTAssertTrue(pool.contains(0x0a4d_01ff))
        XCTAssertFalse(pool.contains(0x0a4d_0200))
        XCTAssertTrue(pool.overlaps(try IPv4Pool.parse("10.77.0.0/16").get()))
        XCTAssertTrue(try IPv4Pool.parse("10.77.0.0/16").get().overlaps(pool))
        XCTAssertFalse(pool.overlaps(try IPv4Pool.parse("10.77.2.0/24").get()))
        XCTAssertEqual(try IPv4Pool.parse("10.0.0.0/8").get().description, "10.0.0.0/8")
        XCTAssertEqual(try IPv4Pool.parse("192.168.0.0/30").get().usableAddresses.count, 2)
        XCTAssertEqual(IPv4Pool.parse("10.77.1.1/24"), .failure(.hostBitsSet(network: try IPv4Pool.parse("10.77.1.0/24").get())))
        for bad in ["10.77.1.0", "10.77.1/24", "10.77.1.0/", "/24", "10.77.1.0/024", "10.77.1.0/24/1", "10..1.0/24", "1.2.3.4.5/24",
                    "256.0.0.0/8", "10.77.01.0/24", " 10.77.1.0/24"] {
            XCTAssertEqual(IPv4Pool.parse(bad), .failure(.malformed), bad)
        }
        XCTAssertEqual(IPv4Pool.parse("10.77.1.0/31"), .failure(.prefixOutOfRange))
        XCTAssertEqual(IPv4Pool.parse("0.0.0.0/0"), .failure(.prefixOutOfRange))
    }
}
