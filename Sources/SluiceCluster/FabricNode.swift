#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Crypto
import Foundation

/// A router's end of the fabric: one listening socket, at most one
/// authenticated link per peer router, all on an epoll instance of its own
/// whose fd the router's event loop watches (`pollFD`). Single-threaded:
/// every call comes from the router's loop.
///
/// Links are lazy: none is made at start-up. A link to a peer is dialed
/// when the router first needs it (`use(_:)`, called when a local QP is
/// connected to a QP on that router, or `send(to:_:)` with no link), by
/// whichever side needs it first; either side may dial.
///
/// One link per router pair. When both sides dial at once, each ends up
/// with two authenticated links; both keep the one dialed by the router
/// whose name sorts first (`dialsPeer`) and retire the other, so the two
/// ends agree without talking. A new authenticated link in the same
/// direction as the one in use replaces it (the peer restarted, or
/// redialed after a drop it noticed first).
///
/// A link in use is cached: kept alive with PING every `heartbeat`; a link
/// silent for `deadAfter` is closed. A link is *wanted* while a local QP
/// needs it (`needs`), a frame waits for it, or a data frame crossed it
/// within `idle`; a wanted link that drops is dialed again after
/// `redialDelay` (backing off after refusals); an up link that is not
/// wanted closes (reason "idle"). Frames sent while the link comes up wait
/// in a bounded queue (`maxPendingBytes`) and go out once it is up; if
/// the attempt fails they are dropped (the QP's retry timer resends).
public final class FabricNode {
    public struct Configuration {
        public var name: String
        /// Listen on this literal address and port (port 0: any).
        public var listenHost: String
        public var listenPort: UInt16
        public var key: SymmetricKey
        public var heartbeatNanos: UInt64 = 500_000_000
        public var deadAfterNanos: UInt64 = 3_000_000_000
        /// An unfinished handshake (dialed or accepted) is closed after this.
        public var handshakeTimeoutNanos: UInt64 = 2_000_000_000
        public var redialDelayNanos: UInt64 = 1_000_000_000
        /// Accepted connections still in the handshake (not authenticated):
        /// at most this many from addresses that are not a listed router's,
        /// and at most `maxUnauthenticatedPerSource` from any one address.
        /// Beyond either, a new connection is closed at once, so a process
        /// without the key cannot exhaust the router's file descriptors nor
        /// crowd out the routers of the directory.
        public var maxUnauthenticated = 16
        public var maxUnauthenticatedPerSource = 4
        /// After accept fails for want of file descriptors, the listener is
        /// not watched for this long (it is level-triggered: watching it
        /// would spin the loop).
        public var acceptPauseNanos: UInt64 = 100_000_000
        /// An up link that no local QP needs and that carried no data frame
        /// for this long is closed; the next use dials again.
        public var idleNanos: UInt64 = 60_000_000_000
        /// Frames for a peer whose link is still coming up wait, up to this
        /// many bytes; beyond it a frame is dropped (as on a fabric: the
        /// QP's retry timer resends it).
        public var maxPendingBytes = 32 << 20

        public init(name: String, listenHost: String, listenPort: UInt16, key: SymmetricKey) {
            self.name = name
            self.listenHost = listenHost
            self.listenPort = listenPort
            self.key = key
        }
    }

    public enum Event {
        /// A peer authenticated (either direction).
        case up(peer: String, address: String, dialed: Bool)
        /// A link closed: `authentication` when the handshake failed (wrong
        /// key, a replay, an unknown router).
        case down(peer: String?, address: String, reason: String, authentication: Bool)
        /// A fabric frame from an authenticated peer.
        case frame(peer: String, LinkFrame.Frame)
    }

    public let config: Configuration
    public let pollFD: Int32
    public private(set) var listenFD: Int32 = -1
    public private(set) var boundPort: UInt16 = 0
    /// The routers this node may link with, and where they listen.
    public private(set) var peers: [String: RouterAddress] = [:]
    private var links: [Int32: FabricLink] = [:]
    private var upLinks: [String: FabricLink] = [:]
    private var redialAt: [String: UInt64] = [:]
    private var refusedInARow: [String: Int] = [:]
    /// Per peer: when a data frame last crossed its link, or it was last
    /// asked for (`use`).
    private var lastUsed: [String: UInt64] = [:]
    /// Per peer: frames waiting for its link to come up, and their bytes.
    private var pending: [String: [LinkFrame.Frame]] = [:]
    private var pendingBytes: [String: Int] = [:]
    /// Frames dropped: the pending queue was full, or the link they waited
    /// for failed to come up.
    public private(set) var droppedFrames = 0
    /// Links closed because no one used them for `idleNanos`.
    public private(set) var idleCloses = 0
    /// Whether a local QP still needs the link to a peer (the router
    /// answers from its QPs). Nil: nothing does, only traffic keeps a link.
    public var needs: ((String) -> Bool)?
    /// Per peer: the last reason a link to or from it failed, for status.
    public private(set) var lastFailure: [String: String] = [:]
    /// Connections refused at the handshake since start.
    public private(set) var refusals = 0
    /// Accepted connections closed at once for being above the caps on
    /// unauthenticated connections.
    public private(set) var shed = 0
    /// While set, the listener is out of the epoll set until then (accept
    /// ran out of file descriptors).
    private(set) var listenPausedUntil: UInt64?
    public var onEvent: ((Event) -> Void)?

