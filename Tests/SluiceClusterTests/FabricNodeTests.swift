#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Crypto
import XCTest
@testable import SluiceCluster

/// Real TCP on loopback: nodes in this process, hostile clients as raw sockets.
final class FabricNodeTests: XCTestCase {
    let key = SymmetricKey(data: Array("cluster key for the tests, 32+ bytes".utf8))

    final class Recorder {
        var events: [FabricNode.Event] = []
        var ups: [String] { events.compactMap { if case .up(let p, _, _) = $0 { return p }; return nil } }
        var authFailures: [String] {
            events.compactMap { if case .down(_, _, let r, true) = $0 { return r }; return nil }
        }
        var downs: [String] { events.compactMap { if case .down(_, _, let r, _) = $0 { return r }; return nil } }
        var frames: [LinkFrame.Frame] { events.compactMap { if case .frame(_, let f) = $0 { return f }; return nil } }
    }

    func node(_ name: String, key: SymmetricKey? = nil, tune: (inout FabricNode.Configuration) -> Void = { _ in }) throws -> (FabricNode, Recorder) {
        var c = FabricNode.Configuration(name: name, listenHost: "127.0.0.1", listenPort: 0, key: key ?? self.key)
        c.redialDelayNanos = 100_000_000
        tune(&c)
        let n = try FabricNode(c, peers: [])
        let r = Recorder()
        n.onEvent = { r.events.append($0) }
        return (n, r)
    }

    func addr(_ n: FabricNode) -> RouterAddress { RouterAddress(name: n.config.name, host: "127.0.0.1", port: n.boundPort) }

