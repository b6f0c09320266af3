import Foundation
import XCTest
import SluiceVerbs
import SluiceRouter

/// The poller stops looking at QPs that stay idle and relies on the
/// library's posted-QP hint to look again (the session page's bitmap). A
/// lost hint would leave a posted request unserved forever, so this posts
/// to retired QPs many times, at random moments against the router's own
/// retiring and sleeping, and checks every request completes with its data.
final class PostedHintTests: XCTestCase {
    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)

    func activeQPs(_ router: RouterProcess) throws -> Int {
        let shaping = try XCTUnwrap(try router.status()["shaping"] as? [String: Any])
        let alpha = try XCTUnwrap(shaping["alpha"] as? [String: Any])
        return try XCTUnwrap(alpha["activeQueuePairs"] as? Int)
    }

    /// Waits (up to 10 s) until the router looks at no QP of alpha's.
    func waitUntilAllRetired(_ router: RouterProcess, file: StaticString = #filePath, line: UInt = #line) throws {
        let deadline = Date().addingTimeInterval(10)
        var n = try activeQPs(router)
        while n != 0 && Date() < deadline {
            usleep(2_000)
            n = try activeQPs(router)
        }
        XCTAssertEqual(n, 0, "idle QPs leave the poller's active list", file: file, line: line)
    }

    func testRetiredQueuePairsAreServedAgainOnTheirNextPost() throws {
        let router = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")])
        let a = try VerbsEndpoint(socket: router.socket("alpha")), b = try VerbsEndpoint(socket: router.socket("alpha"))
        // Idle QPs around the busy pair, so the pair is not the only one.
        var idle: [UnsafeMutablePointer<ibv_qp>] = []
        for _ in 0..<8 { idle.append(try a.createQP()) }
        let qa = try a.createQP(), qb = try b.createQP()
        for _ in 0..<8 { idle.append(try b.createQP()) }
        try a.connect(qa, to: qb, of: b, access: rw)
        try b.connect(qb, to: qa, of: a, access: rw)
        let src = TestBuffer(pages: 1), dst = TestBuffer(pages: 1)
        let sm = try a.register(src.base, 4096, rw), dm = try b.register(dst.base, 4096, rw)
        defer { withExtendedLifetime((a, b, idle)) {} }
        try waitUntilAllRetired(router)

        var rng = SystemRandomNumberGenerator()
        for i in 0..<300 {
            src.base.storeBytes(of: UInt64(0xabc0_0000 + i), as: UInt64.self)
            let slot = (i % 64) * 8
            if i % 3 == 0 {
                // A SEND to a receive posted just before: both queues hinted.
                try b.postRecv(qb, id: UInt64(i), [sge(dst.base + 2048, 8, dm)])
                try a.postSend(qa, id: UInt64(i), IBV_WR_SEND, [sge(src.base, 8, sm)], flags: IBV_SEND_SIGNALED)
                let got = b.poll(1, seconds: 5)
                XCTAssertEqual(got.first?.status, IBV_WC_SUCCESS, "receive \(i)")
                XCTAssertEqual(dst.base.load(fromByteOffset: 2048, as: UInt64.self), UInt64(0xabc0_0000 + i))
            } else {
                try a.postSend(qa, id: UInt64(i), IBV_WR_RDMA_WRITE, [sge(src.base, 8, sm)], flags: IBV_SEND_SIGNALED,
                               remote: (addr(dst.base) + UInt64(slot), dm.pointee.rkey))
            }
            let wc = a.poll(1, seconds: 5)
            XCTAssertEqual(wc.count, 1, "request \(i) completes after a pause")
            guard let c = wc.first else { break }
            XCTAssertEqual(c.wr_id, UInt64(i))
            XCTAssertEqual(c.status, IBV_WC_SUCCESS)
            if i % 3 != 0 { XCTAssertEqual(dst.base.load(fromByteOffset: slot, as: UInt64.self), UInt64(0xabc0_0000 + i)) }
            // Pauses around the retire time (50 µs), the router's spin
            // (10 µs) and far beyond, so posts land in every phase.
            let pause = [0, 5, 30, 45, 55, 80, 200, 2_000][Int.random(in: 0..<8, using: &rng)]
            if pause > 0 { usleep(useconds_t(pause)) }
        }
        try waitUntilAllRetired(router)
        XCTAssertEqual(router.stop(), 0)
    }
}