    public init(_ config: Configuration, peers: [RouterAddress]) throws {
        self.config = config
        pollFD = sluice_net_epoll_create()
        guard pollFD >= 0 else { throw LinkError.io("epoll_create1: \(String(cString: strerror(errno)))") }
        var port: UInt16 = 0
        listenFD = sluice_net_listen(config.listenHost, config.listenPort, &port)
        guard listenFD >= 0 else {
            let e = errno
            Glibc.close(pollFD)
            throw LinkError.io("cannot listen on \(config.listenHost):\(config.listenPort): \(String(cString: strerror(e)))")
        }
        boundPort = port
        _ = sluice_net_epoll_set(pollFD, listenFD, UInt64(UInt32(bitPattern: listenFD)), 0, 1)
        setPeers(peers)
    }

    deinit {
        for l in links.values { Glibc.close(l.fd) }
        if listenFD >= 0 { Glibc.close(listenFD) }
        Glibc.close(pollFD)
    }

    /// Replaces the peer list (a directory change). Links to routers no
    /// longer listed close. No link is dialed here: links are made on use.
    public func setPeers(_ list: [RouterAddress]) {
        peers = [:]
        for p in list where p.name != config.name { peers[p.name] = p }
        for (name, l) in upLinks where peers[name] == nil {
            l.close(reason: "router \(name) left the cluster directory")
            reap(l)
        }
        for name in Array(pending.keys) where peers[name] == nil { dropPending(name) }
        for name in Array(redialAt.keys) where peers[name] == nil { redialAt[name] = nil }
    }

    /// The tie-break for two links between the same pair (both dialed at
    /// once): both sides keep the one dialed by the router whose name sorts
    /// first. True when that is this router.
    public func dialsPeer(_ name: String) -> Bool { config.name < name }

    public func isUp(_ peer: String) -> Bool { upLinks[peer]?.state == .up }

    /// Bytes waiting for the link to `peer`: unsent on the link when it is
    /// up, else queued for it while it comes up (nil: neither).
    public func queuedBytes(to peer: String) -> Int? {
        if let l = upLinks[peer] { return l.queued }
        return pendingBytes[peer]
    }

    public var connectedPeers: [String] { upLinks.keys.sorted() }

    private func dialing(_ name: String) -> Bool {
        links.values.contains { $0.dialed && $0.handshakePeer == name && $0.state != .closed }
    }

    /// Any link to or from `name` that is not closed (up or coming up).
    private func linkInProgress(_ name: String) -> Bool {
        links.values.contains { $0.state != .closed && !$0.retiring && ($0.handshakePeer == name || $0.peerName == name) }
    }

    /// Whether the link to `name` should exist (see the type's comment).
    func wanted(_ name: String, now: UInt64) -> Bool {
        if pending[name]?.isEmpty == false { return true }
        if let u = lastUsed[name], now < u &+ config.idleNanos { return true }
        return needs?(name) ?? false
    }

    /// The router needs the link to `peer` (a local QP was connected to a
    /// QP there): dial it unless it is up, coming up, or backing off.
    public func use(_ peer: String, now: UInt64 = monotonicNanos()) {
        guard let p = peers[peer] else { return }
        lastUsed[peer] = now
        guard upLinks[peer] == nil, !dialing(peer) else { return }
        if let at = redialAt[peer], at > now { return } // backing off; the timer dials
        redialAt[peer] = nil
        dial(p, now: now)
    }

