#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Crypto
import Foundation

/// One TCP connection to a peer router: non-blocking, driven by readiness
/// from the node's epoll. It runs the handshake, then carries tagged frames.
/// Every error closes it with a reason; none is fatal to the router.
public final class FabricLink {
    public enum State: Equatable {
        case connecting, handshaking, up, closed
    }

    public enum Event {
        case established(peer: String)
        case frame(LinkFrame.Frame)
        case closed(reason: String, authentication: Bool)
    }

    public let fd: Int32
    public let dialed: Bool
    /// "host:port" of the other end.
    public let address: String
    public private(set) var state: State
    public var peerName: String? { handshake.peerName }
    public private(set) var closeReason: String?
    var handshake: LinkHandshake
    var decoder = FrameDecoder()
    var encoder = FrameEncoder()
    private var out: [UInt8] = []
    private var outStart = 0
    /// Bytes queued and not yet written; above `maxQueued` the peer is not
    /// reading and the link closes.
    public var queued: Int { out.count - outStart }
    public static let maxQueued = 128 << 20
    /// Monotonic times: opened, last frame received.
    public let opened: UInt64
    public internal(set) var lastHeard: UInt64
    public internal(set) var lastSent: UInt64
    public internal(set) var establishedAt: UInt64 = 0
    private var closedEvent: Event?
    /// The router a dialed link means to reach (known before the handshake).
    var handshakePeer: String?
    /// Whether the node's epoll watches this link for output.
    var watchingWrite = false
    /// A duplicate link on its way out: it sent CLOSE after its last frame
    /// and sends nothing more, but reads on until the peer's CLOSE, so no
    /// frame either side sent on it is lost.
    public private(set) var retiring = false
    var retiredAt: UInt64 = 0

    init(fd: Int32, dialed: Bool, connecting: Bool, address: String, handshake: LinkHandshake, now: UInt64) {
        self.fd = fd
        self.dialed = dialed
        self.address = address
        self.handshake = handshake
        state = connecting ? .connecting : .handshaking
        opened = now
        lastHeard = now
        lastSent = now
        if !connecting && dialed { startHandshake() }
    }

    public var wantsWrite: Bool { state == .connecting || queued > 0 }

    private func startHandshake() {
        state = .handshaking
        for f in handshake.start() { enqueue(f) }
    }

    /// Queues a frame (tagged once the link is up) and writes what it can.
    @discardableResult
    public func send(_ f: LinkFrame.Frame, now: UInt64 = 0) -> Bool {
        guard (state == .up && !retiring) || (state == .handshaking && f.kind.rawValue < LinkFrame.Kind.ping.rawValue) else { return false }
        enqueue(f)
        if now != 0 { lastSent = now }
        flush()
        return state != .closed
    }

    private func enqueue(_ f: LinkFrame.Frame) {
        out += encoder.encode(f)
        if queued > FabricLink.maxQueued { fail("the peer stopped reading (\(queued) bytes queued)") }
    }

