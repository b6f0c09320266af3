import Crypto
import Foundation

/// Mutual authentication of two routers holding the same cluster key, by
/// HMAC-SHA256 challenge and response over both sides' fresh nonces:
///
///     dialer   → acceptor  HELLO      name_d, name_a (whom it means to reach), nonce_d
///     acceptor → dialer    CHALLENGE  name_a, nonce_a, HMAC(K, "acceptor" ‖ T)
///     dialer   → acceptor  AUTH       HMAC(K, "dialer" ‖ T)
///
/// where T = len‖name_d ‖ len‖name_a ‖ nonce_d ‖ nonce_a. Each side proves
/// the key over a nonce the other just chose, so a recorded handshake
/// replayed to either side fails; the role label keeps one side's proof
/// from being reflected as the other's. Both then derive one session key
/// per direction, HMAC(K, "dialer->acceptor" ‖ T) and the reverse, that
/// tags every later frame (`FrameDecoder`). A refusal is a REFUSED frame
/// with the reason, then the connection closes.
///
/// The key is shared by every router of the cluster, so a router proves it
/// belongs to the cluster, not which router it is: a router holding the
/// key can claim any name (see SECURITY.md).
public struct LinkHandshake {
    public static let nonceSize = 32
    public static let maxNameLength = 64
    static let protocolLabel = "sluice-fabric/1 "

    public enum Role {
        /// Dials `expecting` (the name the directory gave for the address).
        case dialer(expecting: String)
        /// Accepts routers that `admits` (the directory's router list).
        case acceptor(admits: (String) -> Bool)
    }

    public enum Step {
        case send([LinkFrame.Frame])
        /// Authenticated: send these (maybe none), then tag every frame.
        case established([LinkFrame.Frame])
    }

    let role: Role
    let localName: String
    let key: SymmetricKey
    let nonce: [UInt8]
    private var peerNonce: [UInt8] = []
    public private(set) var peerName: String?
    public private(set) var sendKey: SymmetricKey?
    public private(set) var receiveKey: SymmetricKey?
    private var state = 0 // dialer: 0 start, 1 hello sent, 2 done; acceptor: 0 waiting hello, 1 challenge sent, 2 done

    public init(role: Role, localName: String, key: SymmetricKey, nonce: [UInt8]? = nil) {
        self.role = role
        self.localName = localName
        self.key = key
        if let nonce {
            self.nonce = nonce
        } else {
            var rng = SystemRandomNumberGenerator()
            self.nonce = (0..<LinkHandshake.nonceSize).map { _ in UInt8.random(in: 0...255, using: &rng) }
        }
    }

    public var isEstablished: Bool { state == 2 }

    /// The dialer's first frame.
    public mutating func start() -> [LinkFrame.Frame] {
        guard case .dialer(let expecting) = role, state == 0 else { return [] }
        state = 1
        var body: [UInt8] = []
        body.appendName(localName)
        body.appendName(expecting)
        body += nonce
        return [LinkFrame.Frame(.hello, body: body)]
    }

    public mutating func receive(_ f: LinkFrame.Frame) throws -> Step {
        if f.kind == .refused {
            throw LinkError.refusedByPeer(String(decoding: f.body.prefix(256), as: UTF8.self))
        }
        switch (role, state, f.kind) {
        case (.acceptor(let admits), 0, .hello):
            var r = Reader(f.body)
            let dialer = try r.name(), wanted = try r.name()
            let n = try r.bytes(LinkHandshake.nonceSize)
            try r.end()
            guard wanted == localName else {
                throw LinkError.authenticationFailed("the dialer wants router \"\(wanted)\"; this is \"\(localName)\"")
            }
            guard dialer != localName else {
                throw LinkError.authenticationFailed("the dialer claims this router's own name \"\(dialer)\"")
            }
            guard admits(dialer) else {
                throw LinkError.authenticationFailed("router \"\(dialer)\" is not in the cluster directory")
            }
            peerName = dialer
            peerNonce = n
            state = 1
            var body: [UInt8] = []
            body.appendName(localName)
            body += nonce
            body += proof("acceptor")
            return .send([LinkFrame.Frame(.challenge, body: body)])
        case (.dialer(let expecting), 1, .challenge):
            var r = Reader(f.body)
            let acceptor = try r.name()
            let n = try r.bytes(LinkHandshake.nonceSize)
            let mac = try r.bytes(32)
            try r.end()
            guard acceptor == expecting else {
                throw LinkError.authenticationFailed("expected router \"\(expecting)\", the peer says it is \"\(acceptor)\"")
            }
            peerName = acceptor
            peerNonce = n
            guard n != nonce else { throw LinkError.authenticationFailed("the peer echoed this router's nonce (reflection)") }
            guard constantTimeEqual(mac, proof("acceptor")) else {
                throw LinkError.authenticationFailed("the peer does not hold the cluster key")
            }
            state = 2
            deriveKeys()
            return .established([LinkFrame.Frame(.auth, body: proof("dialer"))])
        case (.acceptor, 1, .auth):
            guard f.body.count == 32 else { throw LinkError.protocolViolation("AUTH body of \(f.body.count) bytes, not 32") }
            guard constantTimeEqual(f.body, proof("dialer")) else {
                throw LinkError.authenticationFailed("the peer does not hold the cluster key (or replayed an old handshake)")
            }
            state = 2
            deriveKeys()
            return .established([])
        default:
            throw LinkError.protocolViolation("unexpected \(f.kind) frame during the handshake")
        }
    }