    /// Sends a fabric frame to a peer. With no link up, the frame waits for
    /// the link this call starts (or that is coming up), within
    /// `maxPendingBytes`. False when the frame was dropped: the peer is not
    /// in the directory, the link failed at once, or the queue is full.
    @discardableResult
    public func send(to peer: String, _ f: LinkFrame.Frame) -> Bool {
        let now = monotonicNanos()
        if let l = upLinks[peer], l.state == .up {
            if f.kind == .data { lastUsed[peer] = now }
            let ok = l.send(f, now: now)
            if l.state == .closed { reap(l) }
            return ok
        }
        guard peers[peer] != nil, f.kind == .data else { return false }
        let size = f.body.count + LinkFrame.headerSize
        guard (pendingBytes[peer] ?? 0) + size <= config.maxPendingBytes else {
            droppedFrames += 1
            return false
        }
        pending[peer, default: []].append(f)
        pendingBytes[peer, default: 0] += size
        use(peer, now: now)
        return pending[peer] != nil
    }

    private func dropPending(_ name: String) {
        droppedFrames += pending[name]?.count ?? 0
        pending[name] = nil
        pendingBytes[name] = nil
    }

    private func flushPending(_ name: String, into l: FabricLink, now: UInt64) {
        guard let frames = pending.removeValue(forKey: name) else { return }
        pendingBytes[name] = nil
        for f in frames where l.state == .up { l.send(f, now: now) }
    }

