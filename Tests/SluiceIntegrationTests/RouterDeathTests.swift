import Foundation
import XCTest
import SluiceVerbs

/// A router that dies must not hang or kill the applications using it.
final class RouterDeathTests: XCTestCase {
    func testPollingAndPostingNoticeADeadRouter() throws {
        let router = try RouterProcess()
        let e = try VerbsEndpoint(socket: router.socket("alpha"))
        let qp = try e.createQP()
        kill(router.process.processIdentifier, SIGKILL)
        router.process.waitUntilExit()

        // Posting to a QP in RESET is the caller's error whatever the router
        // does; what matters is that nothing raises SIGPIPE or blocks.
        let buf = TestBuffer(pages: 1)
        var sgl = ibv_sge(addr: addr(buf.base), length: 8, lkey: 0)
        withUnsafeMutablePointer(to: &sgl) { p in
            var wr = ibv_recv_wr()
            wr.sg_list = p
            wr.num_sge = 1
            var bad: UnsafeMutablePointer<ibv_recv_wr>?
            _ = ibv_post_recv(qp, &wr, &bad)
        }

        var wc = ibv_wc()
        var result: Int32 = 0
        for _ in 0..<(1 << 20) {
            result = ibv_poll_cq(e.cq, 1, &wc)
            if result != 0 { break }
        }
        XCTAssertEqual(result, -1, "ibv_poll_cq reports the dead router instead of waiting forever")
        XCTAssertEqual(errno, EIO)
        XCTAssertNil(ibv_alloc_pd(e.context), "control verbs fail too")
        XCTAssertEqual(errno, EIO)
    }
}
