import SluiceWire

/// The hardware side of the verbs backend, as the router's logic needs it:
/// real objects behind opaque handles, real work requests built by the
/// router after every check, real completions. The implementation over
/// libibverbs lives in SluiceVerbsBackend (the only module that links it),
/// so this module, the CLI and the tests never load libibverbs.
///
/// Every value here is real (device-side): real lkeys, rkeys and QPNs never
/// leave the router; tenants see only the virtual ones the router minted.
public protocol RDMADevice: AnyObject {
    var name: String { get }
    /// The port's LID and GID 0 (a QP on this device reaches another on the
    /// same device through them: loopback on a NIC).
    var lid: UInt16 { get }
    var gid: [UInt8] { get }
    var activeMTU: UInt32 { get }

    func allocPD() -> Result<RealHandle, RealError>
    func deallocPD(_ pd: RealHandle)
    /// Registers the router's own mapping of a tenant's memory.
    func regMR(pd: RealHandle, address: UnsafeMutableRawPointer, length: Int, access: UInt32) -> Result<RealMR, RealError>
    func deregMR(_ mr: RealHandle)
    func createCQ(depth: UInt32) -> Result<RealHandle, RealError>
    func destroyCQ(_ cq: RealHandle)
    func createQP(pd: RealHandle, sendCQ: RealHandle, recvCQ: RealHandle, sendDepth: UInt32, recvDepth: UInt32,
                  sendSGE: UInt32, recvSGE: UInt32, inlineBytes: UInt32) -> Result<RealQP, RealError>
    func destroyQP(_ qp: RealHandle)
    /// ibv_modify_qp with IB attribute masks; returns an errno (0 = done).
    func modifyQP(_ qp: RealHandle, _ attributes: RealQPAttributes) -> Int32
    func postSend(_ qp: RealHandle, _ wr: RealSend) -> Int32
    func postRecv(_ qp: RealHandle, _ wr: RealRecv) -> Int32
    /// Up to `max` completions of a real CQ, appended to `into`; the count,
    /// or a negative errno.
    func pollCQ(_ cq: RealHandle, max: Int, into: inout [RealCompletion]) -> Int
    /// The device's asynchronous event fd (non-blocking), which the router
    /// watches, and the next event on it.
    var asyncFD: Int32 { get }
    func nextAsyncEvent() -> RealAsyncEvent
    /// The completion channel every real CQ reports to (non-blocking fd,
    /// watched by the router), arming a CQ for its next completion, and the
    /// CQ of the next event (acknowledged), nil when there is none.
    var completionFD: Int32 { get }
    func armCQ(_ cq: RealHandle) -> Int32
    func nextCompletionEvent() -> RealHandle?
}

public enum RealAsyncEvent {
    case none                   // nothing (more) to read
    case queuePairFailed(UInt32) // a real QP (by real QPN) went to ERR
    case completionQueueFailed(RealHandle) // a real CQ overran or broke (IBV_EVENT_CQ_ERR)
    case deviceFailed(String)   // the device is gone (removed, reset, its router died)
    case other
}

/// An opaque device object (an ibv_pd, ibv_mr, ibv_cq or ibv_qp pointer).
public typealias RealHandle = OpaquePointer

public struct RealError: Error, CustomStringConvertible {
    public let errno: Int32
    public let call: String
    public init(_ call: String, _ errno: Int32) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call) failed (errno \(errno))" }
}

public struct RealMR {
    public let handle: RealHandle
    public let lkey: UInt32
    public let rkey: UInt32
    public init(handle: RealHandle, lkey: UInt32, rkey: UInt32) {
        self.handle = handle
        self.lkey = lkey
        self.rkey = rkey
    }
}

public struct RealQP {
    public let handle: RealHandle
    public let qpn: UInt32
    public init(handle: RealHandle, qpn: UInt32) {
        self.handle = handle
        self.qpn = qpn
    }
}

/// A state transition of a real RC QP. Every value is the router's: the
/// destination (LID/GID of the device, real QPN of the peer's real QP) and
/// the PSNs are set by the router, never taken from a tenant.
public struct RealQPAttributes {
    public enum Target { case reset, initial, readyToReceive, readyToSend, error }
    public var target: Target
    public var accessFlags: UInt32 = 0
    /// Also set the access flags on a transition after RESET->INIT (INIT->INIT,
    /// INIT->RTR, RTR->RTS, RTS->RTS), where IBV_QP_ACCESS_FLAGS is optional.
    public var changesAccessFlags = false
    /// Only the access flags, the QP staying in `target` (INIT->INIT,
    /// RTS->RTS): the state and IBV_QP_ACCESS_FLAGS alone in the mask.
    public var onlyAccessFlags = false
    public var port: UInt8 = 1
    public var pathMTU: UInt32 = 3
    public var destQPN: UInt32 = 0
    public var rqPSN: UInt32 = 0
    public var sqPSN: UInt32 = 0
    public var maxRdAtomic: UInt8 = 1
    public var maxDestRdAtomic: UInt8 = 1
    public var minRNRTimer: UInt8 = 12
    public var timeout: UInt8 = 14
    public var retryCount: UInt8 = 7
    public var rnrRetry: UInt8 = 7
    public var dlid: UInt16 = 0
    /// Set: address the destination by GID (RoCE, or a GRH on IB).
    public var dgid: [UInt8]?
    public init(target: Target) { self.target = target }
}

