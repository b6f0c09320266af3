#if canImport(Glibc)
import Glibc
#endif
import SluiceWire

/// The verbs backend: every tenant object has a real one on the device, and
/// every work request, once the router has checked and translated it
/// exactly as for the software fabric (`SoftwareFabric.execute`), is posted
/// on the real QP with the real keys of the router's own mappings. Real
/// completions come back through `pollCompletions` and are turned into the
/// tenant's virtual ones (`CompletionMapping`).
///
/// On one host the router connects two of its real QPs to each other
/// (loopback on the device), after resolving both ends itself; it chooses
/// every PSN. A SEND's receive is matched by the router (as on the software
/// fabric: its buffers are checked in the receiver's PD first) and posted
/// on the receiver's real QP just before the SEND, so the device always
/// finds exactly that receive.
public final class VerbsBackend {
    let device: RDMADevice
    /// Real QPN -> the tenant's QP, for completions.
    private var qpsByRealNumber: [UInt32: QueuePair] = [:]
    /// CQs with a real CQ, polled for completions.
    private var cqs: [ObjectIdentifier: CompletionQueue] = [:]
    private var polled: [RealCompletion] = []
    /// The device failed as a whole (pollCQ reported an error).
    private(set) var lost: String?
    /// Real MRs a re-registration (REMAP_MR) replaced, with the router's
    /// mapping they cover, each kept until the requests that may use it and
    /// that the device held then have completed: per QP, how many of its
    /// sends and receives on the device are still to come. A NIC fails a
    /// request whose MR is deregistered under it.
    private var replaced: [(mr: RealHandle, mapping: SharedMapping, pd: ProtectionDomain,
                            waits: [(qp: QueuePair, sends: Int, recvs: Int)])] = []

    init(device: RDMADevice) {
        self.device = device
        polled.reserveCapacity(32)
    }

    /// Whether the device holds requests whose completions have not come.
    var busy: Bool { qpsByRealNumber.values.contains { !$0.inFlight.isEmpty || $0.recvInFlight > 0 } }

    /// Whether completions wait for room in a tenant's ring. Only the
    /// router moves them there, and a tenant polling its CQ rings no
    /// doorbell: the router must look again soon even when the device
    /// holds nothing (else they would wait for the next unrelated event).
    var completionsWaiting: Bool { cqs.values.contains { !$0.waiting.isEmpty } }

    func refusal(_ e: RealError) -> Refusal {
        // A device that is gone answers everything with EIO, as libibverbs
        // does for a removed device.
        if let lost { return Refusal(EIO, "the device failed: \(lost)", rule: "device") }
        return Refusal(e.errno == 0 ? EIO : e.errno, "the device refused: \(e.call) failed: \(String(cString: strerror(e.errno)))", rule: "device")
    }

    // MARK: objects

    func allocPD(_ pd: ProtectionDomain) throws {
        if lost != nil { throw refusal(RealError("ibv_alloc_pd", EIO)) }
        switch device.allocPD() {
        case .success(let h): pd.real = h
        case .failure(let e): throw refusal(e)
        }
    }

    func deallocPD(_ pd: ProtectionDomain) {
        // Its replaced MRs go first (the device refuses to free a PD with
        // MRs); whatever still used them failed with the session.
        replaced.removeAll { e in
            guard e.pd === pd else { return false }
            device.deregMR(e.mr)
            return true
        }
        if let h = pd.real { device.deallocPD(h) }
        pd.real = nil
    }

    /// Registers the router's mapping of the region with exactly the access
    /// the policy allowed for it.
    func regMR(_ mr: MemoryRegion) throws {
        if lost != nil { throw refusal(RealError("ibv_reg_mr", EIO)) }
        guard let pd = mr.pd.real else { throw Refusal(EIO, "protection domain has no device PD", rule: "device") }
        let access = mr.access & UInt32(SLUICE_ACCESS_LOCAL_WRITE | SLUICE_ACCESS_REMOTE_WRITE | SLUICE_ACCESS_REMOTE_READ
            | SLUICE_ACCESS_REMOTE_ATOMIC)
        switch device.regMR(pd: pd, address: mr.base, length: Int(mr.length), access: access) {
        case .success(let r): mr.real = r
        case .failure(let e): throw refusal(e)
        }
    }

