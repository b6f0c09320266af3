import Foundation

/// What one router asks of another for an RC connection, in a DATA frame
/// whose `stream` is the QPN of the target QP at the receiving router. Up
/// to 16 requests per QP are in flight; ids go up by one per request and
/// the target runs them strictly in id order. A request is retransmitted
/// with the same id after `timeout`, and the target answers a duplicate
/// from its cache instead of running it twice (SEND, atomics are not
/// idempotent). `base` is the requester's oldest request not yet completed
/// when this one was first sent: a target that has run nothing of this
/// connection starts it only with that request, never with a later one
/// whose predecessor was lost.
public struct RemoteRequest: Equatable, Sendable {
    public static let kind: UInt8 = 1
    /// SLUICE_WR_* (= IBV_WR_*).
    public var opcode: UInt32
    public var solicited: Bool
    /// The requester's QPN, its session's LID and virtual IPv4 (the source
    /// the target QP must be connected to).
    public var sourceQPN: UInt32
    public var sourceLID: UInt16
    public var sourceIPv4: UInt32
    public var id: UInt64
    public var base: UInt64
    public var rkey: UInt32
    public var remoteAddress: UInt64
    public var compareAdd: UInt64
    public var swap: UInt64
    /// Network byte order, as the application gave it.
    public var immediate: UInt32
    /// Bytes asked for (READ: to read; atomics: 8); SEND and WRITE carry them.
    public var length: UInt32
    /// The requester's tenant (the sending router's word: it is the only
    /// one that knows; the target checks its own tenant's consent to it).
    public var tenant: String
    public var payload: [UInt8]

    public init(opcode: UInt32, solicited: Bool = false, sourceQPN: UInt32, sourceLID: UInt16, sourceIPv4: UInt32, id: UInt64,
                base: UInt64? = nil, rkey: UInt32 = 0, remoteAddress: UInt64 = 0, compareAdd: UInt64 = 0, swap: UInt64 = 0, immediate: UInt32 = 0,
                length: UInt32, tenant: String, payload: [UInt8] = []) {
        self.opcode = opcode
        self.solicited = solicited
        self.sourceQPN = sourceQPN
        self.sourceLID = sourceLID
        self.sourceIPv4 = sourceIPv4
        self.id = id
        self.base = base ?? id
        self.rkey = rkey
        self.remoteAddress = remoteAddress
        self.compareAdd = compareAdd
        self.swap = swap
        self.immediate = immediate
        self.length = length
        self.tenant = tenant
        self.payload = payload
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [RemoteRequest.kind, UInt8(truncatingIfNeeded: opcode), solicited ? 1 : 0, 0]
        b.reserveCapacity(72 + tenant.utf8.count + payload.count)
        b.appendBE(sourceQPN)
        b.appendBE(UInt32(sourceLID))
        b.appendBE(sourceIPv4)
        b.appendBE(id)
        b.appendBE(base)
        b.appendBE(rkey)
        b.appendBE(remoteAddress)
        b.appendBE(compareAdd)
        b.appendBE(swap)
        b.appendBE(immediate)
        b.appendBE(length)
        b.appendName(tenant)
        b += payload
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> RemoteRequest {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a request") }
        let opcode = UInt32(try r.u8())
        let solicited = try r.u8() != 0
        _ = try r.u8()
        let qpn = try r.u32(), lid = try r.u32(), ip = try r.u32(), id = try r.u64(), base = try r.u64()
        guard lid <= 0xffff else { throw LinkError.protocolViolation("source LID \(lid) above 16 bits") }
        let rkey = try r.u32(), addr = try r.u64(), ca = try r.u64(), sw = try r.u64(), imm = try r.u32(), len = try r.u32()
        let tenant = try r.name()
        let payload = r.rest()
        return RemoteRequest(opcode: opcode, solicited: solicited, sourceQPN: qpn, sourceLID: UInt16(lid), sourceIPv4: ip, id: id,
                             base: base, rkey: rkey, remoteAddress: addr, compareAdd: ca, swap: sw, immediate: imm, length: len,
                             tenant: tenant, payload: payload)
    }
}

/// The target router's answer to a request, in a DATA frame whose `stream`
/// is the requester's QPN.
public struct RemoteResponse: Equatable, Sendable {
    public static let kind: UInt8 = 2

    public enum Status: UInt8, Sendable {
        case ok = 0
        /// No receive request posted: retry after `rnrDelayCode`.
        case receiverNotReady = 1
        /// Key, bounds or access flag: the same status for all three (no oracle).
        case remoteAccessError = 2
        /// Refused by policy, the QP's access flags, alignment, or a message too big for the receive buffers.
        case remoteInvalidRequest = 3
        /// The target QP failed the request (its receive request was broken).
        case remoteOperationError = 4
    }

    public var status: Status
    /// The target QP's min_rnr_timer (IB encoding), for RNR.
    public var rnrDelayCode: UInt8
    /// The QPN that answered, and the request it answers.
    public var sourceQPN: UInt32
    public var id: UInt64
    /// The target QP's tenant.
    public var tenant: String
    /// READ data, or an atomic's original value.
    public var payload: [UInt8]

    public init(status: Status, rnrDelayCode: UInt8 = 0, sourceQPN: UInt32, id: UInt64, tenant: String, payload: [UInt8] = []) {
        self.status = status
        self.rnrDelayCode = rnrDelayCode
        self.sourceQPN = sourceQPN
        self.id = id
        self.tenant = tenant
        self.payload = payload
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [RemoteResponse.kind, status.rawValue, rnrDelayCode, 0]
        b.appendBE(sourceQPN)
        b.appendBE(id)
        b.appendName(tenant)
        b += payload
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> RemoteResponse {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a response") }
        guard let status = Status(rawValue: try r.u8()) else { throw LinkError.protocolViolation("unknown response status") }
        let rnr = try r.u8()
        _ = try r.u8()
        let qpn = try r.u32(), id = try r.u64()
        let tenant = try r.name()
        return RemoteResponse(status: status, rnrDelayCode: rnr & 31, sourceQPN: qpn, id: id, tenant: tenant, payload: r.rest())
    }
}

/// The largest message carried between routers: one request, one frame.
/// (An HCA allows 2 GiB; larger messages would need to be split into
/// chunks interleaved with other QPs' traffic on the link.)
public let maxRemoteMessage = 8 * 1024 * 1024

struct FieldReader {
    let b: [UInt8]
    var i = 0
    init(_ b: [UInt8]) { self.b = b }

    mutating func u8() throws -> UInt8 {
        guard i < b.count else { throw LinkError.protocolViolation("fabric message truncated") }
        defer { i += 1 }
        return b[i]
    }

    mutating func u32() throws -> UInt32 {
        guard b.count - i >= 4 else { throw LinkError.protocolViolation("fabric message truncated") }
        defer { i += 4 }
        return UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
    }

    mutating func u64() throws -> UInt64 {
        let hi = try u32(), lo = try u32()
        return UInt64(hi) << 32 | UInt64(lo)
    }

    mutating func name() throws -> String {
        let n = Int(try u8())
        guard n > 0, n <= LinkHandshake.maxNameLength, b.count - i >= n else { throw LinkError.protocolViolation("bad tenant name") }
        defer { i += n }
        let raw = b[i..<i + n]
        guard raw.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { throw LinkError.protocolViolation("tenant name is not printable ASCII") }
        return String(decoding: raw, as: UTF8.self)
    }

    func rest() -> [UInt8] { Array(b[i...]) }
}