    /// Handles what the node's epoll reports, then the timers. Call when
    /// `pollFD` is readable, and at `nextDeadline`.
    public func service(now: UInt64 = monotonicNanos()) {
        var tags = [UInt64](repeating: 0, count: 64)
        var ready = [UInt32](repeating: 0, count: 64)
        let n = sluice_net_epoll_wait(pollFD, &tags, &ready, 64, 0)
        if n > 0 {
            for i in 0..<Int(n) {
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: tags[i]))
                if fd == listenFD {
                    acceptAll(now: now)
                    continue
                }
                guard let l = links[fd] else { continue }
                if ready[i] & 2 != 0 || l.state == .connecting { l.writable(now: now) }
                if ready[i] & 5 != 0 {
                    for e in l.readable(now: now) { deliver(e, l, now: now) }
                }
                if l.state == .connecting && ready[i] & 4 != 0 { l.writable(now: now) }
                settle(l)
            }
        }
        timers(now: now)
    }

    /// The earliest time `service` has something to do without I/O.
    public func nextDeadline() -> UInt64? {
        var t: UInt64? = redialAt.values.min()
        if let p = listenPausedUntil { t = min(t ?? p, p) }
        func soonest(_ x: UInt64) { t = min(t ?? x, x) }
        for l in links.values {
            switch l.state {
            case .connecting, .handshaking: soonest(l.opened &+ config.handshakeTimeoutNanos)
            case .up where l.retiring:
                soonest(l.retiredAt &+ config.handshakeTimeoutNanos)
            case .up:
                soonest(l.lastSent &+ config.heartbeatNanos)
                soonest(l.lastHeard &+ config.deadAfterNanos)
                if let p = l.peerName, upLinks[p] === l { soonest((lastUsed[p] ?? l.establishedAt) &+ config.idleNanos) }
            case .closed: break
            }
        }
        return t
    }

    private func timers(now: UInt64) {
        if let p = listenPausedUntil, now >= p {
            listenPausedUntil = nil
            _ = sluice_net_epoll_set(pollFD, listenFD, UInt64(UInt32(bitPattern: listenFD)), 0, 1)
        }
        for l in Array(links.values) {
            if l.retiring {
                // The peer never closed its end of a duplicate link.
                if l.state == .up && now >= l.retiredAt &+ config.handshakeTimeoutNanos { l.fail("retired") }
                settle(l)
                continue
            }
            switch l.state {
            case .connecting, .handshaking:
                if now >= l.opened &+ config.handshakeTimeoutNanos {
                    l.fail("no handshake within \(config.handshakeTimeoutNanos / 1_000_000) ms")
                }
            case .up:
                if now >= l.lastHeard &+ config.deadAfterNanos {
                    l.fail("nothing heard for \(config.deadAfterNanos / 1_000_000) ms: peer dead or unreachable")
                } else if let p = l.peerName, upLinks[p] === l, now >= (lastUsed[p] ?? l.establishedAt) &+ config.idleNanos {
                    if needs?(p) ?? false {
                        lastUsed[p] = now // still needed: look again one idle time later
                    } else {
                        idleCloses += 1
                        l.close(reason: "idle: no QP used the link for \(config.idleNanos / 1_000_000) ms")
                    }
                } else if now >= l.lastSent &+ config.heartbeatNanos {
                    l.send(LinkFrame.Frame(.ping), now: now)
                }
            case .closed: break
            }
            settle(l)
        }
        for (name, at) in redialAt where now >= at {
            redialAt[name] = nil
            guard let p = peers[name], upLinks[name] == nil, !dialing(name), wanted(name, now: now) else { continue }
            dial(p, now: now)
        }
    }

    private func dial(_ p: RouterAddress, now: UInt64) {
        let fd = sluice_net_connect(p.host, p.port)
        guard fd >= 0 else {
            let reason = "connect to \(p.endpoint): \(String(cString: strerror(errno)))"
            lastFailure[p.name] = reason
            if !linkInProgress(p.name) { dropPending(p.name) }
            onEvent?(.down(peer: p.name, address: p.endpoint, reason: reason, authentication: false))
            redialAt[p.name] = now &+ config.redialDelayNanos
            return
        }
        let hs = LinkHandshake(role: .dialer(expecting: p.name), localName: config.name, key: config.key)
        let l = FabricLink(fd: fd, dialed: true, connecting: true, address: p.endpoint, handshake: hs, now: now)
        l.handshakePeer = p.name
        l.watchingWrite = true
        links[fd] = l
        _ = sluice_net_epoll_set(pollFD, fd, UInt64(UInt32(bitPattern: fd)), 1, 1)
    }

    /// The host part of "host:port" or "[v6]:port".
    static func sourceHost(_ address: String) -> String {
        var h = Substring(address)
        if let colon = h.lastIndex(of: ":") { h = h[..<colon] }
        if h.hasPrefix("["), h.hasSuffix("]") { h = h.dropFirst().dropLast() }
        return String(h)
    }

    /// Accepted connections not authenticated yet: from hosts that are
    /// not a listed router's, and from `host`.
    func unauthenticated(from host: String) -> (strangers: Int, fromHost: Int) {
        let routerHosts = Set(peers.values.map(\.host))
        var strangers = 0, fromHost = 0
        for l in links.values where !l.dialed && l.state == .handshaking {
            let h = FabricNode.sourceHost(l.address)
            if !routerHosts.contains(h) { strangers += 1 }
            if h == host { fromHost += 1 }
        }
        return (strangers, fromHost)
    }

    private func acceptAll(now: UInt64) {
        guard listenPausedUntil == nil else { return }
        for _ in 0..<16 {
            var peer = [CChar](repeating: 0, count: 64)
            let fd = sluice_net_accept(listenFD, &peer, Int32(peer.count))
            if fd < 0 {
                let e = errno
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM {
                    // The pending connection stays queued and the listener
                    // stays readable: stop watching it for a while rather
                    // than spin on it.
                    listenPausedUntil = now &+ config.acceptPauseNanos
                    _ = sluice_net_epoll_del(pollFD, listenFD)
                }
                return
            }
            let address = String(cString: peer)
            let host = FabricNode.sourceHost(address)
            let pending = unauthenticated(from: host)
            let fromRouterHost = peers.values.contains { $0.host == host }
            if pending.fromHost >= config.maxUnauthenticatedPerSource
                || (!fromRouterHost && pending.strangers >= config.maxUnauthenticated) {
                Glibc.close(fd)
                shed += 1
                continue
            }
            _ = sluice_net_nodelay(fd)
            let known = peers
            let hs = LinkHandshake(role: .acceptor(admits: { known[$0] != nil }), localName: config.name, key: config.key)
            let l = FabricLink(fd: fd, dialed: false, connecting: false, address: address, handshake: hs, now: now)
            links[fd] = l
            _ = sluice_net_epoll_set(pollFD, fd, UInt64(UInt32(bitPattern: fd)), 0, 1)
        }
    }

    private func deliver(_ e: FabricLink.Event, _ l: FabricLink, now: UInt64) {
        switch e {
        case .established(let peer):
            if let old = upLinks[peer], old !== l {
                let why = "duplicate link: router \(dialsPeer(peer) ? config.name : peer) dialed the one kept"
                if old.dialed != l.dialed && l.dialed != dialsPeer(peer) {
                    // Both sides dialed at once: both keep the link dialed
                    // by the name that sorts first. The old one is kept; a
                    // PING on it makes a stale one (a peer host that
                    // rebooted) fail at once with a reset. The new one
                    // retires: what was sent on it is still read.
                    l.retire(reason: why, now: now)
                    old.send(LinkFrame.Frame(.ping), now: now)
                    settle(old)
                    return
                }
                if old.dialed == l.dialed {
                    // Same direction: the peer restarted (or redialed after
                    // a drop it noticed first).
                    old.close(reason: "replaced by a new link from router \(peer)")
                    reap(old, report: false)
                } else {
                    // The other direction: the tie-break keeps this one.
                    old.retire(reason: why, now: now)
                }
            }
            upLinks[peer] = l
            redialAt[peer] = nil
            refusedInARow[peer] = nil
            lastFailure[peer] = nil
            lastUsed[peer] = max(lastUsed[peer] ?? 0, now)
            onEvent?(.up(peer: peer, address: l.address, dialed: l.dialed))
            flushPending(peer, into: l, now: now)
        case .frame(let f):
            if let peer = l.peerName {
                if f.kind == .data { lastUsed[peer] = now }
                onEvent?(.frame(peer: peer, f))
            }
        case .closed:
            break // reported by reap
        }
    }

    /// Updates the epoll interest, or reaps a closed link.
    private func settle(_ l: FabricLink) {
        if l.state == .closed {
            reap(l)
        } else if l.wantsWrite != l.watchingWrite {
            l.watchingWrite = l.wantsWrite
            _ = sluice_net_epoll_set(pollFD, l.fd, UInt64(UInt32(bitPattern: l.fd)), l.wantsWrite ? 1 : 0, 0)
        }
    }

    private func reap(_ l: FabricLink, report: Bool = true) {
        guard links[l.fd] === l else { return }
        links[l.fd] = nil
        _ = sluice_net_epoll_del(pollFD, l.fd)
        Glibc.close(l.fd)
        let name = l.peerName ?? l.handshakePeer
        var authentication = false
        if case .closed(_, let auth)? = l.takeClosedEvent() { authentication = auth }
        let reason = l.closeReason ?? "closed"
        if let name, upLinks[name] === l { upLinks[name] = nil }
        if authentication { refusals += 1 }
        if let name, report, !l.retiring, !reason.hasPrefix("idle:") { lastFailure[name] = reason }
        if let name, peers[name] != nil, upLinks[name] == nil, !linkInProgress(name) {
            // The frames that waited for this attempt are lost (the QPs'
            // retry timers resend them).
            dropPending(name)
            // A refused handshake will be refused again until an operator
            // fixes a key: back off (doubling, up to 32×) so the audit log
            // does not fill with one refusal a second. Only a link still
            // wanted is dialed again; any side may dial.
            let now = monotonicNanos()
            let factor = authentication ? min((refusedInARow[name] ?? 0) + 1, 5) : 0
            refusedInARow[name] = authentication ? factor : 0
            // (A refused link not wanted now keeps its back-off for the
            // next use.)
            if authentication || wanted(name, now: now) {
                redialAt[name] = now &+ config.redialDelayNanos << UInt64(factor)
            }
        }
        if report && !l.retiring { onEvent?(.down(peer: name, address: l.address, reason: reason, authentication: authentication)) }
    }

    /// Closes every link (router shutdown).
    public func closeAll(reason: String) {
        for l in Array(links.values) {
            l.close(reason: reason)
            reap(l, report: false)
        }
        redialAt = [:]
        for name in Array(pending.keys) { dropPending(name) }
    }

    /// A peer's link state for `sluice status`: "up"; "connecting" (a
    /// link is in its handshake); "down" (no link, but one is wanted: it
    /// is dialed again after a back-off, see `lastFailure`); "idle" (no
    /// link, and nothing needs one).
    public func linkState(_ name: String, now: UInt64 = monotonicNanos()) -> String {
        if upLinks[name] != nil { return "up" }
        if linkInProgress(name) { return "connecting" }
        return wanted(name, now: now) ? "down" : "idle"
    }

    /// For `sluice status`: per peer, the link's state and the last failure.
    public func status() -> [String: Any] {
        var out: [String: Any] = [:]
        let now = monotonicNanos()
        for name in peers.keys.sorted() {
            var p: [String: Any] = ["address": peers[name]!.endpoint, "state": linkState(name, now: now)]
            if let l = upLinks[name] {
                p["upSeconds"] = Double(now &- l.establishedAt) / 1e9
                p["queuedBytes"] = l.queued
                p["direction"] = l.dialed ? "dialed" : "accepted"
            } else if let b = pendingBytes[name] {
                p["pendingBytes"] = b
            }
            if let u = lastUsed[name] { p["idleSeconds"] = Double(now &- min(u, now)) / 1e9 }
            if let f = lastFailure[name] { p["lastFailure"] = f }
            out[name] = p
        }
        return ["name": config.name, "listen": "\(config.listenHost):\(boundPort)", "peers": out, "refusals": refusals,
                "connections": links.count, "shedConnections": shed, "droppedFrames": droppedFrames,
                "idleCloses": idleCloses, "idleSeconds": Double(config.idleNanos) / 1e9]
    }
}