    func deregMR(_ mr: MemoryRegion) {
        if let r = mr.real { device.deregMR(r.handle) }
        mr.real = nil
    }

    /// A re-registration replaced `old` (the registration of `mapping`):
    /// it is deregistered once the sends and receives the device holds now
    /// on the QPs that may use it (in its PD, or connected to one there)
    /// have completed, and at once if there are none.
    func replaced(_ old: RealMR, mapping: SharedMapping, of mr: MemoryRegion) {
        var waits: [(qp: QueuePair, sends: Int, recvs: Int)] = []
        for qp in qpsByRealNumber.values where qp.pd === mr.pd || qp.peer?.pd === mr.pd {
            if !qp.inFlight.isEmpty || !qp.recvHeld.isEmpty { waits.append((qp, qp.inFlight.count, qp.recvHeld.count)) }
        }
        if waits.isEmpty || lost != nil {
            device.deregMR(old.handle)
        } else {
            replaced.append((old.handle, mapping, mr.pd, waits))
        }
    }

    /// One of `qp`'s sends or receives on the device completed (or was
    /// forgotten): replaced MRs nothing waits for any more are deregistered.
    private func heldCompleted(_ qp: QueuePair, recv: Bool) {
        for i in replaced.indices {
            for j in replaced[i].waits.indices where replaced[i].waits[j].qp === qp {
                if recv {
                    replaced[i].waits[j].recvs = max(replaced[i].waits[j].recvs - 1, 0)
                } else {
                    replaced[i].waits[j].sends = max(replaced[i].waits[j].sends - 1, 0)
                }
            }
            replaced[i].waits.removeAll { $0.sends == 0 && $0.recvs == 0 }
        }
        replaced.removeAll { e in
            guard e.waits.isEmpty else { return false }
            device.deregMR(e.mr)
            return true
        }
    }

    /// The real CQ. Every request the router posts is signaled (the
    /// router needs each completion to keep order), so the real CQ takes
    /// one entry per posted send and receive whatever the tenant asked
    /// for; QPs are created after their CQ, so their depths are not known
    /// here. The router therefore never lets the device hold more than
    /// `realLimit` unpolled entries (a request beyond it waits at the head
    /// of its send queue), and sizes the real CQ at twice that: the other
    /// half absorbs completions of QPs destroyed or reset since the last
    /// poll, whose entries the router has stopped counting. A NIC whose
    /// CQ overran would report IBV_EVENT_CQ_ERR and stop.
    func createCQ(_ cq: CompletionQueue) throws {
        if lost != nil { throw refusal(RealError("ibv_create_cq", EIO)) }
        var result = device.createCQ(depth: cq.capacity * 2)
        var limit = cq.capacity
        if case .failure = result {
            // The device's limit (max_cqe): half the tenant's depth in flight.
            result = device.createCQ(depth: cq.capacity)
            limit = max(cq.capacity / 2, 1)
        }
        switch result {
        case .success(let h):
            cq.real = h
            cq.realLimit = limit
            cq.realOutstanding = 0
            cqs[ObjectIdentifier(cq)] = cq
        case .failure(let e): throw refusal(e)
        }
    }

    func destroyCQ(_ cq: CompletionQueue) {
        if let h = cq.real { device.destroyCQ(h) }
        cq.real = nil
        cqs[ObjectIdentifier(cq)] = nil
    }

    func createQP(_ qp: QueuePair, sendSGE: UInt32, recvSGE: UInt32) throws {
        if lost != nil { throw refusal(RealError("ibv_create_qp", EIO)) }
        guard let pd = qp.pd.real, let scq = qp.sendCQ.real, let rcq = qp.recvCQ.real else {
            throw Refusal(EIO, "the QP's PD or CQs have no device objects", rule: "device")
        }
        switch device.createQP(pd: pd, sendCQ: scq, recvCQ: rcq, sendDepth: qp.sqCapacity, recvDepth: qp.rqCapacity,
                               sendSGE: sendSGE, recvSGE: recvSGE, inlineBytes: qp.maxInline) {
        case .success(let r):
            qp.real = r
            qpsByRealNumber[r.qpn] = qp
        case .failure(let e): throw refusal(e)
        }
    }

