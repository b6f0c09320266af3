#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import SluicePolicy

/// Per-session object table. Handles are indices into this session's own
/// table (plus one, so 0 is never valid): a tenant cannot name an object of
/// another session, because the same number means a slot of its own table.
struct HandleTable<Object: AnyObject> {
    private var slots: [Object?] = []
    private var free: [Int] = []
    private(set) var count = 0

    mutating func insert(_ object: Object) -> UInt32 {
        let index: Int
        if let f = free.popLast() {
            index = f
            slots[index] = object
        } else {
            index = slots.count
            slots.append(object)
        }
        count += 1
        return UInt32(index + 1)
    }

    func lookup(_ handle: UInt32) -> Object? {
        let index = Int(handle) - 1
        guard handle != 0, index < slots.count else { return nil }
        return slots[index]
    }

    @discardableResult
    mutating func remove(_ handle: UInt32) -> Object? {
        guard let o = lookup(handle) else { return nil }
        slots[Int(handle) - 1] = nil
        free.append(Int(handle) - 1)
        count -= 1
        return o
    }

    var all: [Object] { slots.compactMap { $0 } }
}

final class ProtectionDomain {
    var handle: UInt32 = 0
    var users = 0 // MRs and QPs that name it
    /// The device's PD behind it (verbs backend only).
    var real: RealHandle?
}

/// A registered memory region: the router's mapping of the tenant's sealed
/// memfd, and the virtual keys that name it.
final class MemoryRegion {
    var handle: UInt32 = 0
    let pd: ProtectionDomain
    let addr: UInt64      // tenant address of the first byte
    let length: UInt64
    let iova: UInt64      // remote addresses are relative to this
    let access: UInt32
    var lkey: UInt32 = 0
    var rkey: UInt32 = 0
    /// The router's mapping of the covering pages, and where `addr` falls in it.
    var mapping: SharedMapping { didSet { base = mapping.base + pageOffset } }
    var pageOffset: Int { didSet { base = mapping.base + pageOffset } }
    /// The router's address of `addr`: stored, so a work request's bounds
    /// check does not also load the mapping object.
    private(set) var base: UnsafeMutableRawPointer
    /// Set at deregistration: any reference still held (a queued operation)
    /// must fail, never touch memory.
    var dead = false
    /// The device's registration of `mapping` (verbs backend only): real
    /// keys, never shown to a tenant; across hosts, the rkey goes to the
    /// peer router of a connection granted the region (RemoteVerbs.swift).
    var real: RealMR?

    init(pd: ProtectionDomain, addr: UInt64, length: UInt64, iova: UInt64, access: UInt32,
         mapping: SharedMapping, pageOffset: Int) {
        self.pd = pd
        self.addr = addr
        self.length = length
        self.iova = iova
        self.access = access
        self.mapping = mapping
        self.pageOffset = pageOffset
        self.base = mapping.base + pageOffset
    }

    var writable: Bool { access & UInt32(SLUICE_ACCESS_LOCAL_WRITE) != 0 }

    /// Router pointer for tenant address range [a, a+len), if it lies inside
    /// the region. Overflow-safe: no sum of tenant values is formed.
    func local(_ a: UInt64, _ len: UInt64) -> UnsafeMutableRawPointer? {
        guard !dead, a >= addr, len <= length, a - addr <= length - len else { return nil }
        // SAFETY: a - addr + len <= length, and the mapping covers [pageOffset, pageOffset+length).
        return base + Int(a - addr)
    }

    /// Router pointer for a remote access at iova-relative address `a`.
    func remote(_ a: UInt64, _ len: UInt64) -> UnsafeMutableRawPointer? {
        guard !dead, a >= iova, len <= length, a - iova <= length - len else { return nil }
        // SAFETY: as in `local`, bounds checked against the registered length.
        return base + Int(a - iova)
    }
}

/// A completion channel: a pipe whose read end the tenant holds (one byte per
/// event); the router keeps the non-blocking write end, so a tenant that never
/// reads cannot block the router.
final class CompletionChannel {
    var handle: UInt32 = 0
    let writeEnd: Int32
    var users = 0
    init(writeEnd: Int32) { self.writeEnd = writeEnd }
    deinit { Sys.close(writeEnd) }
}

