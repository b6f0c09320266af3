import Foundation
import XCTest
import SluiceVerbs
import SluiceRouter

/// Token buckets on the data path and on control verbs, against a real
/// router: shaped work waits and completes in order, nothing is dropped,
/// and shaping shows in status and the audit log. (No timing is asserted:
/// the figures are `make bench`'s.)
final class ShapingTests: XCTestCase {
    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    func limited(_ rateLimits: String) -> String {
        RouterProcess.permissive("alpha", extra: "  rateLimits:\n" + rateLimits)
    }

    func shaping(_ router: RouterProcess) throws -> [String: Any] {
        try XCTUnwrap((try router.status()["shaping"] as? [String: Any])?["alpha"] as? [String: Any])
    }

    /// A connected pair and two registered buffers.
    func setUp(_ router: RouterProcess, sendDepth: UInt32 = 64)
        throws -> (VerbsEndpoint, VerbsEndpoint, UnsafeMutablePointer<ibv_qp>, TestBuffer, TestBuffer,
                   UnsafeMutablePointer<ibv_mr>, UnsafeMutablePointer<ibv_mr>) {
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        let qa = try a.createQP(sendDepth: sendDepth), qb = try b.createQP()
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 16)
        let sm = try a.register(src.base, 4096, rw), dm = try b.register(dst.base, 16 * 4096, rw)
        return (a, b, qa, src, dst, sm, dm)
    }

    func testAFloodOverTheRateWaitsAndCompletesInOrderWithNothingLost() throws {
        let router = try RouterProcess(policies: ["alpha": limited("    tenant:\n      operations: 100/s\n      burstOperations: 8\n")])
        let (a, b, qa, src, dst, sm, dm) = try setUp(router)
        defer { withExtendedLifetime(b) {} }
        for i in 0..<40 {
            src.base.storeBytes(of: UInt64(i + 1), as: UInt64.self)
            // Each write lands in its own slot, so a lost or reordered one shows.
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], flags: ibv_send_flags(IBV_SEND_INLINE.rawValue | IBV_SEND_SIGNALED.rawValue),
                           remote: (addr(dst.base) + UInt64(i * 8), dm.pointee.rkey))
        }
        let wcs = a.poll(40)
        XCTAssertEqual(wcs.count, 40, "every shaped request completes")
        XCTAssertEqual(wcs.map(\.wr_id), (0..<40).map(UInt64.init), "in order")
        XCTAssertTrue(wcs.allSatisfy { $0.status == IBV_WC_SUCCESS }, "\(wcs.map(\.status.rawValue)) \(router.auditRecords().filter { ($0["decision"] as? String) == "deny" })")
        for i in 0..<40 { XCTAssertEqual(dst.base.load(fromByteOffset: i * 8, as: UInt64.self), UInt64(i + 1)) }
        let st = try shaping(router)
        XCTAssertGreaterThan(st["throttledRequests"] as? Int ?? 0, 0, "40 requests against a burst of 8 had to wait: \(st)")
        XCTAssertEqual(st["requests"] as? Int, 40)
        XCTAssertEqual(st["queueDepth"] as? Int, 0)
        XCTAssertEqual(router.stop(), 0)
        // The summary written at stop says so.
        let summary = router.auditRecords().last { ($0["event"] as? String) == "summary" && ($0["tenant"] as? String) == "alpha" }
        let fields = try XCTUnwrap(summary?["fields"] as? [String: Any], "\(String(describing: summary))")
        XCTAssertGreaterThan(Int(fields["throttledRequests"] as? String ?? "0") ?? 0, 0, "\(fields)")
    }

    func testTheSendQueueStillBoundsWhatATenantQueues() throws {
        let router = try RouterProcess(policies: ["alpha": limited("    tenant:\n      operations: 1/s\n      burstOperations: 1\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let (a, b, qa, src, dst, sm, dm) = try setUp(router, sendDepth: 4)
        defer { withExtendedLifetime(b) {} }
        // The one token of the burst goes first, so that nothing posted
        // next can complete (and free its slot) within the next second:
        // the queue then holds exactly its depth.
        try a.postSend(qa, id: 100, IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        var posted = 0
        var last: Error?
        for i in 0..<8 {
            do {
                try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey))
                posted += 1
            } catch {
                last = error
                break
            }
        }
        XCTAssertEqual(posted, 4, "all wait for the next token in the 4-deep queue ... (ring rounds 4 up to 4)")
        XCTAssertEqual((last as? VerbsError)?.code, ENOMEM, "... and the next post gets ENOMEM, as on hardware")
        XCTAssertEqual(a.state(qa), IBV_QPS_RTS, "a full queue is not an error")
    }

    func testAReloadChangesTheRateOfQueuedWorkLive() throws {
        let router = try RouterProcess(policies: ["alpha": limited("    tenant:\n      operations: 1/s\n      burstOperations: 1\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let (a, b, qa, src, dst, sm, dm) = try setUp(router)
        defer { withExtendedLifetime(b) {} }
        for i in 0..<30 {
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        }
        // At 1/s these would take half a minute; the poll below gives up after 10 s.
        XCTAssertEqual(a.poll(2, seconds: 1.5).count, 2, "the first runs at once, the next after a second")
        try router.writePolicy("alpha", limited("    tenant:\n      operations: 1M/s\n"))
        router.reload()
        let rest = a.poll(28)
        XCTAssertEqual(rest.count, 28, "the queued work runs at the new rate")
        XCTAssertEqual(rest.map(\.wr_id), (2..<30).map(UInt64.init), "in order, none lost")
        XCTAssertTrue(rest.allSatisfy { $0.status == IBV_WC_SUCCESS })
    }

    func testReadsAreChargedForTheBytesTheyBringBack() throws {
        // 4 KiB of burst: one 4 KiB READ fits, the second must wait for the
        // bucket, though the request itself carries no data outward.
        let router = try RouterProcess(policies: ["alpha": limited("    queuePair:\n      bandwidth: 1MB/s\n      burstBytes: 4Ki\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let (a, b, qa, src, dst, sm, dm) = try setUp(router)
        defer { withExtendedLifetime(b) {} }
        dst.fill(0, 4096, seed: 4)
        for i in 0..<2 {
            try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_READ, [sge(src.base, 4096, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        }
        let wcs = a.poll(2)
        XCTAssertEqual(wcs.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
        XCTAssertEqual(src.bytes(0, 4096), dst.bytes(0, 4096))
        let st = try shaping(router)
        XCTAssertEqual(st["throttledRequests"] as? Int, 1, "the second READ waited for its response bytes: \(st)")
        XCTAssertEqual(st["bytes"] as? Int, 8192)
    }

    func testControlVerbsAreShapedNotRefused() throws {
        let router = try RouterProcess(policies: ["alpha": limited("    controlVerbs:\n      operations: 20/s\n      burstOperations: 2\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let a = try VerbsEndpoint(socket: router.socket("alpha"))
        var pds: [UnsafeMutablePointer<ibv_pd>] = []
        for _ in 0..<6 {
            pds.append(try XCTUnwrap(ibv_alloc_pd(a.context), "every verb succeeds; the excess waits"))
        }
        let st = try shaping(router)
        XCTAssertGreaterThanOrEqual(st["controlVerbsThrottled"] as? Int ?? 0, 1, "\(st)")
        for pd in pds { XCTAssertEqual(ibv_dealloc_pd(pd), 0) }
        // Another tenant's control path was never held: status answered meanwhile.
    }

    func testStatusShowsRatesAndWeights() throws {
        let router = try RouterProcess(policies: ["alpha": limited("    weight: 3\n")])
        defer { XCTAssertEqual(router.stop(), 0) }
        let (a, b, qa, src, dst, sm, dm) = try setUp(router)
        defer { withExtendedLifetime(b) {} }
        try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(src.base, 512, sm)], remote: (addr(dst.base), dm.pointee.rkey))
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        let st = try shaping(router)
        XCTAssertEqual(st["weight"] as? Int, 3)
        XCTAssertEqual(st["bytes"] as? Int, 512)
        XCTAssertEqual(st["requests"] as? Int, 1)
        XCTAssertEqual(st["queuePairs"] as? Int, 2, "both ends are alpha's")
    }
}