    func destroyQP(_ qp: QueuePair) {
        if let r = qp.real {
            device.destroyQP(r.handle)
            qpsByRealNumber[r.qpn] = nil
        }
        qp.real = nil
        forgetInFlight(qp)
    }

    /// Moves the real QP along with the tenant's, before the router commits
    /// the tenant's transition: a device refusal refuses the verb. The
    /// destination is the peer's real QP on this device; PSNs are the
    /// router's. Access flags changed after RESET->INIT (INIT->INIT,
    /// INIT->RTR, RTR->RTS, RTS->RTS) reach the device too, so that the NIC
    /// enforces what the router does (`qp.attrs` still holds the old ones).
    func modifyQP(_ qp: QueuePair, to target: QPState, attrs: QPAttributes, peer: QueuePair?) throws {
        guard let r = qp.real else { return }
        let accessChanged = qp.state != .reset && attrs.accessFlags != qp.attrs.accessFlags
        if target == qp.state {
            guard accessChanged, target == .initialized || target == .rts else { return }
            var a = RealQPAttributes(target: target == .rts ? .readyToSend : .initial)
            a.accessFlags = attrs.accessFlags
            a.onlyAccessFlags = true
            let rc = device.modifyQP(r.handle, a)
            guard rc == 0 else { throw refusal(RealError("ibv_modify_qp", rc)) }
            return
        }
        var a: RealQPAttributes
        switch target {
        case .reset: a = RealQPAttributes(target: .reset)
        case .error: a = RealQPAttributes(target: .error)
        case .initialized:
            a = RealQPAttributes(target: .initial)
            a.accessFlags = attrs.accessFlags
        case .rtr:
            guard let peer, let pr = peer.real else {
                throw Refusal(EINVAL, "the peer QP has no device QP", rule: "device")
            }
            a = RealQPAttributes(target: .readyToReceive)
            a.pathMTU = min(attrs.pathMTU, device.activeMTU)
            a.destQPN = pr.qpn
            a.rqPSN = VerbsBackend.receivePSN(qp, from: peer)
            a.maxDestRdAtomic = max(attrs.maxDestRdAtomic, 1)
            a.minRNRTimer = attrs.minRNRTimer
            a.dlid = device.lid
            // No LID (RoCE): address by the port's GID.
            if device.lid == 0 { a.dgid = device.gid }
        case .rts:
            a = RealQPAttributes(target: .readyToSend)
            a.sqPSN = qp.peer.map { VerbsBackend.sendPSN(qp, to: $0) } ?? VerbsBackend.freshPSN()
            a.timeout = attrs.timeout
            a.retryCount = attrs.retryCount
            a.rnrRetry = attrs.rnrRetry
            a.maxRdAtomic = max(attrs.maxRdAtomic, 1)
        default:
            return
        }
        if accessChanged && (target == .rtr || target == .rts) {
            a.accessFlags = attrs.accessFlags
            a.changesAccessFlags = true
        }
        let rc = device.modifyQP(r.handle, a)
        guard rc == 0 else { throw refusal(RealError("ibv_modify_qp", rc)) }
        switch target {
        case .rtr: qp.realRecvPSN = a.rqPSN
        case .rts: qp.realSendPSN = a.sqPSN
        default: break
        }
    }

    // MARK: PSNs

    /// The router chooses every PSN, afresh for each connection: a QP
    /// reset and connected again must not start where the old connection
    /// did, or its peer could take the new packets for duplicates of the
    /// old ones (and a reconnect's PSNs would be predictable). One
    /// direction's PSN is drawn by whichever end moves first: the
    /// receiver at RTR, or the sender at RTS; the other end uses it.
    static func freshPSN() -> UInt32 { UInt32.random(in: 0...0xff_ffff) }

