import Crypto
import Foundation

/// The router-to-router link's framing. Every frame is a 16-byte header,
/// big-endian, then `length` bytes of body, then — once the handshake has
/// authenticated the link — a 16-byte tag:
///
///     0      4        5     6         8        12       16
///     magic  version  type  reserved  length   stream   body…  [tag]
///     "SLFL" 1        …     0         ≤ max    QPN or 0
///
/// The tag is HMAC-SHA256, truncated to 128 bits, under the link's session
/// key over the frame's sequence number in its direction (64 bits, implicit:
/// never sent) then the header and body. So a frame cannot be injected,
/// changed, dropped, reordered or replayed without the next tag failing.
/// A decoder rejects, before it allocates anything, a bad magic, an unknown
/// version, a non-zero reserved field, an unknown type and a length above
/// its limit (the limit is small until the peer is authenticated).
public enum LinkFrame {
    public static let magic: UInt32 = 0x534C_464C // "SLFL"
    public static let version: UInt8 = 1
    public static let headerSize = 16
    public static let tagSize = 16
    /// The largest body an authenticated peer may send: one message between
    /// hosts (`maxRemoteMessage`, 8 MiB) and its request's fields. A link
    /// buffers at most one such frame.
    public static let maxBody = 8 * 1024 * 1024 + 1024
    /// Before authentication: enough for any handshake message.
    public static let maxHandshakeBody = 512

    public enum Kind: UInt8, CaseIterable, Sendable {
        // Handshake (untagged).
        case hello = 1, challenge = 2, auth = 3, refused = 4
        // Link control (tagged).
        case ping = 16, pong = 17, close = 18
        // Fabric traffic (tagged): carried per QP in `stream`; its bodies
        // belong to the fabric, not to the link.
        case data = 32
    }

    public struct Header: Equatable, Sendable {
        public var kind: Kind
        public var length: UInt32
        public var stream: UInt32

        public init(kind: Kind, length: UInt32, stream: UInt32 = 0) {
            self.kind = kind
            self.length = length
            self.stream = stream
        }
    }

    public struct Frame: Equatable, Sendable {
        public var kind: Kind
        public var stream: UInt32
        public var body: [UInt8]

        public init(_ kind: Kind, stream: UInt32 = 0, body: [UInt8] = []) {
            self.kind = kind
            self.stream = stream
            self.body = body
        }
    }

    public static func encodeHeader(_ h: Header) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(headerSize)
        out.appendBE(magic)
        out.append(version)
        out.append(h.kind.rawValue)
        out.append(0)
        out.append(0)
        out.appendBE(h.length)
        out.appendBE(h.stream)
        return out
    }

    /// Checks a header; throws the reason the link closes.
    public static func decodeHeader(_ b: ArraySlice<UInt8>, maxBody: Int) throws -> Header {
        precondition(b.count >= headerSize)
        let s = b.startIndex
        let m = b.readBE32(at: s)
        guard m == magic else {
            throw LinkError.protocolViolation("bad magic 0x\(String(m, radix: 16)) (not a Sluice fabric link)")
        }
        guard b[s + 4] == version else {
            throw LinkError.protocolViolation("unsupported version \(b[s + 4]) (this router speaks \(version))")
        }
        guard let kind = Kind(rawValue: b[s + 5]) else {
            throw LinkError.protocolViolation("unknown frame type \(b[s + 5])")
        }
        guard b[s + 6] == 0, b[s + 7] == 0 else {
            throw LinkError.protocolViolation("reserved header bytes are not zero")
        }
        let length = b.readBE32(at: s + 8)
        guard length <= maxBody else {
            throw LinkError.protocolViolation("frame length \(length) exceeds the limit of \(maxBody)")
        }
        return Header(kind: kind, length: length, stream: b.readBE32(at: s + 12))
    }

    /// The 128-bit tag of a frame: HMAC-SHA256(key, seq ‖ header ‖ body).
    public static func tag(key: SymmetricKey, sequence: UInt64, header: [UInt8], body: ArraySlice<UInt8>) -> [UInt8] {
        var mac = HMAC<SHA256>(key: key)
        var seq = [UInt8]()
        seq.appendBE(sequence)
        mac.update(data: seq)
        mac.update(data: header)
        body.withUnsafeBytes { mac.update(data: $0) }
        return Array(Array(mac.finalize()).prefix(tagSize))
    }
}

public enum LinkError: Error, Equatable, CustomStringConvertible {
    /// The peer broke the protocol: the link closes, nothing else happens.
    case protocolViolation(String)
    /// The peer does not hold the cluster key, or replayed a handshake.
    case authenticationFailed(String)
    /// The peer refused us, with its reason.
    case refusedByPeer(String)
    /// The socket failed or closed.
    case io(String)

