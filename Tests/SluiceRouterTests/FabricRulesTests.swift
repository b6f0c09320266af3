import XCTest
import SluiceWire
@testable import SluiceRouter

final class FabricRulesTests: XCTestCase {
    func testHandleTablesAreIndependentPerSession() {
        var a = HandleTable<ProtectionDomain>()
        var b = HandleTable<ProtectionDomain>()
        let pd = ProtectionDomain()
        let h = a.insert(pd)
        XCTAssertTrue(a.lookup(h) === pd)
        XCTAssertNil(b.lookup(h), "a handle of session A names nothing in session B")
        XCTAssertNil(a.lookup(0), "0 is never a handle")
        XCTAssertNil(a.lookup(UInt32.max))
        _ = b.insert(ProtectionDomain())
        a.remove(h)
        XCTAssertNil(a.lookup(h), "a removed handle is dead")
        XCTAssertEqual(a.count, 0)
    }

    func testMemoryRegionBoundsAreOverflowSafe() throws {
        let fd = try Sys.memfdCreate("test", size: 8192)
        defer { close(fd) }
        let mapping = try SharedMapping(fd: fd, length: 8192)
        let mr = MemoryRegion(pd: ProtectionDomain(), addr: 0x1000_0010, length: 100, iova: 0x5000, access: 1,
                              mapping: mapping, pageOffset: 0x10)
        XCTAssertNotNil(mr.local(0x1000_0010, 100))
        XCTAssertNotNil(mr.local(0x1000_0010 + 99, 1))
        XCTAssertNil(mr.local(0x1000_0010 + 99, 2), "one byte past the end")
        XCTAssertNil(mr.local(0x1000_000f, 1), "one byte before the start")
        XCTAssertNil(mr.local(UInt64.max, 2), "wrapping address")
        XCTAssertNil(mr.local(0x1000_0010, UInt64.max))
        XCTAssertEqual(mr.remote(0x5000, 100), mr.base)
        XCTAssertNil(mr.remote(0x5000 + 1, 100))
        XCTAssertNil(mr.remote(0x4fff, 1))
        mr.dead = true
        XCTAssertNil(mr.local(0x1000_0010, 1), "a deregistered region resolves nothing")
        XCTAssertNil(mr.remote(0x5000, 1))
    }

    func testRNRTimerEncoding() {
        XCTAssertEqual(SoftwareFabric.rnrDelayNanos(0), 655_360_000)
        XCTAssertEqual(SoftwareFabric.rnrDelayNanos(1), 10_000)
        XCTAssertEqual(SoftwareFabric.rnrDelayNanos(12), 640_000)
        XCTAssertEqual(SoftwareFabric.rnrDelayNanos(31), 491_520_000)
    }

    func testRingCapacityIsAPowerOfTwoCoveringTheRequest() {
        XCTAssertEqual(Router.ringCapacity(1), 1)
        XCTAssertEqual(Router.ringCapacity(2), 2)
        XCTAssertEqual(Router.ringCapacity(3), 4)
        XCTAssertEqual(Router.ringCapacity(501), 512)
    }
}