    /// The PSN `qp` (going to RTR) expects from `peer`: the one `peer`
    /// already sends with if it is at RTS towards `qp`, else a new one.
    static func receivePSN(_ qp: QueuePair, from peer: QueuePair) -> UInt32 {
        if peer.state == .rts, peer.peer === qp { return peer.realSendPSN }
        return freshPSN()
    }

    /// The PSN `qp` (going to RTS) sends with to `peer`: the one `peer`
    /// expects if it is already at RTR or RTS towards `qp`, else a new one.
    static func sendPSN(_ qp: QueuePair, to peer: QueuePair) -> UInt32 {
        if peer.state == .rtr || peer.state == .rts, peer.peer === qp { return peer.realRecvPSN }
        return freshPSN()
    }

    /// The router moved a QP itself (ERR after a failed request, a policy
    /// reload, RESET): the real QP follows, best effort. An error the router
    /// raised for a request behind ones the device still holds waits for
    /// them (`behindInFlight`): a NIC completes the earlier requests first,
    /// in order, then reports the error; moving the real QP to ERR now would
    /// flush them instead. `deliver` moves it once they have completed.
    func entered(_ qp: QueuePair, _ state: QPState) {
        guard let r = qp.real else { return }
        switch state {
        case .error:
            if !qp.behindInFlight.isEmpty { return }
            _ = device.modifyQP(r.handle, RealQPAttributes(target: .error))
        case .reset:
            _ = device.modifyQP(r.handle, RealQPAttributes(target: .reset))
            forgetInFlight(qp)
        default: break
        }
    }

    // MARK: data path

    enum PostResult {
        case posted
        case busy            // the device's queue is full: retry
        case refused(String) // the device said no: an error completion
    }

    /// The device's form of a checked request: the tenant's wr_id, opcode,
    /// fence/solicited/inline flags (always signaled on the device: the
    /// router needs every completion), immediate data, the translated
    /// local SGEs or inline bytes, and the translated remote address.
    static func realSend(_ w: sluice_send_wqe, local: [RealSGE], inline: RealSGE?, remote: (UInt64, UInt32)?) -> RealSend {
        var send = RealSend(wrID: w.wr_id, opcode: w.opcode,
                            flags: w.send_flags & UInt32(SLUICE_SEND_FENCE | SLUICE_SEND_SOLICITED | SLUICE_SEND_INLINE)
                                | UInt32(SLUICE_SEND_SIGNALED),
                            immData: w.imm_data, sges: inline.map { $0.length > 0 ? [$0] : [] } ?? local)
        if let (addr, rkey) = remote {
            send.remoteAddress = addr
            send.rkey = rkey
        }
        send.compareAdd = w.compare_add
        send.swap = w.swap
        return send
    }

    /// Posts one checked request: the receive it consumes first (on the
    /// peer's real QP), then the request. Keys and addresses are real ones
    /// the router translated; the wr_id is the tenant's.
    func post(_ qp: QueuePair, _ peer: QueuePair, _ w: sluice_send_wqe, recv: sluice_recv_wqe?, local: [RealSGE],
              inline: RealSGE?, receive: [RealSGE], remote: (UInt64, UInt32)?) -> PostResult {
        if let lost { return .refused("the device failed: \(lost)") }
        guard let rq = qp.real, let rp = peer.real else { return .refused("no device QP") }
        guard qp.inFlight.count < Int(qp.sqCapacity) else { return .busy }
        if recv != nil && peer.recvInFlight >= Int(peer.rqCapacity) { return .busy }
        // The real CQs: one entry for the send, one for the receive.
        let sendEntries: UInt32 = recv != nil && peer.recvCQ === qp.sendCQ ? 2 : 1
        guard qp.sendCQ.realOutstanding + sendEntries <= qp.sendCQ.realLimit else { return .busy }
        if recv != nil && peer.recvCQ !== qp.sendCQ && peer.recvCQ.realOutstanding >= peer.recvCQ.realLimit { return .busy }
        let signaled = qp.sqSigAll || w.send_flags & UInt32(SLUICE_SEND_SIGNALED) != 0
        // The caller checked the tenant's rings have room (`room`, which
        // counts what the device already owes them); the room for this
        // request's completions is claimed below once it is posted.
        let send = VerbsBackend.realSend(w, local: local, inline: inline, remote: remote)
        if let r = recv {
            let rc = device.postRecv(rp.handle, RealRecv(wrID: r.wr_id, sges: receive))
            if rc == ENOMEM { return .busy }
            guard rc == 0 else { return .refused("the device refused the receive: \(String(cString: strerror(rc)))") }
            peer.recvHeld.append(r.wr_id)
            peer.recvCQ.deviceOwed += 1
            peer.recvCQ.realOutstanding += 1
        }
        let rc = device.postSend(rq.handle, send)
        guard rc == 0 else {
            // The receive posted for it stays on the device; it will take
            // the peer's next message, which is the one the router posts
            // next for this connection (the QP goes to ERR now).
            return .refused("the device refused the request: \(String(cString: strerror(rc)))")
        }
        qp.inFlight.append((w.wr_id, signaled))
        if signaled { qp.sendCQ.deviceOwed += 1 }
        qp.sendCQ.realOutstanding += 1
        return .posted
    }