    /// Services the nodes until `done` or the timeout.
    func pump(_ nodes: [FabricNode], seconds: Double = 5, until done: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            for n in nodes { n.service() }
            if done() { return true }
            var fds = nodes.map { pollfd(fd: $0.pollFD, events: Int16(POLLIN), revents: 0) }
            _ = poll(&fds, nfds_t(fds.count), 10)
        }
        return done()
    }

    func connections(_ n: FabricNode) -> Int { n.status()["connections"] as? Int ?? -1 }

    func state(_ n: FabricNode, _ peer: String) -> String? {
        ((n.status()["peers"] as? [String: Any])?[peer] as? [String: Any])?["state"] as? String
    }

    func direction(_ n: FabricNode, _ peer: String) -> String? {
        ((n.status()["peers"] as? [String: Any])?[peer] as? [String: Any])?["direction"] as? String
    }

    func testNoLinkBeforeFirstUseAndTheFirstFrameDialsAndArrives() throws {
        let (a, ra) = try node("alpha-host"), (b, rb) = try node("beta-host")
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        // Nothing needs a link: none is made.
        XCTAssertFalse(pump([a, b], seconds: 0.5) { self.connections(a) > 0 || self.connections(b) > 0 })
        XCTAssertEqual(connections(a), 0)
        XCTAssertEqual(connections(b), 0)
        XCTAssertEqual(state(a, "beta-host"), "idle")
        XCTAssertEqual(state(b, "alpha-host"), "idle")
        XCTAssertEqual(ra.events.count + rb.events.count, 0)
        // The first frame, from the name that sorts second: it dials, the
        // frame waits for the link and arrives once it is up.
        XCTAssert(b.send(to: "alpha-host", .init(.data, stream: 5, body: [9, 8, 7])), "queued for the link")
        XCTAssertEqual(state(b, "alpha-host"), "connecting")
        XCTAssert(pump([a, b]) { ra.frames.count == 1 }, "\(ra.events) \(rb.events)")
        XCTAssertEqual(ra.frames.first, .init(.data, stream: 5, body: [9, 8, 7]))
        XCTAssertEqual(rb.ups, ["alpha-host"])
        XCTAssertEqual(direction(b, "alpha-host"), "dialed")
        XCTAssertEqual(direction(a, "beta-host"), "accepted")
        XCTAssertEqual(connections(a), 1)
        XCTAssertEqual(connections(b), 1)
        XCTAssertEqual(b.droppedFrames, 0)
    }

    func testBothSidesWantingTheLinkAtOnceEndWithOneLinkAndNoFrameLost() throws {
        // Several rounds: which handshake finishes first varies.
        for round in 0..<5 {
            let (a, ra) = try node("a\(round)"), (b, rb) = try node("b\(round)")
            a.setPeers([addr(a), addr(b)])
            b.setPeers([addr(a), addr(b)])
            // Both send before either services its node: both dial.
            XCTAssert(a.send(to: b.config.name, .init(.data, stream: 1, body: [1])))
            XCTAssert(b.send(to: a.config.name, .init(.data, stream: 2, body: [2])))
            XCTAssertEqual(connections(a), 1)
            XCTAssertEqual(connections(b), 1)
            XCTAssert(pump([a, b]) {
                self.connections(a) == 1 && self.connections(b) == 1 && a.isUp(b.config.name) && b.isUp(a.config.name)
                    && ra.frames.count == 1 && rb.frames.count == 1
            }, "round \(round): \(a.status()) \(b.status()) \(ra.events) \(rb.events)")
            // Both kept the one dialed by the name that sorts first and
            // retired the other (a side that agreed on neither would end
            // with none, or each with another).
            XCTAssertEqual(direction(a, b.config.name), "dialed", "round \(round)")
            XCTAssertEqual(direction(b, a.config.name), "accepted", "round \(round)")
            XCTAssertEqual(rb.frames, [.init(.data, stream: 1, body: [1])])
            XCTAssertEqual(ra.frames, [.init(.data, stream: 2, body: [2])])
            // And it carries more, both ways.
            XCTAssert(a.send(to: b.config.name, .init(.data, stream: 3, body: [3])))
            XCTAssert(b.send(to: a.config.name, .init(.data, stream: 4, body: [4])))
            XCTAssert(pump([a, b]) { ra.frames.count == 2 && rb.frames.count == 2 })
            XCTAssertEqual(a.droppedFrames + b.droppedFrames, 0)
            XCTAssertEqual(a.refusals + b.refusals, 0)
            XCTAssertEqual(ra.authFailures + rb.authFailures, [])
        }
    }

    func testAnIdleLinkClosesAfterTheIdleTimeAndTheNextUseDialsAgain() throws {
        let tune: (inout FabricNode.Configuration) -> Void = { $0.idleNanos = 400_000_000 }
        let (a, ra) = try node("a", tune: tune), (b, rb) = try node("b", tune: tune)
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        XCTAssert(a.send(to: "b", .init(.data, stream: 1, body: [1])))
        XCTAssert(pump([a, b]) { rb.frames.count == 1 })
        // Nothing uses it: it closes, on its own, and no one dials again.
        XCTAssert(pump([a, b]) { self.connections(a) == 0 && self.connections(b) == 0 }, "\(a.status())")
        // (Both sides may find it idle in the same instant and close it.)
        XCTAssertGreaterThanOrEqual(a.idleCloses + b.idleCloses, 1, "\(ra.downs) \(rb.downs)")
        XCTAssert(ra.downs.contains { $0.hasPrefix("idle:") } || rb.downs.contains { $0.hasPrefix("idle:") }, "\(ra.downs) \(rb.downs)")
        XCTAssertFalse(pump([a, b], seconds: 0.6) { self.connections(a) > 0 || self.connections(b) > 0 }, "nothing redials an unused link")
        XCTAssertEqual(state(a, "b"), "idle")
        XCTAssertNil((a.status()["peers"] as? [String: [String: Any]])?["b"]?["lastFailure"], "an idle close is no failure")
        // The next use dials again and the frame arrives.
        XCTAssert(a.send(to: "b", .init(.data, stream: 2, body: [2])))
        XCTAssert(pump([a, b]) { rb.frames.count == 2 })
        XCTAssertEqual(ra.ups, ["b", "b"])
    }

    func testALinkAQPNeedsStaysPastTheIdleTimeAndIsRedialedWhenDropped() throws {
        var needed = true
        let tune: (inout FabricNode.Configuration) -> Void = {
            $0.idleNanos = 200_000_000
            $0.heartbeatNanos = 50_000_000
            $0.deadAfterNanos = 300_000_000
        }
        let (a, ra) = try node("a", tune: tune), (b, _) = try node("b", tune: tune)
        a.needs = { $0 == "b" && needed }
        b.needs = { $0 == "a" && needed }
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        b.use("a")
        XCTAssert(pump([a, b]) { a.isUp("b") && b.isUp("a") })
        XCTAssertFalse(pump([a, b], seconds: 1) { !a.isUp("b") || !b.isUp("a") }, "needed: kept past the idle time")
        XCTAssertEqual(a.idleCloses + b.idleCloses, 0)
        // b falls silent: a drops the link, and dials again since a QP
        // still needs it (a did not dial the first one).
        XCTAssert(pump([a], seconds: 3) { !a.isUp("b") })
        XCTAssert(pump([a, b]) { a.isUp("b") && b.isUp("a") }, "\(ra.events)")
        XCTAssertEqual(direction(a, "b"), "dialed")
        // Nothing needs it any more: it closes after the idle time, and
        // no one dials it again.
        needed = false
        XCTAssert(pump([a, b]) { self.connections(a) == 0 && self.connections(b) == 0 })
        XCTAssertFalse(pump([a, b], seconds: 0.6) { self.connections(a) > 0 || self.connections(b) > 0 })
        XCTAssertEqual(state(a, "b"), "idle")
    }

    func testFramesWaitBoundedForALinkComingUpAndAFailedAttemptDropsThem() throws {
        let frame = { (i: UInt8) in LinkFrame.Frame(.data, stream: UInt32(i), body: [UInt8](repeating: i, count: 100)) }
        let each = 100 + LinkFrame.headerSize
        let (a, _) = try node("a") { $0.maxPendingBytes = 3 * each }
        let (b, rb) = try node("b")
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        // b is not serviced yet: the link cannot finish its handshake.
        for i: UInt8 in 1...3 { XCTAssert(a.send(to: "b", frame(i)), "frame \(i) queued") }
        XCTAssertFalse(a.send(to: "b", frame(4)), "beyond the bound: dropped, not queued")
        XCTAssertEqual(a.droppedFrames, 1)
        XCTAssertEqual(a.queuedBytes(to: "b"), 3 * each, "what waits counts toward the link's backlog")
        XCTAssert(pump([a, b]) { rb.frames.count == 3 })
        XCTAssertEqual(rb.frames, [frame(1), frame(2), frame(3)], "in order, once the link is up")

        // A peer where nothing listens: the attempt fails, what waited for
        // it is dropped (the QPs' retries resend), and it shows as down.
        let dead = try node("d") { $0.maxPendingBytes = 3 * each }.0
        dead.setPeers([addr(dead), RouterAddress(name: "z", host: "127.0.0.1", port: 1)])
        _ = dead.send(to: "z", frame(9))
        XCTAssert(pump([dead]) { dead.droppedFrames == 1 }, "\(dead.status())")
        XCTAssertNil(dead.queuedBytes(to: "z"))
        XCTAssertEqual(state(dead, "z"), "down")
    }

    func testTwoRoutersLinkOnceAndCarryTaggedFramesBothWays() throws {
        let (a, ra) = try node("alpha-host"), (b, rb) = try node("beta-host")
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        a.use("beta-host")
        XCTAssert(pump([a, b]) { a.isUp("beta-host") && b.isUp("alpha-host") }, "\(ra.events) \(rb.events)")
        XCTAssertEqual(ra.ups, ["beta-host"])
        XCTAssertEqual(rb.ups, ["alpha-host"], "one link per pair")
        let big = (0..<LinkFrame.maxBody).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        XCTAssert(a.send(to: "beta-host", .init(.data, stream: 42, body: big)))
        XCTAssert(b.send(to: "alpha-host", .init(.data, stream: 7, body: [1, 2, 3])))
        XCTAssert(pump([a, b]) { rb.frames.count == 1 && ra.frames.count == 1 })
        XCTAssertEqual(rb.frames.first, .init(.data, stream: 42, body: big))
        XCTAssertEqual(ra.frames.first, .init(.data, stream: 7, body: [1, 2, 3]))
        XCTAssertEqual(a.status()["refusals"] as? Int, 0)
    }

    func testARouterWithAWrongKeyIsRefusedOnBothSidesAndNeverLinks() throws {
        let (a, ra) = try node("a"), (b, rb) = try node("b", key: SymmetricKey(size: .bits256))
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        // Each wants the link (a use), each dials, each is refused, and
        // dials again after a back-off while the use is recent.
        a.use("b")
        b.use("a")
        XCTAssert(pump([a, b]) { ra.authFailures.count >= 2 && rb.authFailures.count >= 2 }, "\(ra.events) \(rb.events)")
        XCTAssertFalse(a.isUp("b"))
        XCTAssertFalse(b.isUp("a"))
        XCTAssertEqual(ra.ups + rb.ups, [])
        // As dialer each finds the other does not hold the key; as acceptor
        // each is told its challenge failed.
        for r in [ra, rb] {
            XCTAssert(r.authFailures.contains { $0.contains("does not hold the cluster key") }, "\(r.authFailures)")
            XCTAssert(r.authFailures.contains { $0.contains("authentication failed") }, "\(r.authFailures)")
        }
        XCTAssertEqual(state(a, "b"), "down", "wanted, not linked: down with its last failure")
        _ = a.send(to: "b", .init(.data, stream: 1, body: [1]))
        _ = pump([a, b], seconds: 1) { !rb.frames.isEmpty }
        XCTAssertEqual(rb.frames, [], "no link, nothing delivered")
    }

    /// A raw TCP client: the node under test must close it and stay well.
    func rawConnect(_ n: FabricNode) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = n.boundPort.bigEndian
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        XCTAssertEqual(r, 0)
        _ = sluice_net_set_timeouts(fd, 50)
        return fd
    }

    /// Reads until the peer closes: returns everything received, or nil
    /// if the connection was still open when the time ran out.
    func readUntilClosed(_ fd: Int32, servicing nodes: [FabricNode], seconds: Double = 5) -> [UInt8]? {
        var got: [UInt8] = []
        var closed = false
        _ = pump(nodes, seconds: seconds) {
            var buf = [UInt8](repeating: 0, count: 4096)
            let n = read(fd, &buf, buf.count)
            if n > 0 { got += buf.prefix(n) } else if n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK) { closed = true }
            return closed
        }
        close(fd)
        return closed ? got : nil
    }

    func testGarbageOversizedAndTruncatedInputClosesOnlyThatConnection() throws {
        let (a, _) = try node("a"), (b, rb) = try node("b") { $0.handshakeTimeoutNanos = 300_000_000 }
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        var garbage = rawConnect(b)
        _ = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8).withUnsafeBytes { write(garbage, $0.baseAddress, $0.count) }
        XCTAssertNotNil(readUntilClosed(garbage, servicing: [b]), "an HTTP request was not closed")
        XCTAssert(rb.downs.last?.contains("bad magic") ?? false, "\(rb.downs)")

        var header: [UInt8] = []
        header.appendBE(LinkFrame.magic)
        header += [1, 1, 0, 0]
        header.appendBE(UInt32(0x7fff_ffff))
        header.appendBE(UInt32(0))
        garbage = rawConnect(b)
        _ = header.withUnsafeBytes { write(garbage, $0.baseAddress, $0.count) }
        XCTAssertNotNil(readUntilClosed(garbage, servicing: [b]), "a 2 GiB HELLO was not closed")
        XCTAssert(rb.downs.last?.contains("exceeds the limit") ?? false, "\(rb.downs)")

        // Half a header, then silence: closed at the handshake timeout.
        garbage = rawConnect(b)
        _ = header.prefix(7).withUnsafeBytes { write(garbage, $0.baseAddress, $0.count) }
        let t0 = Date()
        XCTAssertNotNil(readUntilClosed(garbage, servicing: [b]), "a stalled handshake was never closed")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3)
        XCTAssert(rb.downs.last?.contains("no handshake within") ?? false, "\(rb.downs)")

        // After all that, a real router still links.
        a.use("b")
        XCTAssert(pump([a, b]) { a.isUp("b") && b.isUp("a") })
    }

    func testAHandshakeReplayedOverTCPIsRefused() throws {
        let (b, rb) = try node("b")
        b.setPeers([RouterAddress(name: "a", host: "127.0.0.1", port: 1), addr(b)])
        // Play router a by hand and record its bytes.
        var hs = LinkHandshake(role: .dialer(expecting: "b"), localName: "a", key: key)
        var enc = FrameEncoder()
        var dec = FrameDecoder()
        let fd = rawConnect(b)
        var recorded: [UInt8] = []
        func send(_ f: LinkFrame.Frame) {
            let bytes = enc.encode(f)
            recorded += bytes
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
        hs.start().forEach(send)
        var challenge: LinkFrame.Frame?
        XCTAssert(pump([b]) {
            var buf = [UInt8](repeating: 0, count: 1024)
            let n = read(fd, &buf, buf.count)
            if n > 0 { dec.feed(Array(buf.prefix(n))) }
            challenge = try? dec.next()
            return challenge != nil
        })
        guard case .established(let auth) = try hs.receive(challenge!) else { return XCTFail("no challenge") }
        auth.forEach(send)
        XCTAssert(pump([b]) { b.isUp("a") })
        close(fd)
        _ = pump([b], seconds: 1) { !b.isUp("a") }

        // The recording, replayed on a new connection: refused.
        let replay = rawConnect(b)
        _ = recorded.withUnsafeBytes { write(replay, $0.baseAddress, $0.count) }
        let answer = readUntilClosed(replay, servicing: [b])
        XCTAssertNotNil(answer, "the replay was not closed")
        XCTAssert(String(decoding: answer ?? [], as: UTF8.self).contains("authentication failed"), "no refusal frame")
        XCTAssertFalse(b.isUp("a"))
        XCTAssert(rb.authFailures.last?.contains("replayed") ?? false, "\(rb.authFailures)")
    }

    func testASilentPeerIsDeclaredDeadAndRedialedWhenItReturns() throws {
        let tune: (inout FabricNode.Configuration) -> Void = { $0.heartbeatNanos = 50_000_000; $0.deadAfterNanos = 300_000_000 }
        let (a, ra) = try node("a", tune: tune), (b, _) = try node("b", tune: tune)
        a.setPeers([addr(a), addr(b)])
        b.setPeers([addr(a), addr(b)])
        a.use("b")
        XCTAssert(pump([a, b]) { a.isUp("b") && b.isUp("a") })
        // b stops answering (a hung router, a partition): a notices by itself.
        let t0 = Date()
        XCTAssert(pump([a], seconds: 3) { !a.isUp("b") }, "a never noticed")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 3, "within a few dead intervals, not TCP's minutes")
        XCTAssert(ra.downs.last?.contains("nothing heard") ?? false, "\(ra.downs)")
        // b comes back: a dials again and the link is up.
        XCTAssert(pump([a, b]) { a.isUp("b") && b.isUp("a") })
        XCTAssertEqual(ra.ups, ["b", "b"])
    }

    /// A raw TCP client from a chosen loopback source address (all of
    /// 127/8 is local), so the node sees several "hosts".
    func rawConnect(_ n: FabricNode, from source: String) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var src = sockaddr_in()
        src.sin_family = sa_family_t(AF_INET)
        src.sin_addr.s_addr = inet_addr(source)
        let b = withUnsafePointer(to: &src) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        XCTAssertEqual(b, 0, "bind \(source)")
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = n.boundPort.bigEndian
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        XCTAssertEqual(r, 0)
        _ = sluice_net_set_timeouts(fd, 50)
        return fd
    }

    func testUnauthenticatedConnectionsAreCappedAndRoutersStillLink() throws {
        let (a, ra) = try node("a"), (b, rb) = try node("b")
        b.setPeers([addr(a), addr(b)])
        func connections() -> Int { b.status()["connections"] as? Int ?? -1 }
        var clients: [Int32] = []
        defer { clients.forEach { _ = close($0) } }
        // Six from one address: four are kept, the rest closed at once.
        for _ in 0..<6 {
            clients.append(rawConnect(b, from: "127.0.0.2"))
            b.service()
        }
        XCTAssertEqual(connections(), 4, "per-source cap")
        XCTAssertEqual(b.shed, 2)
        // Forty more from ten addresses: sixteen unauthenticated in all.
        for i in 3...12 {
            for _ in 0..<4 {
                clients.append(rawConnect(b, from: "127.0.0.\(i)"))
                b.service()
            }
        }
        XCTAssertEqual(connections(), 16, "total cap")
        XCTAssertEqual(b.shed, 2 + 28)
        // The shed connections were closed by the node, not left open.
        var closedByNode = 0
        for fd in clients {
            var byte: UInt8 = 0
            if read(fd, &byte, 1) == 0 { closedByNode += 1 }
        }
        XCTAssertEqual(closedByNode, 30)
        // A listed router still links at once (its host is not a stranger),
        // long before the strangers' handshakes time out.
        a.setPeers([addr(a), addr(b)])
        a.use("b")
        XCTAssert(pump([a, b], seconds: 1.5) { a.isUp("b") && b.isUp("a") }, "\(ra.events) \(rb.events)")
        XCTAssertLessThanOrEqual(connections(), 17)
        // The strangers time out (2 s): only the link remains.
        XCTAssert(pump([a, b], seconds: 4) { connections() == 1 }, "\(connections()) connections")
        XCTAssert(a.isUp("b"))
    }

    func testAcceptWithoutFileDescriptorsPausesTheListenerInsteadOfSpinning() throws {
        let (b, _) = try node("b")
        b.setPeers([])
        let client = rawConnect(b)
        defer { _ = close(client) }
        var old = rlimit()
        XCTAssertEqual(getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &old), 0)
        // No descriptor left for accept.
        let probe = open("/dev/null", O_RDONLY)
        XCTAssertGreaterThan(probe, 2)
        close(probe)
        var low = old
        low.rlim_cur = rlim_t(probe)
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &low), 0)
        b.service()
        let paused = b.listenPausedUntil
        b.service()
        XCTAssertEqual(setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &old), 0)
        XCTAssertNotNil(paused, "accept failed with EMFILE: the listener is paused")
        if let p = paused { XCTAssertLessThanOrEqual(b.nextDeadline() ?? .max, p, "the node wakes to resume it") }
        XCTAssertEqual(b.status()["connections"] as? Int, 0)
        // The queued connection is accepted once the pause is over.
        XCTAssert(pump([b], seconds: 2) { b.status()["connections"] as? Int == 1 })
        XCTAssertNil(b.listenPausedUntil)
    }

    func testAnUntaggedRefusedOnAnEstablishedLinkIsAPlainClose() throws {
        let (b, rb) = try node("b")
        b.setPeers([RouterAddress(name: "a", host: "127.0.0.1", port: 1), addr(b)])
        // Play router a by hand, up to an authenticated link.
        var hs = LinkHandshake(role: .dialer(expecting: "b"), localName: "a", key: key)
        var enc = FrameEncoder()
        var dec = FrameDecoder()
        let fd = rawConnect(b)
        func send(_ f: LinkFrame.Frame, with e: inout FrameEncoder) {
            let bytes = e.encode(f)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
        hs.start().forEach { send($0, with: &enc) }
        var challenge: LinkFrame.Frame?
        XCTAssert(pump([b]) {
            var buf = [UInt8](repeating: 0, count: 1024)
            let n = read(fd, &buf, buf.count)
            if n > 0 { dec.feed(Array(buf.prefix(n))) }
            challenge = try? dec.next()
            return challenge != nil
        })
        guard case .established(let auth) = try hs.receive(challenge!) else { return XCTFail("no challenge") }
        auth.forEach { send($0, with: &enc) }
        XCTAssert(pump([b]) { b.isUp("a") })
        // An untagged REFUSED (anyone on the path can write one) on the
        // established link: it closes, but is no authentication failure.
        var plain = FrameEncoder()
        send(LinkFrame.Frame(.refused, body: Array("authentication failed".utf8)), with: &plain)
        XCTAssert(pump([b]) { !b.isUp("a") })
        close(fd)
        XCTAssertEqual(rb.authFailures, [], "\(rb.events)")
        XCTAssertEqual(b.refusals, 0)
        XCTAssert(rb.downs.last?.contains("untagged REFUSED") ?? false, "\(rb.downs)")
    }
}