/// A completion queue: the router is the producer of its ring.
final class CompletionQueue {
    var handle: UInt32 = 0
    let capacity: UInt32
    let mapping: SharedMapping
    let channel: CompletionChannel?
    var users = 0 // QPs that complete into it
    /// Router-private producer index: never read back from shared memory.
    var prod: UInt32 = 0
    /// The device's CQ behind it (verbs backend only), and the completions
    /// that arrived from it while the tenant's ring was full.
    var real: RealHandle?
    var waiting: [(cqe: sluice_cqe, solicited: Bool)] = []
    /// The real CQ is armed: its next completion wakes the router.
    var realArmed = false
    /// Verbs backend: entries of the tenant's ring promised to requests
    /// the device holds (signaled sends, receives), so that a completion
    /// the device delivers always has room waiting for it.
    var deviceOwed: UInt32 = 0
    /// Verbs backend: the real CQ's entries the device may write (every
    /// request the router posts is signaled, so one per posted send or
    /// receive not yet polled), at most `realLimit`, and whether the
    /// device reported the real CQ broken (IBV_EVENT_CQ_ERR).
    var realOutstanding: UInt32 = 0
    var realLimit: UInt32 = 0
    var realFailed = false

    /// Free entries nobody has claimed: the ring's space less the
    /// completions that wait for it and those the device owes. On the
    /// software fabric (nothing waits, nothing is owed) this is `space`.
    var room: UInt32 {
        let s = space
        let claimed = UInt64(waiting.count) + UInt64(deviceOwed)
        return UInt64(s) > claimed ? s - UInt32(claimed) : 0
    }

    init(capacity: UInt32, mapping: SharedMapping, channel: CompletionChannel?) {
        self.capacity = capacity
        self.mapping = mapping
        self.channel = channel
    }

    var shared: UnsafeMutablePointer<sluice_cq_shared> {
        mapping.base.assumingMemoryBound(to: sluice_cq_shared.self)
    }

    /// Free entries, trusting the tenant's consumer index only as far as it
    /// is consistent; a corrupt index reads as a full queue.
    var space: UInt32 {
        let cons = sluice_load_acquire(&shared.pointee.ring.cons)
        let used = prod &- cons
        return used > capacity ? 0 : capacity - used
    }

    /// Writes one completion behind any that wait, into the ring when it
    /// has room, else onto `waiting` (moved to the ring as the tenant polls).
    func pushInOrder(_ cqe: sluice_cqe, solicited: Bool) {
        if waiting.isEmpty && space > 0 {
            push(cqe, solicited: solicited)
        } else {
            waiting.append((cqe, solicited))
        }
    }

    /// Writes one completion. Callers check `space` first.
    func push(_ cqe: sluice_cqe, solicited: Bool) {
        let slot = Int(prod & (capacity - 1))
        // SAFETY: slot < capacity; the ring holds `capacity` entries after the header page.
        let p = (mapping.base + Int(sluice_cq_entries_offset())).assumingMemoryBound(to: sluice_cqe.self) + slot
        p.pointee = cqe
        prod &+= 1
        sluice_store_release(&shared.pointee.ring.prod, prod)
        notify(solicited: solicited || cqe.status != UInt32(SLUICE_WC_SUCCESS))
    }

    /// Fires the completion channel if the tenant armed this CQ.
    private func notify(solicited: Bool) {
        guard let channel else { return }
        let armed = sluice_load_acquire(&shared.pointee.armed)
        guard armed == 1 || (armed == 2 && solicited) else { return }
        if sluice_exchange(&shared.pointee.armed, 0) != 0 {
            _ = sluice_fetch_add(&shared.pointee.events, 1)
            Sys.signalByte(channel.writeEnd)
        }
    }
}