    /// Moves real completions to the tenants' rings. Returns whether any
    /// arrived or moved.
    func pollCompletions(router: Router) -> Bool {
        var worked = false
        for cq in cqs.values {
            // Completions that waited for room in the tenant's ring go first.
            while !cq.waiting.isEmpty && cq.space > 0 {
                let c = cq.waiting.removeFirst()
                cq.push(c.cqe, solicited: c.solicited)
                worked = true
            }
            // The real CQ is drained even while completions wait for the
            // tenant's ring (they join `waiting`): left unpolled, it could
            // overrun, which a NIC reports as a CQ error.
            guard let real = cq.real, !cq.realFailed else { continue }
            for _ in 0...(Int(cq.realLimit) * 2 / 16 + 1) {
                polled.removeAll(keepingCapacity: true)
                var n = device.pollCQ(real, max: 16, into: &polled)
                if n == 0 && !cq.realArmed && lost == nil {
                    // Empty: arm it so that its next completion wakes the router
                    // (the completion channel is in the epoll set), then look
                    // once more for one that arrived before the arming.
                    cq.realArmed = device.armCQ(real) == 0
                    n = device.pollCQ(real, max: 16, into: &polled)
                }
                if n < 0 {
                    deviceFailed("ibv_poll_cq: \(String(cString: strerror(-Int32(n))))", router: router)
                    return true
                }
                for r in polled {
                    deliver(r, from: cq, router: router)
                    worked = true
                }
                if n < 16 { break }
            }
        }
        return worked
    }

