import Foundation

// Messages between routers on the verbs backend (a NIC carries the RC
// traffic; the routers only connect QPs and hand each other real keys).
// Each travels in a DATA frame of the authenticated fabric link whose
// `stream` is the QPN (virtual) of the receiving router's QP. Real QPNs,
// LIDs, GIDs, PSNs and rkeys appear only here, router to router; no tenant
// can read a fabric frame.

/// "My real QP for virtual QPN `sourceQPN` (address `sourceLID` /
/// `sourceIPv4`, tenant `tenant`), which my tenant moved to RTR towards your
/// virtual QPN `targetQPN`, is real QPN `realQPN` at real LID `realLID`
/// (GID `realGID`), and sends from PSN `sendPSN`." Sent by each side at
/// its tenant's RTR, and again as an answer to a message that shows the
/// peer lacks it (`yourEpoch`).
public struct VerbsConnect: Equatable, Sendable {
    public static let kind: UInt8 = 3
    public var sourceQPN: UInt32
    public var sourceLID: UInt16
    public var sourceIPv4: UInt32
    public var targetQPN: UInt32
    /// Random, drawn at the sender's RTR: names this connection attempt.
    public var epoch: UInt64
    /// The receiver's epoch the sender has applied (0: none yet).
    public var yourEpoch: UInt64
    public var realQPN: UInt32
    public var realLID: UInt16
    public var realGID: [UInt8]
    public var sendPSN: UInt32
    /// The operations (SluicePolicy.OperationSet raw value) the receiver's
    /// QP may post to the sender's, by the sender's copies of both
    /// tenants' policies: the sender's router cannot check SENDs the NIC
    /// delivers, so the requester refuses what the target does not consent to.
    public var operations: UInt32
    public var tenant: String

    public init(sourceQPN: UInt32, sourceLID: UInt16, sourceIPv4: UInt32, targetQPN: UInt32, epoch: UInt64, yourEpoch: UInt64,
                realQPN: UInt32, realLID: UInt16, realGID: [UInt8], sendPSN: UInt32, operations: UInt32, tenant: String) {
        self.sourceQPN = sourceQPN
        self.sourceLID = sourceLID
        self.sourceIPv4 = sourceIPv4
        self.targetQPN = targetQPN
        self.epoch = epoch
        self.yourEpoch = yourEpoch
        self.realQPN = realQPN
        self.realLID = realLID
        self.realGID = realGID.count == 16 ? realGID : [UInt8](repeating: 0, count: 16)
        self.sendPSN = sendPSN
        self.operations = operations
        self.tenant = tenant
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [VerbsConnect.kind, 0, 0, 0]
        b.appendBE(sourceQPN)
        b.appendBE(UInt32(sourceLID))
        b.appendBE(sourceIPv4)
        b.appendBE(targetQPN)
        b.appendBE(epoch)
        b.appendBE(yourEpoch)
        b.appendBE(realQPN)
        b.appendBE(UInt32(realLID))
        b += realGID
        b.appendBE(sendPSN)
        b.appendBE(operations)
        b.appendName(tenant)
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> VerbsConnect {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a verbs connect") }
        _ = try r.u8(); _ = try r.u8(); _ = try r.u8()
        let sq = try r.u32(), slid = try r.u32(), sip = try r.u32(), tq = try r.u32()
        let epoch = try r.u64(), yours = try r.u64()
        let rq = try r.u32(), rlid = try r.u32()
        var gid: [UInt8] = []
        for _ in 0..<16 { gid.append(try r.u8()) }
        let psn = try r.u32(), ops = try r.u32()
        let tenant = try r.name()
        guard slid <= 0xffff, rlid <= 0xffff else { throw LinkError.protocolViolation("LID above 16 bits") }
        guard sq <= 0xff_ffff, tq <= 0xff_ffff, rq <= 0xff_ffff, psn <= 0xff_ffff else {
            throw LinkError.protocolViolation("QPN or PSN above 24 bits")
        }
        guard epoch != 0 else { throw LinkError.protocolViolation("connect without an epoch") }
        guard r.rest().isEmpty else { throw LinkError.protocolViolation("trailing bytes after a verbs connect") }
        return VerbsConnect(sourceQPN: sq, sourceLID: UInt16(slid), sourceIPv4: sip, targetQPN: tq, epoch: epoch, yourEpoch: yours,
                            realQPN: rq, realLID: UInt16(rlid), realGID: gid, sendPSN: psn, operations: ops, tenant: tenant)
    }
}

/// "My QP `sourceQPN` (connected to your QP `targetQPN`) wants to use your
/// tenant's virtual rkey `rkey` for `access` (IBV_ACCESS_REMOTE_*)."
public struct VerbsKeyQuery: Equatable, Sendable {
    public static let kind: UInt8 = 4
    public var sourceQPN: UInt32
    public var sourceLID: UInt16
    public var sourceIPv4: UInt32
    public var targetQPN: UInt32
    public var id: UInt64
    public var rkey: UInt32
    public var access: UInt32
    public var tenant: String

