import XCTest
@testable import SluiceRouter

/// The request ids of RC between routers: a SEND or an atomic must never
/// run twice at the target, whatever mix of retransmissions, RNR answers and
/// late copies the link delivers. The requester's and the target's halves of
/// `RemotePeer` are driven directly, with a counter standing in for running
/// the request.
final class RemotePeerTests: XCTestCase {
    /// A target that runs requests like `serveRemoteRequest`: a request finds
    /// a receive or gets RNR; what runs is counted.
    final class Target {
        let peer = RemotePeer(router: "a", qpn: 1, lid: 1, ipv4: 0)
        var runs: [UInt64: Int] = [:]
        /// The answer sent back: "ok", "rnr", "cached", or nil (dropped).
        func serve(_ id: UInt64, receiveReady: Bool) -> String? {
            switch peer.arrival(of: id) {
            case .answer: return "cached"
            case .stale: return nil
            case .run: break
            }
            guard receiveReady else { return "rnr" }
            runs[id, default: 0] += 1
            peer.executed(id, response: [1])
            return "ok"
        }
    }

    func testAnRNRRetryOfARetransmittedSendIsNotRunAgain() {
        let requester = RemotePeer(router: "b", qpn: 2, lid: 2, ipv4: 0)
        let target = Target()
        // Request N times out and is retransmitted; the first copy finds no
        // receive (RNR), the second finds one and runs.
        let n = requester.idForHead()
        XCTAssertEqual(requester.idForHead(), n, "a retransmission keeps the id")
        XCTAssertEqual(target.serve(n, receiveReady: false), "rnr")
        XCTAssertEqual(target.serve(n, receiveReady: true), "ok")
        // The requester got the RNR first: it retries the same request after
        // the RNR delay, which must keep the id and be answered from the cache.
        let retry = requester.idForHead()
        XCTAssertEqual(retry, n, "an RNR retry keeps the id")
        XCTAssertEqual(target.serve(retry, receiveReady: true), "cached")
        XCTAssertEqual(target.runs.values.reduce(0, +), 1, "the SEND ran once: \(target.runs)")
        requester.headDone()
        let next = requester.idForHead()
        XCTAssertEqual(next, n &+ 1, "the next request takes the next id")
        XCTAssertEqual(target.serve(next, receiveReady: true), "ok")
        XCTAssertEqual(target.runs[next], 1)
    }

    func testOlderIdsAreDroppedAndTheNewestIsAnsweredFromTheCache() {
        let target = Target()
        XCTAssertEqual(target.serve(100, receiveReady: true), "ok")
        XCTAssertEqual(target.serve(101, receiveReady: false), "rnr", "RNR runs nothing")
        XCTAssertEqual(target.serve(100, receiveReady: true), "cached", "an RNR answer keeps the cache")
        XCTAssertEqual(target.serve(101, receiveReady: true), "ok")
        XCTAssertNil(target.serve(100, receiveReady: true), "a late copy of an older request is dropped")
        XCTAssertNil(target.serve(99, receiveReady: true))
        XCTAssertEqual(target.serve(101, receiveReady: true), "cached")
        XCTAssertEqual(target.runs, [100: 1, 101: 1])
        // A requester that reset its QP starts from a new random id: far
        // from the last one, it runs.
        XCTAssertEqual(target.serve(101 &- RemotePeer.staleWindow &- 1, receiveReady: true), "ok")
        // A READ is not cached: its retransmission is read again.
        target.peer.executed(500, response: nil)
        XCTAssertEqual(target.peer.arrival(of: 500), .run)
        XCTAssertEqual(target.peer.arrival(of: 499), .stale)
    }

    func testAFailedHeadReleasesItsId() {
        let r = RemotePeer(router: "b", qpn: 2, lid: 2, ipv4: 0)
        let a = r.idForHead()
        r.rnrLeft = 3
        r.headDone()
        XCTAssertNil(r.rnrLeft)
        XCTAssertEqual(r.idForHead(), a &+ 1)
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