    private func deliver(_ r: RealCompletion, from cq: CompletionQueue, router: Router) {
        guard let qp = qpsByRealNumber[r.qpNum] else { return } // destroyed since
        // Which queue it completes: the CQ says when the QP's two differ;
        // else the opcode (valid on success), else whether it is the send
        // the device holds first.
        let isRecv: Bool
        if qp.sendCQ !== qp.recvCQ {
            isRecv = cq === qp.recvCQ
        } else if r.status == UInt32(SLUICE_WC_SUCCESS) {
            isRecv = r.opcode & UInt32(SLUICE_WC_OP_RECV) != 0
        } else {
            isRecv = qp.inFlight.first?.wrID != r.wrID && qp.recvInFlight > 0
        }
        let peer = qp.peer
        var cqe = CompletionMapping.virtualCompletion(r, qpn: qp.qpn, peerQPN: peer?.qpn ?? qp.remote?.qpn ?? 0,
                                                      peerLID: peer?.session.lid ?? qp.verbsLink?.connection?.peer?.sourceLID ?? 0)
        let failed = cqe.status != UInt32(SLUICE_WC_SUCCESS)
        if !failed, let peer, r.opcode & UInt32(SLUICE_WC_OP_RECV) != 0 {
            // The sender's addressing as its tenant set it (GID or LID, SL),
            // not how the router addressed the device's loopback.
            let grh = UInt32(SLUICE_WC_FLAG_GRH)
            cqe.wc_flags = (cqe.wc_flags & ~grh) | (peer.attrs.ah.is_global != 0 ? grh : 0)
            cqe.sl = peer.attrs.ah.sl
        } else if !failed, let remote = qp.remote, r.opcode & UInt32(SLUICE_WC_OP_RECV) != 0 {
            // From another router: addressed as the tenant addressed it.
            let grh = UInt32(SLUICE_WC_FLAG_GRH)
            cqe.wc_flags = (cqe.wc_flags & ~grh) | (remote.ipv4 != 0 ? grh : 0)
        }
        if isRecv {
            received(qp)
            enqueue(qp.recvCQ, cqe, solicited: true)
        } else {
            let sent = takeSent(qp) ?? (wrID: r.wrID, signaled: true)
            if sent.signaled || failed { enqueue(qp.sendCQ, cqe, solicited: false) }
            if failed {
                // The device failed the QP first: on a NIC the requests
                // behind would never have run, so they flush.
                for i in qp.behindInFlight.indices { qp.behindInFlight[i].status = UInt32(SLUICE_WC_WR_FLUSH_ERR) }
            }
            if qp.inFlight.isEmpty && !qp.behindInFlight.isEmpty {
                for c in qp.behindInFlight { enqueue(qp.sendCQ, c, solicited: false) }
                qp.behindInFlight.removeAll()
                // The router's error is delivered: the real QP goes to ERR
                // now (`entered` waited for this).
                if qp.state == .error, let real = qp.real { _ = device.modifyQP(real.handle, RealQPAttributes(target: .error)) }
            }
        }
        // Audited even when the QP is in ERR already (the router refused a
        // later request, whose error waits behind this one).
        if failed && cqe.status != UInt32(SLUICE_WC_WR_FLUSH_ERR) {
            router.denyDataPath(qp, "the device completed a request with status \(r.status) (vendor error 0x\(String(r.vendorError, radix: 16)))",
                                rule: "device")
            if qp.state != .error { router.enter(qp, .error) }
        }
    }

    private func enqueue(_ cq: CompletionQueue, _ cqe: sluice_cqe, solicited: Bool) {
        cq.pushInOrder(cqe, solicited: solicited)
    }

    // MARK: what the device holds, and what it owes the tenants' rings

    /// The oldest request the device holds for `qp`, its completion come.
    private func takeSent(_ qp: QueuePair) -> (wrID: UInt64, signaled: Bool)? {
        guard !qp.inFlight.isEmpty else { return nil }
        let sent = qp.inFlight.removeFirst()
        qp.sendCQ.realOutstanding = qp.sendCQ.realOutstanding &- min(qp.sendCQ.realOutstanding, 1)
        if sent.signaled { qp.sendCQ.deviceOwed = qp.sendCQ.deviceOwed &- min(qp.sendCQ.deviceOwed, 1) }
        if !replaced.isEmpty { heldCompleted(qp, recv: false) }
        return sent
    }

    /// One of the receives posted to `qp`'s device QP completed.
    private func received(_ qp: QueuePair) {
        guard !qp.recvHeld.isEmpty else { return }
        qp.recvHeld.removeFirst()
        qp.recvCQ.realOutstanding = qp.recvCQ.realOutstanding &- min(qp.recvCQ.realOutstanding, 1)
        qp.recvCQ.deviceOwed = qp.recvCQ.deviceOwed &- min(qp.recvCQ.deviceOwed, 1)
        if !replaced.isEmpty { heldCompleted(qp, recv: true) }
    }

    /// The device will not complete what it holds for `qp` (destroyed,
    /// reset, failed): what it owed the rings is released.
    private func forgetInFlight(_ qp: QueuePair) {
        while takeSent(qp) != nil {}
        while qp.recvInFlight > 0 { received(qp) }
        qp.behindInFlight.removeAll()
    }

    /// Takes the completion channel's events: each names a real CQ whose
    /// arming fired (the next `pollCompletions` reads it, and arms it again).
    func serviceCompletionEvents() {
        for _ in 0..<256 {
            guard let h = device.nextCompletionEvent() else { return }
            for cq in cqs.values where cq.real == h { cq.realArmed = false }
        }
    }