    public init(sourceQPN: UInt32, sourceLID: UInt16, sourceIPv4: UInt32, targetQPN: UInt32, id: UInt64, rkey: UInt32,
                access: UInt32, tenant: String) {
        self.sourceQPN = sourceQPN
        self.sourceLID = sourceLID
        self.sourceIPv4 = sourceIPv4
        self.targetQPN = targetQPN
        self.id = id
        self.rkey = rkey
        self.access = access
        self.tenant = tenant
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [VerbsKeyQuery.kind, 0, 0, 0]
        b.appendBE(sourceQPN)
        b.appendBE(UInt32(sourceLID))
        b.appendBE(sourceIPv4)
        b.appendBE(targetQPN)
        b.appendBE(id)
        b.appendBE(rkey)
        b.appendBE(access)
        b.appendName(tenant)
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> VerbsKeyQuery {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a key query") }
        _ = try r.u8(); _ = try r.u8(); _ = try r.u8()
        let sq = try r.u32(), slid = try r.u32(), sip = try r.u32(), tq = try r.u32(), id = try r.u64()
        let rkey = try r.u32(), access = try r.u32()
        let tenant = try r.name()
        guard slid <= 0xffff else { throw LinkError.protocolViolation("LID above 16 bits") }
        guard sq <= 0xff_ffff, tq <= 0xff_ffff else { throw LinkError.protocolViolation("QPN above 24 bits") }
        guard r.rest().isEmpty else { throw LinkError.protocolViolation("trailing bytes after a key query") }
        return VerbsKeyQuery(sourceQPN: sq, sourceLID: UInt16(slid), sourceIPv4: sip, targetQPN: tq, id: id, rkey: rkey,
                             access: access, tenant: tenant)
    }
}

/// The target router's answer to a key query. Granted: the real rkey, the
/// region's virtual base (iova) and length, the real address the device
/// registered for that base, and the remote access the requester may use
/// (the region's, the QP's and both tenants' consent, intersected).
public struct VerbsKeyAnswer: Equatable, Sendable {
    public static let kind: UInt8 = 5
    public var sourceQPN: UInt32
    public var targetQPN: UInt32
    public var id: UInt64
    public var rkey: UInt32
    public var granted: Bool
    public var access: UInt32
    public var realRkey: UInt32
    public var virtualBase: UInt64
    public var length: UInt64
    public var realBase: UInt64

    public init(sourceQPN: UInt32, targetQPN: UInt32, id: UInt64, rkey: UInt32, granted: Bool, access: UInt32 = 0,
                realRkey: UInt32 = 0, virtualBase: UInt64 = 0, length: UInt64 = 0, realBase: UInt64 = 0) {
        self.sourceQPN = sourceQPN
        self.targetQPN = targetQPN
        self.id = id
        self.rkey = rkey
        self.granted = granted
        self.access = access
        self.realRkey = realRkey
        self.virtualBase = virtualBase
        self.length = length
        self.realBase = realBase
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [VerbsKeyAnswer.kind, granted ? 1 : 0, 0, 0]
        b.appendBE(sourceQPN)
        b.appendBE(targetQPN)
        b.appendBE(id)
        b.appendBE(rkey)
        b.appendBE(access)
        b.appendBE(realRkey)
        b.appendBE(virtualBase)
        b.appendBE(length)
        b.appendBE(realBase)
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> VerbsKeyAnswer {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a key answer") }
        let granted = try r.u8()
        _ = try r.u8(); _ = try r.u8()
        guard granted <= 1 else { throw LinkError.protocolViolation("bad key answer flag") }
        let sq = try r.u32(), tq = try r.u32(), id = try r.u64(), rkey = try r.u32(), access = try r.u32(), real = try r.u32()
        let base = try r.u64(), len = try r.u64(), rbase = try r.u64()
        guard sq <= 0xff_ffff, tq <= 0xff_ffff else { throw LinkError.protocolViolation("QPN above 24 bits") }
        guard r.rest().isEmpty else { throw LinkError.protocolViolation("trailing bytes after a key answer") }
        return VerbsKeyAnswer(sourceQPN: sq, targetQPN: tq, id: id, rkey: rkey, granted: granted == 1, access: access,
                              realRkey: real, virtualBase: base, length: len, realBase: rbase)
    }
}

/// "Forget what I told your QP `targetQPN` about rkey `rkey`": the region
/// was deregistered or re-registered at the target.
public struct VerbsKeyRevoke: Equatable, Sendable {
    public static let kind: UInt8 = 6
    public var sourceQPN: UInt32
    public var targetQPN: UInt32
    public var rkey: UInt32

    public init(sourceQPN: UInt32, targetQPN: UInt32, rkey: UInt32) {
        self.sourceQPN = sourceQPN
        self.targetQPN = targetQPN
        self.rkey = rkey
    }

    public func encode() -> [UInt8] {
        var b: [UInt8] = [VerbsKeyRevoke.kind, 0, 0, 0]
        b.appendBE(sourceQPN)
        b.appendBE(targetQPN)
        b.appendBE(rkey)
        return b
    }

    public static func decode(_ b: [UInt8]) throws -> VerbsKeyRevoke {
        var r = FieldReader(b)
        guard try r.u8() == kind else { throw LinkError.protocolViolation("not a key revocation") }
        _ = try r.u8(); _ = try r.u8(); _ = try r.u8()
        let sq = try r.u32(), tq = try r.u32(), rkey = try r.u32()
        guard sq <= 0xff_ffff, tq <= 0xff_ffff else { throw LinkError.protocolViolation("QPN above 24 bits") }
        guard r.rest().isEmpty else { throw LinkError.protocolViolation("trailing bytes after a key revocation") }
        return VerbsKeyRevoke(sourceQPN: sq, targetQPN: tq, rkey: rkey)
    }
}
