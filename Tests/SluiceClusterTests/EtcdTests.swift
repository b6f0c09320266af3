import Foundation
import SluicePolicy
import XCTest
@testable import SluiceCluster

/// Against a real etcd (Debian's etcd-server) on loopback.
final class EtcdTests: XCTestCase {
    func wait(_ seconds: Double = 10, _ what: String, until done: () -> Bool) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if done() { return }
            usleep(20_000)
        }
        XCTFail("timed out waiting: \(what)")
    }

    func entry(_ name: String, _ port: UInt16, lids: ClosedRange<UInt16>, pool: String) -> RouterEntry {
        RouterEntry(address: RouterAddress(name: name, host: "127.0.0.1", port: port), lids: [lids], addresses: [try! IPv4Pool.parse(pool).get()])
    }

    func testTheClientPutsRangesDeletesAndWatchesWithBase64KeysAndValues() throws {
        let etcd = try EtcdServer()
        let c = try EtcdClient(endpoint: etcd.endpoint)
        let binary: [UInt8] = [0, 1, 2, 255, 10, 13]
        let r1 = try c.put("/t/a", binary)
        try c.put("/t/b", Array("two".utf8))
        try c.put("/u/c", Array("other prefix".utf8))
        let (kvs, rev) = try c.range("/t/", prefix: true)
        XCTAssertEqual(kvs.map(\.key), ["/t/a", "/t/b"])
        XCTAssertEqual(kvs[0].value, binary)
        XCTAssertGreaterThan(rev, r1)
        XCTAssertEqual(try c.range("/t/a").kvs.count, 1)
        XCTAssertEqual(try c.range("/nothing").kvs, [])

        let w = try c.watch("/t/", prefix: true, startRevision: rev + 1)
        try c.put("/t/c", Array("three".utf8))
        try c.put("/u/d", Array("not watched".utf8))
        try c.delete("/t/a")
        var events: [EtcdClient.WatchEvent] = []
        wait(5, "two watch events") {
            events += (try? w.next()) ?? []
            return events.count >= 2
        }
        XCTAssertEqual(events.map(\.kind), [.put, .delete])
        XCTAssertEqual(events.map(\.kv.key), ["/t/c", "/t/a"])
        XCTAssertEqual(events.first?.kv.value, Array("three".utf8))
    }

    func testAKeyUnderALeaseVanishesWhenTheLeaseIsNotKeptAlive() throws {
        let etcd = try EtcdServer()
        let c = try EtcdClient(endpoint: etcd.endpoint)
        let kept = try c.grantLease(ttl: 2), dropped = try c.grantLease(ttl: 2)
        try c.put("/l/kept", [1], lease: kept.id)
        try c.put("/l/dropped", [2], lease: dropped.id)
        let end = Date().addingTimeInterval(3.5)
        while Date() < end {
            XCTAssertGreaterThan(try c.keepAlive(lease: kept.id), 0)
            usleep(500_000)
        }
        XCTAssertEqual(try c.range("/l/", prefix: true).kvs.map(\.key), ["/l/kept"])
        XCTAssertEqual(try c.keepAlive(lease: dropped.id), 0, "an expired lease reports TTL 0")
    }

    func testAnUnreachableEtcdIsAnErrorNotAHang() throws {
        let port = EtcdServer.freePort("127.0.0.1")
        let c = try EtcdClient(endpoint: "127.0.0.1:\(port)")
        let t0 = Date()
        XCTAssertThrowsError(try c.range("/x")) { XCTAssert("\($0)".contains("refused"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3)
        XCTAssertThrowsError(try EtcdClient(endpoint: "etcd.example:2379"), "names are not resolved")
    }

    func testRoutersRegisterUnderLeasesSeeEachOtherAndLeaveWhenTheyStop() throws {
        let etcd = try EtcdServer()
        let a = try EtcdDirectory(.init(endpoint: etcd.endpoint, register: entry("host-a", 7001, lids: 1...100, pool: "10.77.0.0/24")))
        let b = try EtcdDirectory(.init(endpoint: etcd.endpoint, register: entry("host-b", 7002, lids: 101...200, pool: "10.77.1.0/24")))
        a.start()
        b.start()
        wait(10, "both routers in both directories") { a.routers.count == 2 && b.routers.count == 2 }
        XCTAssertEqual(a.router(forLID: 150)?.name, "host-b")
        XCTAssertEqual(b.router(forIPv4: 0x0a4d_0005)?.address, RouterAddress(name: "host-a", host: "127.0.0.1", port: 7001))
        // The entry is bound to a lease: stopping revokes it, and a leaves b's view.
        a.stop()
        wait(10, "a gone from b's directory") { b.routers.map(\.name) == ["host-b"] }
        b.stop()
        let c = try EtcdClient(endpoint: etcd.endpoint)
        XCTAssertEqual(try c.range("/sluice/routers/", prefix: true).kvs, [])
    }

    func testACrashedRouterDropsOutWhenItsLeaseExpires() throws {
        let etcd = try EtcdServer()
        let c = try EtcdClient(endpoint: etcd.endpoint)
        let lease = try c.grantLease(ttl: 2)
        try c.put("/sluice/routers/ghost", EtcdDirectory.routerJSON(entry("ghost", 7009, lids: 900...901, pool: "10.77.9.0/24")), lease: lease.id)
        let w = try EtcdDirectory(.init(endpoint: etcd.endpoint, register: nil))
        w.start()
        defer { w.stop() }
        wait(5, "the ghost listed") { w.routers.map(\.name) == ["ghost"] }
        // Nobody keeps the lease alive: within its TTL (plus etcd's checking) it goes.
        wait(8, "the ghost gone") { w.routers.isEmpty }
    }

    func testAPolicyWrittenToEtcdReachesEveryRouter() throws {
        let etcd = try EtcdServer()
        var dirs: [EtcdDirectory] = []
        for i in 0..<3 {
            let low = UInt16(1 + 10 * i), high = UInt16(10 + 10 * i)
            let me = entry("r\(i)", UInt16(7100 + i), lids: low...high, pool: "10.77.\(i).0/24")
            dirs.append(try EtcdDirectory(.init(endpoint: etcd.endpoint, register: me)))
        }
        dirs.forEach { $0.start() }
        defer { dirs.forEach { $0.stop() } }
        wait(10, "all synced") { dirs.allSatisfy { $0.hasSynced && $0.routers.count == 3 } }
        for d in dirs { d.drainNotifications() }
        let text = "apiVersion: sluice/v1\nkind: TenantPolicy\nmetadata:\n  name: alpha\nspec:\n  identity:\n    uids: [0]\n"
        try EtcdClient(endpoint: etcd.endpoint).put("/sluice/policies/alpha.yaml", Array(text.utf8))
        wait(10, "the policy everywhere") { dirs.allSatisfy { $0.policies["alpha.yaml"] == text } }
        // And the loop is told: the notification pipe is readable.
        for d in dirs {
            var b: UInt8 = 0
            XCTAssertEqual(read(d.notifyFD, &b, 1), 1)
        }
        try EtcdClient(endpoint: etcd.endpoint).delete("/sluice/policies/alpha.yaml")
        wait(10, "the deletion everywhere") { dirs.allSatisfy { $0.policies.isEmpty } }
    }

    func testAnEtcdRestartLosesNoRegistration() throws {
        let etcd = try EtcdServer()
        let a = try EtcdDirectory(.init(endpoint: etcd.endpoint, register: entry("host-a", 7201, lids: 1...10, pool: "10.77.20.0/24")))
        let b = try EtcdDirectory(.init(endpoint: etcd.endpoint, register: entry("host-b", 7202, lids: 11...20, pool: "10.77.21.0/24")))
        a.start()
        b.start()
        defer { a.stop(); b.stop() }
        wait(10, "registered") { a.routers.count == 2 && b.routers.count == 2 }
        // A crash and restart with its data: leases survive, nothing re-registers.
        etcd.kill9()
        usleep(1_500_000)
        try etcd.start()
        wait(15, "both still registered after a restart") {
            (try? EtcdClient(endpoint: etcd.endpoint).range("/sluice/routers/", prefix: true).kvs.count) == 2
                && a.routers.count == 2 && b.routers.count == 2
        }
        // A restart that lost its data: both routers register again by themselves.
        etcd.kill9()
        try etcd.start(wipe: true)
        wait(20, "both registered again after a restart without data") {
            (try? EtcdClient(endpoint: etcd.endpoint).range("/sluice/routers/", prefix: true).kvs.count) == 2
        }
        XCTAssertGreaterThanOrEqual(a.status()["registrations"] as? Int ?? 0, 2)
    }

    /// An etcd that lost its data lists no router until each registers
    /// again. A router absent from the read that follows is kept listed
    /// ("unconfirmed") for the grace period, so QPs connected to it do not
    /// fail; one that does not come back by then leaves.
    func testARouterAbsentAfterEtcdLostItsDataStaysListedUntilTheGraceEnds() throws {
        let etcd = try EtcdServer()
        let c = try EtcdClient(endpoint: etcd.endpoint)
        let back = entry("ghost-back", 7301, lids: 50...59, pool: "10.77.30.0/24")
        let gone = entry("ghost-gone", 7302, lids: 60...69, pool: "10.77.31.0/24")
        for e in [back, gone] {
            try c.put("/sluice/routers/" + e.name, EtcdDirectory.routerJSON(e), lease: try c.grantLease(ttl: 60).id)
        }
        var config = EtcdDirectory.Configuration(endpoint: etcd.endpoint, register: entry("host-w", 7303, lids: 70...79, pool: "10.77.32.0/24"))
        // Long enough for the steps below on a loaded machine (the
        // default would be the lease TTL plus a second).
        config.resyncGrace = 10
        let w = try EtcdDirectory(config)
        w.start()
        defer { w.stop() }
        wait(10, "all three listed") { w.routers.map(\.name) == ["ghost-back", "ghost-gone", "host-w"] }
        var lostBack = false
        func names() -> [String] {
            let n = w.routers.map(\.name)
            if !n.contains("ghost-back") { lostBack = true }
            return n
        }
        func unconfirmed() -> [String] { w.status()["unconfirmed"] as? [String] ?? [] }
        etcd.kill9()
        try etcd.start(wipe: true)
        wait(10, "both ghosts unconfirmed after the read of the empty etcd") {
            _ = names()
            return unconfirmed() == ["ghost-back", "ghost-gone"]
        }
        XCTAssertEqual(names(), ["ghost-back", "ghost-gone", "host-w"], "absent routers stay listed during the grace")
        let c2 = try EtcdClient(endpoint: etcd.endpoint)
        try c2.put("/sluice/routers/" + back.name, EtcdDirectory.routerJSON(back), lease: try c2.grantLease(ttl: 60).id)
        wait(30, "ghost-back confirmed, ghost-gone dropped when its grace ended") {
            names() == ["ghost-back", "host-w"] && unconfirmed().isEmpty
        }
        XCTAssertFalse(lostBack, "ghost-back left the directory while it registered again")
        // A router seen leaving on the watch leaves at once, grace or not.
        try c2.delete("/sluice/routers/" + back.name)
        wait(3, "a deleted router leaves at once") { w.routers.map(\.name) == ["host-w"] }
    }
}