/// The connection attributes the router resolved and fixed at RTR/RTS.
struct QPAttributes {
    var accessFlags: UInt32 = 0
    var pkeyIndex: UInt16 = 0
    var port: UInt8 = 1
    var pathMTU: UInt32 = 5
    var destQPN: UInt32 = 0
    var rqPSN: UInt32 = 0
    var sqPSN: UInt32 = 0
    var maxRdAtomic: UInt8 = 0
    var maxDestRdAtomic: UInt8 = 0
    var minRNRTimer: UInt8 = 0
    var timeout: UInt8 = 0
    var retryCount: UInt8 = 0
    var rnrRetry: UInt8 = 0
    var ah = sluice_ah()
}

/// Why a QP's head send request is waiting, and until when.
struct Stall {
    enum Kind { case receiverNotReady, peerNotReady, completionQueueFull, throttled }
    var kind: Kind
    var retryAt: UInt64
    var retriesLeft: Int // -1: infinite
}

final class QueuePair {
    var handle: UInt32 = 0
    let qpn: UInt32
    unowned let session: Session
    let pd: ProtectionDomain
    let sendCQ: CompletionQueue
    let recvCQ: CompletionQueue
    let mapping: SharedMapping
    let layout: sluice_qp_layout
    let sqCapacity: UInt32
    let rqCapacity: UInt32
    let maxSendSGE: UInt32
    let maxRecvSGE: UInt32
    let maxInline: UInt32
    let sqSigAll: Bool

    private(set) var state: QPState = .reset
    var attrs = QPAttributes()
    /// The QP this one is connected to, resolved by the router at RTR.
    /// Strong, like `claimedBy`: a weak reference gives every QP a side
    /// table, and then each retain and release on the data path takes the
    /// runtime's slow path. `Router.destroyQP` breaks both links.
    var peer: QueuePair?
    /// The QP that connected to this one (its `peer` is this QP), so that
    /// no second QP can connect here while it is.
    var claimedBy: QueuePair?
    /// What this QP may post to its peer: both tenants' policies, computed
    /// at connect and on reload, so a work request costs one AND.
    var allowedOperations: OperationSet = []
    /// Many hosts: the QP on another router this one is connected to
    /// (instead of `peer`), resolved at RTR from the cluster directory.
    var remote: RemotePeer?
    /// Verbs backend in a cluster: the real QP's connection to a QP on
    /// another router, and the real keys its router handed out (RemoteVerbs.swift).
    var verbsLink: RemoteVerbsLink?
    var destroyed = false
    /// When a remote access of this QP last failed (key-guessing detector).
    var lastRemoteFault: UInt64?
    var stall: Stall?
    /// The head send request, copied out of the ring once and kept while it
    /// waits (RNR, peer not ready), so a retry executes the same copy.
    var held: sluice_send_wqe?
    /// The held request has passed the shaper (it waits for something else).
    var paid = false
    /// Bytes of the held request already moved (a long one moves in pieces).
    var progress = 0
    /// The tenant's scheduling lane, and this QP's shaper (tenant and QP buckets).
    unowned let lane: TenantLane
    var shaper: RateShaper
    /// Router-private consumer indices.
    var sqCons: UInt32 = 0
    var rqCons: UInt32 = 0
    /// In its lane's active list (the poller looks at it every pass).
    var active = false
    /// When the poller first found it with nothing to do, since it last had work (0: not idle).
    var idleSince: UInt64 = 0
    /// Whether the tenant library hints this QP's posts (its handle has a bit
    /// in the session page); a QP without one is never retired.
    var hinted: Bool { handle >= 1 && handle <= SLUICE_POSTED_QPS }
    /// Verbs backend only: the device's QP, the send PSN the router chose
    /// for it, the requests posted to it and not yet completed (in order,
    /// with whether the tenant asked for a completion), and completions the
    /// router made itself that must wait behind those.
    var real: RealQP?
    var realSendPSN: UInt32 = 0
    /// The PSN its real QP expects from its peer (set at RTR).
    var realRecvPSN: UInt32 = 0
    var inFlight: [(wrID: UInt64, signaled: Bool)] = []
    /// The receives posted to its device QP, oldest first (an RC QP
    /// completes them in that order), by the tenant's wr_id.
    var recvHeld: [UInt64] = []
    var recvInFlight: Int { recvHeld.count }
    var behindInFlight: [sluice_cqe] = []

