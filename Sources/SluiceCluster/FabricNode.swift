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
/// One connection per router pair: the router whose name sorts first dials
/// (`dialsPeer`), the other accepts; a new authenticated link from a peer
/// replaces an old one (the peer restarted). Links are kept alive with
/// PING every `heartbeat`; a link silent for `deadAfter` is closed, and a
/// dialer dials again after `redialDelay`.
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
    /// longer listed close.
    public func setPeers(_ list: [RouterAddress]) {
        peers = [:]
        for p in list where p.name != config.name { peers[p.name] = p }
        for (name, l) in upLinks where peers[name] == nil {
            l.close(reason: "router \(name) left the cluster directory")
            reap(l)
        }
        let now = monotonicNanos()
        for name in peers.keys where dialsPeer(name) && redialAt[name] == nil && upLinks[name] == nil && !dialing(name) {
            redialAt[name] = now
        }
    }

    /// The router whose name sorts first dials; so a pair has one link.
    public func dialsPeer(_ name: String) -> Bool { config.name < name }

    public func isUp(_ peer: String) -> Bool { upLinks[peer]?.state == .up }

    /// Bytes waiting to be written on the link to `peer` (nil: no link).
    public func queuedBytes(to peer: String) -> Int? { upLinks[peer].map(\.queued) }

    public var connectedPeers: [String] { upLinks.keys.sorted() }

    private func dialing(_ name: String) -> Bool {
        links.values.contains { $0.dialed && $0.handshakePeer == name }
    }

    /// Sends a fabric frame to a peer over its link; false when there is none.
    @discardableResult
    public func send(to peer: String, _ f: LinkFrame.Frame) -> Bool {
        guard let l = upLinks[peer], l.state == .up else { return false }
        let ok = l.send(f, now: monotonicNanos())
        if l.state == .closed { reap(l) }
        return ok
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
            case .up:
                soonest(l.lastSent &+ config.heartbeatNanos)
                soonest(l.lastHeard &+ config.deadAfterNanos)
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
            switch l.state {
            case .connecting, .handshaking:
                if now >= l.opened &+ config.handshakeTimeoutNanos {
                    l.fail("no handshake within \(config.handshakeTimeoutNanos / 1_000_000) ms")
                }
            case .up:
                if now >= l.lastHeard &+ config.deadAfterNanos {
                    l.fail("nothing heard for \(config.deadAfterNanos / 1_000_000) ms: peer dead or unreachable")
                } else if now >= l.lastSent &+ config.heartbeatNanos {
                    l.send(LinkFrame.Frame(.ping), now: now)
                }
            case .closed: break
            }
            settle(l)
        }
        for (name, at) in redialAt where now >= at {
            redialAt[name] = nil
            guard let p = peers[name], upLinks[name] == nil else { continue }
            dial(p, now: now)
        }
    }

    private func dial(_ p: RouterAddress, now: UInt64) {
        let fd = sluice_net_connect(p.host, p.port)
        guard fd >= 0 else {
            let reason = "connect to \(p.endpoint): \(String(cString: strerror(errno)))"
            lastFailure[p.name] = reason
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
                old.close(reason: "replaced by a new link from router \(peer)")
                reap(old, report: false)
            }
            upLinks[peer] = l
            redialAt[peer] = nil
            refusedInARow[peer] = nil
            lastFailure[peer] = nil
            onEvent?(.up(peer: peer, address: l.address, dialed: l.dialed))
        case .frame(let f):
            if let peer = l.peerName { onEvent?(.frame(peer: peer, f)) }
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
        if let name { lastFailure[name] = reason }
        if let name, peers[name] != nil, dialsPeer(name), upLinks[name] == nil {
            // A refused handshake will be refused again until an operator
            // fixes a key: back off (doubling, up to 32×) so the audit log
            // does not fill with one refusal a second.
            let factor = authentication ? min((refusedInARow[name] ?? 0) + 1, 5) : 0
            refusedInARow[name] = authentication ? factor : 0
            redialAt[name] = monotonicNanos() &+ config.redialDelayNanos << UInt64(factor)
        }
        if report { onEvent?(.down(peer: name, address: l.address, reason: reason, authentication: authentication)) }
    }

    /// Closes every link (router shutdown).
    public func closeAll(reason: String) {
        for l in Array(links.values) {
            l.close(reason: reason)
            reap(l, report: false)
        }
        redialAt = [:]
    }

    /// For `sluice status`: per peer, the link's state and the last failure.
    public func status() -> [String: Any] {
        var out: [String: Any] = [:]
        let now = monotonicNanos()
        for name in peers.keys.sorted() {
            var p: [String: Any] = ["address": peers[name]!.endpoint, "dials": dialsPeer(name)]
            if let l = upLinks[name] {
                p["state"] = "up"
                p["upSeconds"] = Double(now &- l.establishedAt) / 1e9
                p["queuedBytes"] = l.queued
            } else {
                p["state"] = links.values.contains { $0.handshakePeer == name || $0.peerName == name } ? "connecting" : "down"
            }
            if let f = lastFailure[name] { p["lastFailure"] = f }
            out[name] = p
        }
        return ["name": config.name, "listen": "\(config.listenHost):\(boundPort)", "peers": out, "refusals": refusals,
                "connections": links.count, "shedConnections": shed]
    }
}