    /// Reads the device's async events. A failed real QP fails the
    /// tenant's (ERR, IBV_EVENT_QP_FATAL); a failed device fails them all.
    /// Returns false once the device is gone.
    func serviceAsyncEvents(router: Router) -> Bool {
        for _ in 0..<64 {
            switch device.nextAsyncEvent() {
            case .none: return lost == nil
            case .other: continue
            case .queuePairFailed(let realQPN):
                guard let qp = qpsByRealNumber[realQPN], qp.state != .error, qp.state != .reset else { continue }
                router.denyDataPath(qp, "the device reported the QP failed", rule: "device")
                router.enter(qp, .error)
                qp.session.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
            case .completionQueueFailed(let h):
                // The real CQ overran or broke: its completions are lost, so
                // every QP completing into it fails, as on a NIC.
                guard let cq = cqs.values.first(where: { $0.real == h }), !cq.realFailed else { continue }
                cq.realFailed = true
                router.recordDeviceLoss("IBV_EVENT_CQ_ERR on the device CQ of tenant CQ \(cq.handle): its QPs fail")
                for qp in qpsByRealNumber.values where qp.sendCQ === cq || qp.recvCQ === cq {
                    failHeld(qp, router: router, why: "the device reported the QP's CQ failed (IBV_EVENT_CQ_ERR)")
                }
            case .deviceFailed(let why):
                deviceFailed(why, router: router)
                return false
            }
        }
        return lost == nil
    }

    /// The device is gone (its CQs report errors): everything on it fails.
    /// Requests it held complete with WR_FLUSH_ERR after a GENERAL_ERR for
    /// the first, and the QPs move to ERR, as a NIC's removal does.
    private func deviceFailed(_ why: String, router: Router) {
        guard lost == nil else { return }
        lost = why
        router.recordDeviceLoss(why)
        for qp in qpsByRealNumber.values { failHeld(qp, router: router, why: nil) }
    }

    /// The device will complete nothing more for `qp`: what it held
    /// completes with GENERAL_ERR for the first and WR_FLUSH_ERR after (as
    /// a NIC's removal does), and the QP moves to ERR with QP_FATAL.
    private func failHeld(_ qp: QueuePair, router: Router, why: String?) {
        var first = true
        let held = qp.inFlight, behind = qp.behindInFlight, receives = qp.recvHeld
        forgetInFlight(qp)
        for sent in held {
            var c = sluice_cqe()
            c.wr_id = sent.wrID
            c.status = UInt32(first ? SLUICE_WC_GENERAL_ERR : SLUICE_WC_WR_FLUSH_ERR)
            c.qp_num = qp.qpn
            enqueue(qp.sendCQ, c, solicited: false)
            first = false
        }
        for c in behind { enqueue(qp.sendCQ, c, solicited: false) }
        // The receives the device held are flushed, as a NIC flushes a
        // failed QP's receive queue (before the ring's rest, which the
        // fabric's flush completes next).
        for id in receives {
            var c = sluice_cqe()
            c.wr_id = id
            c.status = UInt32(SLUICE_WC_WR_FLUSH_ERR)
            c.opcode = UInt32(SLUICE_WC_OP_RECV)
            c.qp_num = qp.qpn
            enqueue(qp.recvCQ, c, solicited: true)
        }
        if qp.state != .reset && qp.state != .error {
            if let why { router.denyDataPath(qp, why, rule: "device") }
            router.enter(qp, .error)
            qp.session.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
        } else if qp.state == .error {
            entered(qp, .error) // it may have waited for what the device held
        }
    }
}

extension Router {
    /// The data path, one pass: the poller (on the software fabric it also
    /// moves the bytes; on the verbs backend it posts them), then the
    /// device's completions.
    func pollDataPath(now: UInt64) -> Bool {
        var worked = fabric.pollOnce(now: now, router: self)
        if let verbs, verbs.pollCompletions(router: self) { worked = true }
        return worked
    }

    func recordDeviceLoss(_ why: String) {
        log.record(event: "device.lost", decision: .deny, rule: "device", reason: why)
    }
}