    /// Writes queued bytes until the socket would block.
    func flush() {
        while queued > 0 && state != .closed && state != .connecting {
            let n = out[outStart...].withUnsafeBytes { sluice_net_send(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                outStart += n
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { break }
            fail("write: \(n < 0 ? String(cString: strerror(errno)) : "closed")")
            return
        }
        if outStart > 0 && outStart == out.count {
            out.removeAll(keepingCapacity: out.capacity <= 1 << 20)
            outStart = 0
        } else if outStart > 1 << 20 {
            out.removeSubrange(0..<outStart)
            outStart = 0
        }
    }

    func writable(now: UInt64) {
        if state == .connecting {
            let e = sluice_net_connect_error(fd)
            guard e == 0 else {
                fail("connect to \(address): \(String(cString: strerror(e)))")
                return
            }
            _ = sluice_net_nodelay(fd)
            startHandshake()
        }
        flush()
    }

    /// Reads what is there (a bounded amount, so one busy peer cannot hold
    /// the loop) and returns what happened.
    func readable(now: UInt64) -> [Event] {
        var events: [Event] = []
        guard state == .handshaking || state == .up else { return events }
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        for _ in 0..<16 {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { break }
                fail("read: \(String(cString: strerror(errno)))")
                break
            }
            if n == 0 {
                fail(state == .up ? "the peer closed the link" : "the peer closed the connection during the handshake")
                break
            }
            buf.withUnsafeBytes { decoder.feed(UnsafeRawBufferPointer(rebasing: $0.prefix(n))) }
            process(now: now, into: &events)
            if state == .closed { break }
        }
        return events
    }

    private func process(now: UInt64, into events: inout [Event]) {
        while state == .handshaking || state == .up {
            let frame: LinkFrame.Frame?
            do {
                frame = try decoder.next()
            } catch let e as LinkError {
                if case .refusedByPeer = e {} else if state == .handshaking, case .authenticationFailed = e {
                    refuse(e)
                }
                fail("\(e)", authentication: e.isAuthentication)
                return
            } catch {
                fail("\(error)")
                return
            }
            guard let f = frame else { return }
            lastHeard = now
            if state == .handshaking {
                do {
                    switch try handshake.receive(f) {
                    case .send(let frames):
                        frames.forEach(enqueue)
                    case .established(let frames):
                        frames.forEach(enqueue)
                        encoder.key = handshake.sendKey
                        decoder.key = handshake.receiveKey
                        decoder.maxBody = LinkFrame.maxBody
                        state = .up
                        establishedAt = now
                        // The acceptor confirms with its first tagged frame,
                        // so the dialer knows it was admitted.
                        if !dialed { enqueue(LinkFrame.Frame(.pong)) }
                        events.append(.established(peer: handshake.peerName ?? "?"))
                    }
                    flush()
                } catch let e as LinkError {
                    if case .refusedByPeer = e {} else { refuse(e) }
                    fail("\(e)", authentication: e.isAuthentication)
                    return
                } catch {
                    fail("\(error)")
                    return
                }
                continue
            }
            switch f.kind {
            case .ping:
                enqueue(LinkFrame.Frame(.pong, body: Array(f.body.prefix(16))))
                flush()
            case .pong:
                break
            case .close:
                // What we still hold for the peer goes out first (it reads
                // until our CLOSE or the end of the connection).
                flush()
                fail(retiring ? "retired: the peer closed its end too"
                              : "the peer closed the link: \(String(decoding: f.body.prefix(256), as: UTF8.self))")
                return
            case .refused:
                // REFUSED is untagged, so anyone on the path can forge it.
                // It is a refusal of the handshake only for a dialer that has
                // not yet heard the acceptor's first tagged frame (the
                // acceptor may still refuse its AUTH). On a link proven in
                // both directions it is a plain close, which anyone on the
                // path could cause anyway: no refusal, no back-off.
                let text = String(decoding: f.body.prefix(256), as: UTF8.self)
                if dialed && decoder.sequence == 0 {
                    fail("\(LinkError.refusedByPeer(text))", authentication: true)
                } else {
                    fail("the link was closed by an untagged REFUSED frame: \(text)")
                }
                return
            default:
                events.append(.frame(f))
            }
        }
    }

    /// Tells the peer why (untagged: it may not hold our keys), best effort.
    private func refuse(_ e: LinkError) {
        let reason: String
        switch e {
        case .authenticationFailed: reason = "authentication failed"
        default: reason = "\(e)"
        }
        var enc = FrameEncoder()
        let bytes = enc.encode(LinkFrame.Frame(.refused, body: Array(reason.utf8.prefix(200))))
        _ = bytes.withUnsafeBytes { sluice_net_send(fd, $0.baseAddress, $0.count) }
    }

    /// Closes with a reason (idempotent); the node reports it once.
    func fail(_ reason: String, authentication: Bool = false) {
        guard state != .closed else { return }
        state = .closed
        closeReason = reason
        closedEvent = .closed(reason: reason, authentication: authentication)
    }

    func takeClosedEvent() -> Event? {
        defer { closedEvent = nil }
        return closedEvent
    }

    /// Starts retiring a duplicate link (see `retiring`).
    func retire(reason: String, now: UInt64) {
        guard state == .up, !retiring else { return }
        enqueue(LinkFrame.Frame(.close, body: Array(reason.utf8.prefix(200))))
        flush()
        retiring = true
        retiredAt = now
    }

    /// Sends a CLOSE frame if the link is up, then marks it closed.
    func close(reason: String) {
        if state == .up && !retiring {
            enqueue(LinkFrame.Frame(.close, body: Array(reason.utf8.prefix(200))))
            flush()
        }
        fail(reason)
    }
}

extension LinkError {
    var isAuthentication: Bool {
        switch self {
        case .authenticationFailed, .refusedByPeer: return true
        default: return false
        }
    }
}

public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