    /// Who dialed and who accepted, in the transcript's order.
    private var names: (dialer: String, acceptor: String) {
        switch role {
        case .dialer: return (localName, peerName ?? "")
        case .acceptor: return (peerName ?? "", localName)
        }
    }

    private var transcript: [UInt8] {
        var t: [UInt8] = []
        t.appendName(names.dialer)
        t.appendName(names.acceptor)
        switch role {
        case .dialer: t += nonce + peerNonce
        case .acceptor: t += peerNonce + nonce
        }
        return t
    }

    private func mac(_ label: String) -> [UInt8] {
        var h = HMAC<SHA256>(key: key)
        h.update(data: Array((LinkHandshake.protocolLabel + label).utf8) + [0])
        h.update(data: transcript)
        return Array(h.finalize())
    }

    private func proof(_ label: String) -> [UInt8] { mac(label) }

    private mutating func deriveKeys() {
        let d2a = SymmetricKey(data: mac("key dialer->acceptor"))
        let a2d = SymmetricKey(data: mac("key acceptor->dialer"))
        switch role {
        case .dialer: (sendKey, receiveKey) = (d2a, a2d)
        case .acceptor: (sendKey, receiveKey) = (a2d, d2a)
        }
    }

    /// Handshake body reader: every field length-checked.
    struct Reader {
        let b: [UInt8]
        var i = 0
        init(_ b: [UInt8]) { self.b = b }

        mutating func bytes(_ n: Int) throws -> [UInt8] {
            guard b.count - i >= n else { throw LinkError.protocolViolation("handshake message truncated") }
            defer { i += n }
            return Array(b[i..<i + n])
        }

        mutating func name() throws -> String {
            let n = Int(try bytes(1)[0])
            guard n > 0, n <= LinkHandshake.maxNameLength else {
                throw LinkError.protocolViolation("router name of \(n) bytes (1...\(LinkHandshake.maxNameLength))")
            }
            let raw = try bytes(n)
            guard raw.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
                throw LinkError.protocolViolation("router name is not printable ASCII")
            }
            return String(decoding: raw, as: UTF8.self)
        }

        func end() throws {
            guard i == b.count else { throw LinkError.protocolViolation("\(b.count - i) stray bytes after a handshake message") }
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendName(_ s: String) {
        let u = Array(s.utf8.prefix(LinkHandshake.maxNameLength))
        append(UInt8(u.count))
        append(contentsOf: u)
    }
}

/// The cluster key file: at least 32 bytes, readable by its owner only
/// (as the audit key). Trailing newlines are part of the key, as written.
public enum ClusterKey {
    public static func load(path: String) throws -> SymmetricKey {
        var st = stat()
        guard stat(path, &st) == 0 else { throw ClusterKeyError("cannot read the cluster key \(path): \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw ClusterKeyError("the cluster key \(path) is readable by others (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterKeyError("cannot read the cluster key \(path)")
        }
        guard data.count >= 32 else {
            throw ClusterKeyError("the cluster key \(path) holds \(data.count) bytes; at least 32 are needed (head -c 32 /dev/urandom)")
        }
        return SymmetricKey(data: data)
    }
}

public struct ClusterKeyError: Error, CustomStringConvertible {
    public let description: String
    init(_ s: String) { description = s }
}
