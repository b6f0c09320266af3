import XCTest
import SluiceWire
@testable import SluiceRouter

/// The request ids of RC between routers: requests run at the target
/// strictly in id order, and a SEND or an atomic never runs twice, whatever
/// mix of pipelined requests, retransmissions, RNR answers and late copies
/// the link delivers. The target's half of `RemotePeer` is driven
/// directly, with a counter standing in for running the request.
final class RemotePeerTests: XCTestCase {
    /// A target that runs requests like `serveRemoteRequest`: a request finds
    /// a receive or gets RNR, or fails; what runs is counted, in order.
    final class Target {
        let peer = RemotePeer(router: "a", qpn: 1, lid: 1, ipv4: 0)
        var ran: [UInt64] = []
        /// The answer sent back: "ok", "rnr", "error", "cached", "read again",
        /// or nil (dropped).
        func serve(_ id: UInt64, base: UInt64? = nil, receiveReady: Bool = true, fails: Bool = false, read: Bool = false) -> String? {
            let arrival = peer.arrival(of: id, base: base ?? id)
            switch arrival {
            case .answer: return "cached"
            case .stale: return nil
            case .rerun: return "read again"
            case .run: break
            }
            guard receiveReady else {
                peer.notReady(id)
                return "rnr"
            }
            ran.append(id)
            peer.executed(id, response: read ? nil : [1], failed: fails)
            return fails ? "error" : "ok"
        }
    }

    func testPipelinedRequestsRunInOrderAndARefusedOneHoldsBackTheRest() {
        let t = Target()
        // 100..103 sent back to back; 101 finds no receive.
        XCTAssertEqual(t.serve(100), "ok")
        XCTAssertEqual(t.serve(101, receiveReady: false), "rnr")
        XCTAssertNil(t.serve(102), "after a refused request nothing newer runs")
        XCTAssertNil(t.serve(103))
        // The requester sends again from 101, after the RNR delay.
        XCTAssertEqual(t.serve(101), "ok")
        XCTAssertEqual(t.serve(102), "ok")
        XCTAssertEqual(t.serve(103), "ok")
        XCTAssertEqual(t.ran, [100, 101, 102, 103], "each ran once, in order")
    }

    /// The first request of a connection lost, the second arriving first:
    /// it must not run before the first (it names the first as its base).
    func testALaterRequestDoesNotStartAConnectionWhoseFirstWasLost() {
        let t = Target()
        XCTAssertNil(t.serve(61, base: 60), "61 waits for 60")
        XCTAssertEqual(t.serve(60, base: 60), "ok")
        XCTAssertEqual(t.serve(61, base: 60), "ok")
        XCTAssertEqual(t.ran, [60, 61])
        // The same after a restart from a new random id, far away.
        let restart: UInt64 = 60 &+ (RemotePeer.staleWindow << 3)
        XCTAssertNil(t.serve(restart &+ 1, base: restart))
        XCTAssertEqual(t.serve(restart, base: restart), "ok")
        XCTAssertEqual(t.serve(restart &+ 1, base: restart), "ok")
        XCTAssertEqual(t.ran, [60, 61, restart, restart &+ 1])
    }

    func testARetransmittedWindowIsAnsweredFromTheCacheAndRunsOnlyWhatIsNew() {
        let t = Target()
        let requester = RemotePeer(router: "b", qpn: 2, lid: 2, ipv4: 0)
        let ids = (0..<4).map { _ in requester.takeID() }
        XCTAssertEqual(ids, (0..<4).map { ids[0] &+ UInt64($0) }, "ids go up by one")
        // The first two ran but their answers were lost; the requester's
        // timer sends all four again.
        XCTAssertEqual(t.serve(ids[0]), "ok")
        XCTAssertEqual(t.serve(ids[1]), "ok")
        XCTAssertEqual(ids.map { t.serve($0) }, ["cached", "cached", "ok", "ok"])
        XCTAssertEqual(t.ran, ids, "nothing ran twice")
        // Long after: a copy older than the cache is dropped, not run.
        for id in ids.last! &+ 1...ids.last! &+ UInt64(RemotePeer.maxWindow) { XCTAssertEqual(t.serve(id), "ok") }
        XCTAssertNil(t.serve(ids[0]), "forgotten copies are dropped")
    }