/// A real scatter/gather element: the router's address and real lkey.
public struct RealSGE {
    public var address: UInt64
    public var length: UInt32
    public var lkey: UInt32
    public init(address: UInt64, length: UInt32, lkey: UInt32) {
        self.address = address
        self.length = length
        self.lkey = lkey
    }
}

public struct RealSend {
    public var wrID: UInt64
    public var opcode: UInt32         // IBV_WR_* (= SLUICE_WR_*)
    public var flags: UInt32          // IBV_SEND_* (= SLUICE_SEND_*); INLINE: from the router's scratch copy
    public var immData: UInt32        // network byte order
    public var sges: [RealSGE]
    public var remoteAddress: UInt64 = 0
    public var rkey: UInt32 = 0       // real
    public var compareAdd: UInt64 = 0
    public var swap: UInt64 = 0
    public init(wrID: UInt64, opcode: UInt32, flags: UInt32, immData: UInt32, sges: [RealSGE]) {
        self.wrID = wrID
        self.opcode = opcode
        self.flags = flags
        self.immData = immData
        self.sges = sges
    }
}

public struct RealRecv {
    public var wrID: UInt64
    public var sges: [RealSGE]
    public init(wrID: UInt64, sges: [RealSGE]) {
        self.wrID = wrID
        self.sges = sges
    }
}

/// A real completion, field for field what ibv_wc says (numbers as
/// libibverbs defines them, which the wire's SLUICE_WC_* values mirror).
public struct RealCompletion: Equatable {
    public var wrID: UInt64 = 0
    public var status: UInt32 = 0
    public var opcode: UInt32 = 0
    public var vendorError: UInt32 = 0
    public var byteLength: UInt32 = 0
    public var immData: UInt32 = 0      // network byte order
    public var qpNum: UInt32 = 0        // real
    public var srcQP: UInt32 = 0        // real
    public var flags: UInt32 = 0        // IBV_WC_GRH, IBV_WC_WITH_IMM, ...
    public var pkeyIndex: UInt16 = 0
    public var slid: UInt16 = 0         // real
    public var sl: UInt8 = 0
    public var dlidPathBits: UInt8 = 0
    public init() {}
}

/// Turns a real completion into the tenant's virtual one. Pure: the caller
/// supplies what the router knows (the virtual QPN of the local QP, and the
/// virtual QPN and LID of its peer). Everything real is replaced or dropped:
/// no real QPN, LID or vendor error code reaches a tenant; a status or
/// opcode the wire does not define becomes GENERAL_ERR (with opcode 0), so
/// a new device or driver cannot make the tenant library misread a
/// completion.
public enum CompletionMapping {
    static let knownStatuses: Set<UInt32> = [
        UInt32(SLUICE_WC_SUCCESS), UInt32(SLUICE_WC_LOC_LEN_ERR), UInt32(SLUICE_WC_LOC_QP_OP_ERR),
        UInt32(SLUICE_WC_LOC_PROT_ERR), UInt32(SLUICE_WC_WR_FLUSH_ERR), UInt32(SLUICE_WC_LOC_ACCESS_ERR),
        UInt32(SLUICE_WC_REM_INV_REQ_ERR), UInt32(SLUICE_WC_REM_ACCESS_ERR), UInt32(SLUICE_WC_REM_OP_ERR),
        UInt32(SLUICE_WC_RETRY_EXC_ERR), UInt32(SLUICE_WC_RNR_RETRY_EXC_ERR), UInt32(SLUICE_WC_GENERAL_ERR),
    ]
    static let knownOpcodes: Set<UInt32> = [
        UInt32(SLUICE_WC_OP_SEND), UInt32(SLUICE_WC_OP_RDMA_WRITE), UInt32(SLUICE_WC_OP_RDMA_READ),
        UInt32(SLUICE_WC_OP_COMP_SWAP), UInt32(SLUICE_WC_OP_FETCH_ADD), UInt32(SLUICE_WC_OP_RECV),
        UInt32(SLUICE_WC_OP_RECV_RDMA_WITH_IMM),
    ]
    static let passedFlags = UInt32(SLUICE_WC_FLAG_GRH | SLUICE_WC_FLAG_WITH_IMM)

    public static func virtualCompletion(_ real: RealCompletion, qpn: UInt32, peerQPN: UInt32, peerLID: UInt16) -> sluice_cqe {
        var c = sluice_cqe()
        c.wr_id = real.wrID
        let ok = knownStatuses.contains(real.status)
        c.status = ok ? real.status : UInt32(SLUICE_WC_GENERAL_ERR)
        // Only an opcode the wire defines passes (libibverbs leaves it
        // undefined on an error completion; the tenant gets 0 then).
        c.opcode = knownOpcodes.contains(real.opcode) ? real.opcode : 0
        if ok && !knownOpcodes.contains(real.opcode) && real.status == UInt32(SLUICE_WC_SUCCESS) {
            c.status = UInt32(SLUICE_WC_GENERAL_ERR)
        }
        c.vendor_err = 0
        c.qp_num = qpn
        guard c.status == UInt32(SLUICE_WC_SUCCESS) else { return c }
        c.byte_len = real.byteLength
        let isRecv = c.opcode & UInt32(SLUICE_WC_OP_RECV) != 0
        c.wc_flags = real.flags & passedFlags
        if c.wc_flags & UInt32(SLUICE_WC_FLAG_WITH_IMM) != 0 { c.imm_data = real.immData }
        if isRecv {
            // Who sent it, in the tenant's (virtual) terms.
            c.src_qp = peerQPN
            c.slid = peerLID
            c.sl = real.sl
        }
        return c
    }
}