    init(qpn: UInt32, session: Session, pd: ProtectionDomain, sendCQ: CompletionQueue, recvCQ: CompletionQueue,
         mapping: SharedMapping, layout: sluice_qp_layout, sqCapacity: UInt32, rqCapacity: UInt32,
         maxSendSGE: UInt32, maxRecvSGE: UInt32, maxInline: UInt32, sqSigAll: Bool, lane: TenantLane, shaper: RateShaper) {
        self.lane = lane
        self.shaper = shaper
        self.qpn = qpn
        self.session = session
        self.pd = pd
        self.sendCQ = sendCQ
        self.recvCQ = recvCQ
        self.mapping = mapping
        self.layout = layout
        self.sqCapacity = sqCapacity
        self.rqCapacity = rqCapacity
        self.maxSendSGE = maxSendSGE
        self.maxRecvSGE = maxRecvSGE
        self.maxInline = maxInline
        self.sqSigAll = sqSigAll
        publishState()
    }

    var shared: UnsafeMutablePointer<sluice_qp_shared> {
        mapping.base.assumingMemoryBound(to: sluice_qp_shared.self)
    }

    func setState(_ s: QPState) {
        state = s
        publishState()
    }

    private func publishState() {
        sluice_store_release(&shared.pointee.state, state.rawValue)
    }

    /// Entries the tenant has posted to a ring and the router not yet taken.
    /// A producer index that claims more than the ring holds is corrupt.
    func pending(prod: UInt32, cons: UInt32, capacity: UInt32) -> UInt32? {
        let n = prod &- cons
        return n > capacity ? nil : n
    }

    var sqProd: UInt32 { sluice_load_acquire(&shared.pointee.sq.prod) }
    var rqProd: UInt32 { sluice_load_acquire(&shared.pointee.rq.prod) }

    /// Copies the send request at `index` out of shared memory: the tenant
    /// may change the ring at any moment, so the router reads each entry once.
    func copySendWQE(_ index: UInt32) -> sluice_send_wqe {
        let slot = Int(index & (sqCapacity - 1))
        // SAFETY: slot < sqCapacity, and the layout reserves sqCapacity entries at sq_offset.
        let src = mapping.base + Int(layout.sq_offset) + slot * MemoryLayout<sluice_send_wqe>.stride
        var wqe = sluice_send_wqe()
        withUnsafeMutableBytes(of: &wqe) { $0.copyMemory(from: UnsafeRawBufferPointer(start: src, count: MemoryLayout<sluice_send_wqe>.size)) }
        return wqe
    }

    func copyRecvWQE(_ index: UInt32) -> sluice_recv_wqe {
        let slot = Int(index & (rqCapacity - 1))
        // SAFETY: slot < rqCapacity, and the layout reserves rqCapacity entries at rq_offset.
        let src = mapping.base + Int(layout.rq_offset) + slot * MemoryLayout<sluice_recv_wqe>.stride
        var wqe = sluice_recv_wqe()
        withUnsafeMutableBytes(of: &wqe) { $0.copyMemory(from: UnsafeRawBufferPointer(start: src, count: MemoryLayout<sluice_recv_wqe>.size)) }
        return wqe
    }

    func consumeSend() {
        sqCons &+= 1
        sluice_store_release(&shared.pointee.sq.cons, sqCons)
    }

    func consumeRecv() {
        rqCons &+= 1
        sluice_store_release(&shared.pointee.rq.cons, rqCons)
    }
}

extension sluice_send_wqe {
    func sge(_ i: Int) -> sluice_sge {
        withUnsafeBytes(of: sge) { $0.load(fromByteOffset: i * MemoryLayout<sluice_sge>.stride, as: sluice_sge.self) }
    }
}

extension sluice_recv_wqe {
    func sge(_ i: Int) -> sluice_sge {
        withUnsafeBytes(of: sge) { $0.load(fromByteOffset: i * MemoryLayout<sluice_sge>.stride, as: sluice_sge.self) }
    }
}