    public var description: String {
        switch self {
        case .protocolViolation(let s): return "protocol violation: \(s)"
        case .authenticationFailed(let s): return "authentication failed: \(s)"
        case .refusedByPeer(let s): return "refused by the peer: \(s)"
        case .io(let s): return s
        }
    }
}

/// Splits a byte stream into frames, checking each header before it waits
/// for (or buffers) the body, and each tag once the link is authenticated.
public struct FrameDecoder {
    private var buffer: [UInt8] = []
    private var start = 0
    /// Limits before and after authentication.
    public var maxBody: Int = LinkFrame.maxHandshakeBody
    /// Set once the handshake derived it: from then on every frame is tagged.
    public var key: SymmetricKey?
    public private(set) var sequence: UInt64 = 0
    /// Set after the first error: the decoder takes nothing more.
    public private(set) var failed: LinkError?

    public init() {}

    public var buffered: Int { buffer.count - start }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        guard failed == nil else { return }
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    /// The next complete frame, nil if more bytes are needed; throws (and
    /// stays failed) on the first bad frame.
    public mutating func next() throws -> LinkFrame.Frame? {
        if let f = failed { throw f }
        do {
            guard buffered >= LinkFrame.headerSize else { return nil }
            let headerBytes = buffer[start..<start + LinkFrame.headerSize]
            let h = try LinkFrame.decodeHeader(headerBytes, maxBody: maxBody)
            if key == nil, h.kind.rawValue >= LinkFrame.Kind.ping.rawValue {
                throw LinkError.protocolViolation("\(h.kind) frame before the handshake completed")
            }
            // A refusal is never tagged: the side that sends it may not
            // hold the keys. It can only close the link, which anyone on the
            // path could do anyway.
            if key != nil, h.kind.rawValue < LinkFrame.Kind.ping.rawValue, h.kind != .refused {
                throw LinkError.protocolViolation("handshake frame (\(h.kind)) on an authenticated link")
            }
            let tagged = key != nil && h.kind != .refused
            let tagBytes = tagged ? LinkFrame.tagSize : 0
            let total = LinkFrame.headerSize + Int(h.length) + tagBytes
            guard buffered >= total else { return nil }
            let bodyStart = start + LinkFrame.headerSize
            let body = buffer[bodyStart..<bodyStart + Int(h.length)]
            if tagged, let key {
                let want = LinkFrame.tag(key: key, sequence: sequence, header: Array(headerBytes), body: body)
                let got = buffer[bodyStart + Int(h.length)..<start + total]
                guard constantTimeEqual(want, got) else {
                    throw LinkError.authenticationFailed("frame \(sequence) carries a wrong tag (changed, injected or replayed)")
                }
                sequence &+= 1
            }
            let frame = LinkFrame.Frame(h.kind, stream: h.stream, body: Array(body))
            start += total
            if start > 1 << 20 && start * 2 > buffer.count {
                buffer.removeSubrange(0..<start)
                start = 0
            }
            return frame
        } catch let e as LinkError {
            failed = e
            buffer = []
            start = 0
            throw e
        }
    }
}

/// Builds outgoing frames, tagging them once a key is set.
public struct FrameEncoder {
    public var key: SymmetricKey?
    public private(set) var sequence: UInt64 = 0

    public init() {}

    public mutating func encode(_ f: LinkFrame.Frame) -> [UInt8] {
        precondition(f.body.count <= LinkFrame.maxBody, "a frame body above the link's limit")
        let header = LinkFrame.encodeHeader(.init(kind: f.kind, length: UInt32(f.body.count), stream: f.stream))
        var out = header + f.body
        if let key {
            out += LinkFrame.tag(key: key, sequence: sequence, header: header, body: f.body[...])
            sequence &+= 1
        }
        return out
    }
}

func constantTimeEqual<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool where A.Element == UInt8, B.Element == UInt8 {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for (x, y) in zip(a, b) { diff |= x ^ y }
    return diff == 0
}

extension Array where Element == UInt8 {
    mutating func appendBE(_ v: UInt32) {
        append(UInt8(v >> 24)); append(UInt8((v >> 16) & 0xff)); append(UInt8((v >> 8) & 0xff)); append(UInt8(v & 0xff))
    }

    mutating func appendBE(_ v: UInt64) {
        appendBE(UInt32(v >> 32))
        appendBE(UInt32(v & 0xffff_ffff))
    }

    mutating func appendBE(_ v: UInt16) {
        append(UInt8(v >> 8)); append(UInt8(v & 0xff))
    }
}

extension ArraySlice where Element == UInt8 {
    func readBE32(at i: Int) -> UInt32 {
        UInt32(self[i]) << 24 | UInt32(self[i + 1]) << 16 | UInt32(self[i + 2]) << 8 | UInt32(self[i + 3])
    }
}