    func testAfterAnErrorNothingNewerRunsAndTheErrorIsAnsweredAgain() {
        let t = Target()
        XCTAssertEqual(t.serve(7), "ok")
        XCTAssertEqual(t.serve(8, fails: true), "error")
        XCTAssertNil(t.serve(9), "the requester's QP is in ERR: what follows is flushed there, not run here")
        XCTAssertEqual(t.serve(8), "cached", "a retransmission of the failed request gets its answer again")
        XCTAssertEqual(t.ran, [7, 8])
    }

    func testAReadIsReadAgainAndARestartedRequesterStartsOver() {
        let t = Target()
        XCTAssertEqual(t.serve(500, read: true), "ok")
        XCTAssertEqual(t.serve(500), "read again", "a READ's answer is not kept")
        XCTAssertEqual(t.serve(501), "ok", "reading again moved nothing")
        XCTAssertEqual(t.serve(501 &+ 2), nil, "a gap")
        // A requester that reset its QP starts from a new random id, far away.
        let restart = 501 &- RemotePeer.staleWindow &- 10
        XCTAssertEqual(t.serve(restart), "ok")
        XCTAssertEqual(t.serve(restart &+ 1), "ok")
        XCTAssertEqual(t.serve(restart), "cached")
        // The first request of a connection refused: later ones wait for it.
        let u = Target()
        XCTAssertEqual(u.serve(40, receiveReady: false), "rnr")
        XCTAssertNil(u.serve(41))
        XCTAssertEqual(u.serve(40), "ok")
    }

    func testResettingTheRequesterForgetsTheWindow() {
        let r = RemotePeer(router: "b", qpn: 2, lid: 2, ipv4: 0)
        let a = r.takeID()
        r.window.append(RemotePeer.Sent(id: a, wqe: sluice_send_wqe(), wcOpcode: 0, total: 0, frame: []))
        r.rnrLeft = 3
        r.resendAt = 5
        r.resetRequester()
        XCTAssertTrue(r.window.isEmpty)
        XCTAssertNil(r.rnrLeft)
        XCTAssertNil(r.resendAt)
        XCTAssertEqual(r.takeID(), a &+ 1, "ids are never reused")
    }
}

/// The target's audit of requests it refuses before any QP (no QP, not
/// connected, forged source): one record a second per (peer, QPN).
final class DenialAuditLimiterTests: XCTestCase {
    func testTheFirstRefusalIsAuditedAndRetriesWithinASecondAreCounted() {
        var l = DenialAuditLimiter()
        let t: UInt64 = 5_000_000_000
        XCTAssertEqual(l.admit(peer: "host-0", qpn: 7, now: t), 0, "the first is always audited")
        for i in 1...6 { XCTAssertNil(l.admit(peer: "host-0", qpn: 7, now: t + UInt64(i) * 100_000_000)) }
        // Another QPN, another router: audited at once.
        XCTAssertEqual(l.admit(peer: "host-0", qpn: 8, now: t + 1), 0)
        XCTAssertEqual(l.admit(peer: "host-2", qpn: 7, now: t + 1), 0)
        // A second later: audited, with what was left out.
        XCTAssertEqual(l.admit(peer: "host-0", qpn: 7, now: t + 1_000_000_000), 6)
        XCTAssertNil(l.admit(peer: "host-0", qpn: 7, now: t + 1_000_000_001))
        XCTAssertEqual(l.suppressedTotal, 7)
    }

    func testManyPairsStayBounded() {
        var l = DenialAuditLimiter()
        l.maxPairs = 8
        for q in 0..<100 { XCTAssertEqual(l.admit(peer: "p", qpn: UInt32(q), now: 1), 0, "a new pair is audited") }
        // Pairs forgotten to stay bounded are audited again, never lost.
        XCTAssertNotNil(l.admit(peer: "p", qpn: 0, now: 2))
    }
}
