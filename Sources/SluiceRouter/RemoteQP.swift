#if canImport(Glibc)
import Glibc
#endif
import CSluiceSys
import Foundation
import SluiceCluster
import SluicePolicy
import SluiceWire

/// The QP on another router that a local QP is connected to: resolved at
/// RTR from the cluster directory (the destination LID or GID belongs to
/// that router), never from anything the remote side says.
final class RemotePeer {
    /// The router that owns the destination address.
    let router: String
    /// The remote QP's number, and the address the local QP was given for
    /// it (a LID, or the IPv4 behind GID 0; `ipv4` is 0 for a LID).
    let qpn: UInt32
    let lid: UInt16
    let ipv4: UInt32
    /// The remote QP's tenant, as its router reported it.
    var tenant: String?

    // Requester side: one request in flight at a time (order per QP).
    var nextID: UInt64
    /// The id of the head request: taken when it is first sent and kept
    /// across retransmissions and RNR retries until it completes or fails,
    /// so the target can tell a retry of a request it ran from a new one.
    var headID: UInt64?
    var inFlight: InFlight?
    /// A response that arrived, for `executeRemote` to finish the request with.
    var arrived: RemoteResponse?
    /// RNR retries left for the head request (nil: not counting yet).
    var rnrLeft: Int?

    struct InFlight {
        var id: UInt64
        var deadline: UInt64
        var retriesLeft: Int // -1: infinite
        var frame: [UInt8]
    }

    // Target side: the newest request run (an RNR answer runs nothing),
    // and its answer unless it was a READ. A retransmission of it is
    // answered from the cache (a READ is read again); an older id is a
    // stale copy and is dropped: a SEND or an atomic never runs twice.
    var lastExecuted: UInt64?
    var lastResponse: [UInt8]?

    /// How far behind the newest executed id an id still counts as a stale
    /// copy. Ids go up by one per request from a random start in 2^63, so a
    /// real duplicate is always close behind; an id far away is a requester
    /// that reset its QP and started again.
    static let staleWindow: UInt64 = 1 << 32

    enum Arrival: Equatable {
        /// Not run before: run it.
        case run
        /// The newest request run, retransmitted: answer it again.
        case answer([UInt8])
        /// Older than the newest request run: a stale copy, drop it.
        case stale
    }

    /// Requester: the id of the head request (a new one only once the
    /// previous head completed or failed).
    func idForHead() -> UInt64 {
        if let id = headID { return id }
        let id = nextID
        nextID &+= 1
        headID = id
        return id
    }

    /// Requester: the head request completed or failed.
    func headDone() {
        headID = nil
        rnrLeft = nil
        inFlight = nil
    }

    /// Target: what to do with a request carrying `id`.
    func arrival(of id: UInt64) -> Arrival {
        guard let last = lastExecuted else { return .run }
        if id == last { return lastResponse.map { .answer($0) } ?? .run }
        let behind = last &- id
        return behind <= RemotePeer.staleWindow ? .stale : .run
    }

    /// Target: request `id` ran (with any answer but RNR); `response` is
    /// what a retransmission gets (nil for a READ, which is read again).
    func executed(_ id: UInt64, response: [UInt8]?) {
        lastExecuted = id
        lastResponse = response
    }

    init(router: String, qpn: UInt32, lid: UInt16, ipv4: UInt32) {
        self.router = router
        self.qpn = qpn
        self.lid = lid
        self.ipv4 = ipv4
        var rng = SystemRandomNumberGenerator()
        nextID = UInt64.random(in: 1...(UInt64.max >> 1), using: &rng)
    }

    var addressDescription: String { ipv4 != 0 ? "GID ::ffff:\(Router.dotted(ipv4))" : "LID \(lid)" }
}

extension Router {
    // MARK: connecting

    /// At RTR: the destination's owner when the directory gives it to
    /// another router; nil when the destination is (or would be) local.
    func remoteDestination(_ s: Session, ah: sluice_ah, destQPN: UInt32) throws -> RemotePeer? {
        guard let c = cluster else { return nil }
        let owner: RouterEntry?
        var lid: UInt16 = 0, v4: UInt32 = 0
        if ah.is_global != 0 {
            let g = withUnsafeBytes(of: ah.dgid) { Array($0) }
            guard ah.sgid_index == 0, g[0..<10].allSatisfy({ $0 == 0 }), g[10] == 0xff, g[11] == 0xff else { return nil }
            v4 = UInt32(g[12]) << 24 | UInt32(g[13]) << 16 | UInt32(g[14]) << 8 | UInt32(g[15])
            guard endpointsByIPv4[v4] == nil else { return nil }
            owner = c.directory.router(forIPv4: v4)
        } else {
            lid = ah.dlid
            guard endpointsByLID[lid] == nil else { return nil }
            owner = c.directory.router(forLID: lid)
        }
        guard let o = owner, o.name != c.config.name else { return nil }
        guard !(engine.policy(s.tenant)?.operations ?? []).isEmpty || uncheckedSender else {
            throw Refusal(EACCES, "connection refused by policy (rule operations)", rule: "operations",
                          auditReason: "\(s.tenant) lists no operations")
        }
        // Links are made on first use: this QP will need one to that router.
        c.node.use(o.name)
        return RemotePeer(router: o.name, qpn: destQPN & 0xff_ffff, lid: lid, ipv4: v4)
    }

    /// Whether a live local QP is connected to a QP on `router`: its link
    /// is kept (and dialed again if it drops) while so.
    func qpsNeedLink(to router: String) -> Bool {
        qpsByNumber.values.contains { qp in
            !qp.destroyed && qp.state != .error && qp.state != .reset && qp.remote?.router == router
        }
    }

    /// Unsent bytes on one link above which new requests wait.
    static let linkBacklogLimit = 32 << 20

    /// `--test-unchecked-sender`, honoured in debug builds only.
    var uncheckedSender: Bool {
        #if SLUICE_TEST_HOOKS
        return config.testUncheckedSender
        #else
        return false
        #endif
    }

    /// What a request from `s` claims as its sender: the session's tenant
    /// and address, or in debug builds what `--test-forge-tenant` and
    /// `--test-forge-source-lid` make a modified router claim for it.
    func claimedSender(_ s: Session) -> (tenant: String, lid: UInt16, ipv4: UInt32) {
        #if SLUICE_TEST_HOOKS
        return (config.testForgeTenant[s.tenant] ?? s.tenant, config.testForgeSourceLID[s.tenant] ?? s.lid, s.ipv4)
        #else
        return (s.tenant, s.lid, s.ipv4)
        #endif
    }

    /// The operations a QP may post to a remote QP, as far as this router
    /// can tell: its own tenant's. The target router checks both tenants'
    /// consent on every request.
    func remoteOperations(_ s: Session) -> OperationSet { engine.policy(s.tenant)?.operations ?? [] }

    // MARK: requester

    /// Runs the head request of a QP connected to another router: sends it,
    /// waits for its response (retransmitting after the QP's timeout, up to
    /// retry_cnt), then completes it. Called by the fabric with the request
    /// already validated locally (lkeys, lengths) and charged to the shaper.
    func executeRemote(_ qp: QueuePair, _ w: sluice_send_wqe, _ wcOpcode: UInt32, total: UInt64,
                       gather src: [(UnsafeRawPointer, Int)], enforcement: Bool, now: UInt64) -> SoftwareFabric.Outcome {
        guard let c = cluster, let r = qp.remote else {
            return failRemote(qp, w, UInt32(SLUICE_WC_RETRY_EXC_ERR), wcOpcode, "fabric", "this router is no longer in a cluster")
        }
        if let resp = r.arrived {
            r.arrived = nil
            return finish(qp, r, w, wcOpcode, total: total, resp, now: now)
        }
        let interval = qp.attrs.timeout == 0 ? 100_000_000 : max(1_000_000, UInt64(4096) << UInt64(qp.attrs.timeout))
        if var f = r.inFlight {
            if now < f.deadline { return .wait(Stall(kind: .peerNotReady, retryAt: f.deadline, retriesLeft: -1)) }
            if f.retriesLeft == 0 {
                r.inFlight = nil
                return failRemote(qp, w, UInt32(SLUICE_WC_RETRY_EXC_ERR), wcOpcode, "retry.transport",
                                  "no response from router \(r.router) for QP 0x\(String(r.qpn, radix: 16)): retries exhausted")
            }
            // A retransmission waits for a backlogged link like a first
            // send, without spending a retry: the request was not lost,
            // it has not left yet (or the link is full of other QPs' data).
            if let queued = c.node.queuedBytes(to: r.router), queued + f.frame.count > Router.linkBacklogLimit {
                return .wait(Stall(kind: .peerNotReady, retryAt: now &+ 200_000, retriesLeft: -1))
            }
            // Retransmit (the target answers a duplicate from its cache).
            if f.retriesLeft > 0 { f.retriesLeft -= 1 }
            f.deadline = now &+ interval
            r.inFlight = f
            c.node.send(to: r.router, LinkFrame.Frame(.data, stream: r.qpn, body: f.frame))
            return .wait(Stall(kind: .peerNotReady, retryAt: f.deadline, retriesLeft: -1))
        }
        guard qp.allowedOperations.allowsWireOpcode(w.opcode) || !enforcement || uncheckedSender else {
            return failRemote(qp, w, UInt32(SLUICE_WC_LOC_QP_OP_ERR), wcOpcode, "operations",
                              "\(qp.session.tenant)'s operations do not include opcode \(w.opcode)")
        }
        guard total <= UInt64(maxRemoteMessage) else {
            return failRemote(qp, w, UInt32(SLUICE_WC_LOC_LEN_ERR), wcOpcode, "length",
                              "a message of \(total) bytes to another host is above the fabric's \(maxRemoteMessage)")
        }
        let carries = w.opcode == UInt32(SLUICE_WR_SEND) || w.opcode == UInt32(SLUICE_WR_SEND_WITH_IMM)
            || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE) || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        var payload: [UInt8] = []
        if carries {
            payload.reserveCapacity(Int(total))
            for (p, n) in src { payload += UnsafeRawBufferPointer(start: p, count: n) }
        }
        // The same id as any earlier attempt of this request (an RNR retry),
        // so a copy of it that ran at the target meanwhile is not run again.
        let id = r.idForHead()
        let me = claimedSender(qp.session)
        let req = RemoteRequest(opcode: w.opcode, solicited: w.send_flags & UInt32(SLUICE_SEND_SOLICITED) != 0,
                                sourceQPN: qp.qpn, sourceLID: me.lid, sourceIPv4: me.ipv4, id: id,
                                rkey: w.rkey, remoteAddress: w.remote_addr, compareAdd: w.compare_add, swap: w.swap,
                                immediate: w.imm_data, length: UInt32(total), tenant: me.tenant, payload: payload)
        let frame = req.encode()
        // Backpressure: while the link holds a lot unsent, the request
        // waits its turn (as behind a full send queue), so one busy host
        // pair cannot grow the link's buffer without bound.
        if let queued = c.node.queuedBytes(to: r.router), queued + frame.count > Router.linkBacklogLimit {
            return .wait(Stall(kind: .peerNotReady, retryAt: now &+ 200_000, retriesLeft: -1))
        }
        let deadline = now &+ interval
        r.inFlight = RemotePeer.InFlight(id: id, deadline: deadline,
                                         retriesLeft: qp.attrs.timeout == 0 ? -1 : Int(qp.attrs.retryCount), frame: frame)
        // With no link up yet, the frame waits (bounded) for the link this
        // starts; if it cannot be queued or the link fails, it is lost, as
        // on a fabric, and the retry timer resends it.
        c.node.send(to: r.router, LinkFrame.Frame(.data, stream: r.qpn, body: frame))
        return .wait(Stall(kind: .peerNotReady, retryAt: deadline, retriesLeft: -1))
    }

    /// Completes the head request with the target's answer.
    private func finish(_ qp: QueuePair, _ r: RemotePeer, _ w: sluice_send_wqe, _ wcOpcode: UInt32, total: UInt64,
                        _ resp: RemoteResponse, now: UInt64) -> SoftwareFabric.Outcome {
        r.tenant = resp.tenant
        switch resp.status {
        case .ok:
            r.headDone()
            let isRead = w.opcode == UInt32(SLUICE_WR_RDMA_READ)
            let isAtomic = w.opcode == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
            if isRead || isAtomic {
                guard UInt64(resp.payload.count) == total else {
                    return failRemote(qp, w, 7 /* IBV_WC_BAD_RESP_ERR; SLUICE_WC_* are IBV_WC_* */, wcOpcode, "fabric",
                                      "router \(r.router) answered \(resp.payload.count) bytes for \(total)")
                }
                // The local buffers again: a region deregistered meanwhile is gone.
                var off = 0
                for i in 0..<Int(w.num_sge) {
                    let sge = w.sge(i)
                    if sge.length == 0 { continue }
                    guard let mr = qp.session.lkeys[sge.lkey], mr.pd === qp.pd, mr.writable,
                          let p = mr.local(sge.addr, UInt64(sge.length)) else {
                        return failRemote(qp, w, UInt32(SLUICE_WC_LOC_PROT_ERR), wcOpcode, "lkey",
                                          "lkey 0x\(String(sge.lkey, radix: 16)) no longer covers its buffer")
                    }
                    let n = min(Int(sge.length), resp.payload.count - off)
                    resp.payload.withUnsafeBytes { memmove(p, $0.baseAddress! + off, n) }
                    off += n
                }
            }
            qp.consumeSend()
            let signaled = qp.sqSigAll || w.send_flags & UInt32(SLUICE_SEND_SIGNALED) != 0
            if signaled {
                var c = sluice_cqe()
                c.wr_id = w.wr_id
                c.status = UInt32(SLUICE_WC_SUCCESS)
                c.opcode = wcOpcode
                c.byte_len = UInt32(total)
                c.qp_num = qp.qpn
                qp.sendCQ.push(c, solicited: false)
            }
            return .completed
        case .receiverNotReady:
            let budget = qp.attrs.rnrRetry == 7 ? -1 : Int(qp.attrs.rnrRetry)
            let left = r.rnrLeft ?? budget
            if left == 0 {
                r.rnrLeft = nil
                return failRemote(qp, w, UInt32(SLUICE_WC_RNR_RETRY_EXC_ERR), wcOpcode, "retry.rnr",
                                  "receiver not ready: RNR retries exhausted")
            }
            r.rnrLeft = left < 0 ? -1 : left - 1
            return .wait(Stall(kind: .receiverNotReady, retryAt: now &+ SoftwareFabric.rnrDelayNanos(resp.rnrDelayCode), retriesLeft: -1))
        case .remoteAccessError:
            let outcome = failRemote(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), wcOpcode, "rkey",
                                     "router \(r.router) refused the remote access (key, bounds or access)")
            noteRemoteAccessFault(qp, now: now)
            return outcome
        case .remoteInvalidRequest:
            return failRemote(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, "fabric.target",
                              "router \(r.router) refused the request as invalid")
        case .remoteOperationError:
            return failRemote(qp, w, UInt32(SLUICE_WC_REM_OP_ERR), wcOpcode, "fabric.target",
                              "the remote QP failed the request")
        }
    }

    /// An error completion for the head request (the fabric moves the QP to ERR).
    private func failRemote(_ qp: QueuePair, _ w: sluice_send_wqe, _ status: UInt32, _ opcode: UInt32,
                            _ rule: String, _ reason: String) -> SoftwareFabric.Outcome {
        denyDataPath(qp, reason, rule: rule)
        qp.remote?.headDone()
        qp.consumeSend()
        var c = sluice_cqe()
        c.wr_id = w.wr_id
        c.status = status
        c.opcode = opcode
        c.qp_num = qp.qpn
        qp.sendCQ.push(c, solicited: false)
        return .failed
    }

    // MARK: frames from other routers

    func handleFabricFrame(from router: String, _ f: LinkFrame.Frame) {
        guard let kind = f.body.first else { return }
        if verbs != nil || kind >= VerbsConnect.kind { return handleVerbsFrame(from: router, f) }
        do {
            if kind == RemoteRequest.kind {
                serveRemoteRequest(from: router, qpn: f.stream, try RemoteRequest.decode(f.body))
            } else if kind == RemoteResponse.kind {
                takeRemoteResponse(from: router, qpn: f.stream, try RemoteResponse.decode(f.body))
            }
        } catch {
            log.record(event: "fabric.frame", decision: .deny, rule: "fabric.frame", reason: "\(error)", fields: ["peer": router])
        }
    }

    private func takeRemoteResponse(from router: String, qpn: UInt32, _ resp: RemoteResponse) {
        // Only the answer to the request in flight, from the router and QP
        // this QP is connected to; anything else is stale and dropped.
        guard let qp = qpsByNumber[qpn], !qp.destroyed, qp.state == .rts, let r = qp.remote, r.router == router,
              r.qpn == resp.sourceQPN, let f = r.inFlight, f.id == resp.id, qp.held != nil else { return }
        r.inFlight = nil
        r.arrived = resp
        // The fabric finishes it on its next visit (which also checks CQ room).
        qp.stall = Stall(kind: .peerNotReady, retryAt: 0, retriesLeft: -1)
        fabric.activate(qp)
    }

    /// What the target can check of the sender's claims with its own
    /// tables: the source LID and IPv4 must be addresses the directory
    /// gives to the sending router, and a claimed tenant whose policy has
    /// an `addressPool` must send from an address in it. Nil when they
    /// hold; else why not. (The rest — which of the sending router's
    /// endpoints, of a tenant without an address pool, sent it — is that
    /// router's word: see SECURITY.md.)
    func checkSource(from router: String, _ req: RemoteRequest, _ c: ClusterAgent) -> String? {
        checkSource(from: router, lid: req.sourceLID, ipv4: req.sourceIPv4, tenant: req.tenant, c)
    }

    func checkSource(from router: String, lid: UInt16, ipv4: UInt32, tenant: String, _ c: ClusterAgent) -> String? {
        let byLID = c.directory.router(forLID: lid)?.name
        guard byLID == router else {
            return "source LID \(lid) belongs to \(byLID.map { "router \($0)" } ?? "no router"), not to the sender \(router)"
        }
        let byIPv4 = c.directory.router(forIPv4: ipv4)?.name
        guard byIPv4 == router else {
            return "source address \(Router.dotted(ipv4)) belongs to \(byIPv4.map { "router \($0)" } ?? "no router"), not to the sender \(router)"
        }
        if let pool = engine.policy(tenant)?.addressPool, !pool.contains(ipv4) {
            return "tenant \(tenant)'s addressPool \(pool) does not hold the source address \(Router.dotted(ipv4))"
        }
        return nil
    }

    /// The target's side: every check against this router's own tables.
    private func serveRemoteRequest(from router: String, qpn: UInt32, _ req: RemoteRequest) {
        guard let c = cluster else { return }
        let now = monotonicNanos()
        // The QP must be connected to exactly that QP at that address on
        // that router; otherwise nothing answers, as for a QP that does not
        // exist (the requester times out). QP hijack across hosts ends here.
        // The requester retransmits until its retries run out: one audit
        // record a second per (router, QPN), with the count left out.
        guard let qp = qpsByNumber[qpn], !qp.destroyed, qp.state == .rtr || qp.state == .rts, let r = qp.remote,
              r.router == router else {
            if let suppressed = c.auditConnectionDenial(peer: router, qpn: qpn, now: now) {
                var fields = ["peer": router, "tenant": req.tenant]
                if suppressed > 0 { fields["suppressed"] = String(suppressed) }
                log.record(event: "fabric.request", decision: .deny, rule: "fabric.connection",
                           reason: "no QP 0x\(String(qpn, radix: 16)) here is connected to QP 0x\(String(req.sourceQPN, radix: 16)) on router \(router)",
                           fields: fields)
            }
            return
        }
        // What the sending router says of the sender, checked where this
        // router can: a forged address or tenant is refused, as a NIC
        // refuses a packet from the wrong port.
        if let why = checkSource(from: router, req, c) {
            if let suppressed = c.auditConnectionDenial(peer: router, qpn: qpn, now: now) {
                denyDataPath(qp, "request from router \(router) claiming tenant \(req.tenant): \(why)"
                             + (suppressed > 0 ? " (\(suppressed) more not recorded)" : ""), rule: "fabric.source")
            }
            return
        }
        guard r.qpn == req.sourceQPN, r.ipv4 != 0 ? r.ipv4 == req.sourceIPv4 : r.lid == req.sourceLID else {
            if let suppressed = c.auditConnectionDenial(peer: router, qpn: qpn, now: now) {
                var fields = ["peer": router, "tenant": req.tenant]
                if suppressed > 0 { fields["suppressed"] = String(suppressed) }
                log.record(event: "fabric.request", decision: .deny, rule: "fabric.connection",
                           reason: "QP 0x\(String(qpn, radix: 16)) here is not connected to QP 0x\(String(req.sourceQPN, radix: 16)) at that address on router \(router)",
                           fields: fields)
            }
            return
        }
        switch r.arrival(of: req.id) {
        case .answer(let cached):
            c.node.send(to: router, LinkFrame.Frame(.data, stream: req.sourceQPN, body: cached))
            return
        case .stale:
            // The requester has moved past it (one request in flight per
            // QP): it wants no answer, and running it would run it twice.
            return
        case .run:
            break
        }
        // Inbound work runs now, on the frame's arrival, not in the lane's
        // turn; its time (the copy of a WRITE or a READ's bytes, the answer)
        // is charged to the target QP's tenant lane, as its own requests
        // are, so the debt delays that tenant's next turn of the scheduler.
        let started = CycleClock.now()
        let (status, payload) = runRemoteRequest(qp, r, req)
        let resp = RemoteResponse(status: status, rnrDelayCode: qp.attrs.minRNRTimer, sourceQPN: qp.qpn, id: req.id,
                                  tenant: qp.session.tenant, payload: payload).encode()
        defer { chargeInbound(qp, since: started, bytes: UInt64(req.length)) }
        // An RNR answer ran nothing: the cache keeps the last request that
        // ran (the requester retries with the same id). A READ may run again
        // (RC allows it, nothing changes), so its possibly large answer is
        // not kept; anything else is answered from the cache if retransmitted.
        if status != .receiverNotReady {
            r.executed(req.id, response: req.opcode == UInt32(SLUICE_WR_RDMA_READ) ? nil : resp)
        }
        c.node.send(to: router, LinkFrame.Frame(.data, stream: req.sourceQPN, body: resp))
    }

    /// Charges the time since `start` to `qp`'s tenant lane, capped as a
    /// request of `bytes` would be (a preemption mid-copy costs no more).
    /// Outside the lane's turn, so the lane's timing mark is free to move:
    /// its turn starts it again.
    func chargeInbound(_ qp: QueuePair, since start: UInt64, bytes: UInt64) {
        let clock = CycleClock.shared
        let cap = clock.ticks(nanos: SoftwareFabric.chargeCapNanos &+ min(bytes, UInt64(Int64.max) / 2))
        qp.lane.credit.start(start)
        qp.lane.credit.charge(CycleClock.now(), cap: cap)
    }

    private func runRemoteRequest(_ qp: QueuePair, _ r: RemotePeer, _ req: RemoteRequest) -> (RemoteResponse.Status, [UInt8]) {
        let op = req.opcode
        let isSend = op == UInt32(SLUICE_WR_SEND) || op == UInt32(SLUICE_WR_SEND_WITH_IMM)
        let withImm = op == UInt32(SLUICE_WR_SEND_WITH_IMM) || op == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        let isWrite = op == UInt32(SLUICE_WR_RDMA_WRITE) || op == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        let isRead = op == UInt32(SLUICE_WR_RDMA_READ)
        let isAtomic = op == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || op == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
        guard isSend || isWrite || isRead || isAtomic, let operation = OperationSet.wireOpcode(op) else {
            denyDataPath(qp, "remote opcode \(op) is not supported", rule: "opcode")
            return (.remoteInvalidRequest, [])
        }
        // Both tenants' consent, by this router's policies: its own
        // tenant's, and its copy of the requester's.
        if fabric.enforcement {
            let d = engine.workRequest(from: req.tenant, to: qp.session.tenant, operation: operation)
            guard d.isAllowed else {
                denyDataPath(qp, "from \(req.tenant) on router \(r.router): \(Router.reason(d))", rule: d.rule)
                return (.remoteInvalidRequest, [])
            }
        }
        let length = Int(req.length)
        if (isSend || isWrite) && req.payload.count != length {
            denyDataPath(qp, "a request of \(length) bytes carries \(req.payload.count)", rule: "length")
            return (.remoteInvalidRequest, [])
        }
        var recv: sluice_recv_wqe?
        if isSend || withImm {
            guard let avail = qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) else {
                denyDataPath(qp, "receive queue producer index is corrupt; QP moved to ERR", rule: "ring")
                enter(qp, .error)
                return (.remoteOperationError, [])
            }
            if avail == 0 || qp.recvCQ.space < 1 { return (.receiverNotReady, []) }
            recv = qp.copyRecvWQE(qp.rqCons)
        }
        var payload: [UInt8] = []
        if isSend, let rw = recv {
            var dst: [(UnsafeMutableRawPointer, Int)] = []
            var room = 0
            var bad: (UInt32, String)?
            if rw.num_sge > qp.maxRecvSGE { bad = (UInt32(SLUICE_WC_LOC_QP_OP_ERR), "receive request with \(rw.num_sge) SGEs") }
            for i in 0..<Int(min(rw.num_sge, qp.maxRecvSGE)) where bad == nil {
                let sge = rw.sge(i)
                if sge.length == 0 { continue }
                guard let mr = qp.session.lkeys[sge.lkey], mr.pd === qp.pd, mr.writable, let p = mr.local(sge.addr, UInt64(sge.length)) else {
                    bad = (UInt32(SLUICE_WC_LOC_PROT_ERR), "receive lkey 0x\(String(sge.lkey, radix: 16)) does not cover its buffer")
                    break
                }
                dst.append((p, Int(sge.length)))
                room += Int(sge.length)
            }
            if bad == nil && room < length { bad = (UInt32(SLUICE_WC_LOC_LEN_ERR), "message of \(length) bytes does not fit the \(room)-byte receive buffers") }
            if let (status, reason) = bad {
                qp.consumeRecv()
                pushRecvCompletion(qp, rw, status: status, req: req, r: r, opcode: UInt32(SLUICE_WC_OP_RECV), length: 0)
                denyDataPath(qp, reason, rule: status == UInt32(SLUICE_WC_LOC_LEN_ERR) ? "length" : "lkey")
                enter(qp, .error)
                return (status == UInt32(SLUICE_WC_LOC_LEN_ERR) ? .remoteInvalidRequest : .remoteOperationError, [])
            }
            var off = 0
            req.payload.withUnsafeBytes { src in
                for (p, n) in dst where off < length {
                    let k = min(n, length - off)
                    memmove(p, src.baseAddress! + off, k)
                    off += k
                }
            }
        } else if !isSend {
            let need = UInt32(isAtomic ? SLUICE_ACCESS_REMOTE_ATOMIC : isRead ? SLUICE_ACCESS_REMOTE_READ : SLUICE_ACCESS_REMOTE_WRITE)
            let what = isAtomic ? "atomic" : isRead ? "read" : "write"
            guard qp.attrs.accessFlags & need != 0 else {
                denyDataPath(qp, "the QP does not allow remote \(what) (request from router \(r.router))", rule: "qp.access")
                return (.remoteInvalidRequest, [])
            }
            if isAtomic && (req.remoteAddress & 7 != 0 || length != 8) {
                denyDataPath(qp, "atomic at 0x\(String(req.remoteAddress, radix: 16)) of \(length) bytes", rule: "atomic.alignment")
                return (.remoteInvalidRequest, [])
            }
            if isRead && length > maxRemoteMessage {
                denyDataPath(qp, "a READ of \(length) bytes is above the fabric's \(maxRemoteMessage)", rule: "length")
                return (.remoteInvalidRequest, [])
            }
            if length > 0 {
                guard let mr = qp.session.rkeys[req.rkey], mr.pd === qp.pd else {
                    denyDataPath(qp, "rkey 0x\(String(req.rkey, radix: 16)) from router \(r.router) does not exist in the QP's PD", rule: "rkey")
                    return (.remoteAccessError, [])
                }
                guard mr.access & need != 0 else {
                    denyDataPath(qp, "rkey 0x\(String(req.rkey, radix: 16)) does not grant remote \(what)", rule: "rkey.access")
                    return (.remoteAccessError, [])
                }
                guard let p = mr.remote(req.remoteAddress, UInt64(length)) else {
                    denyDataPath(qp, "[0x\(String(req.remoteAddress, radix: 16)), +\(length)) is outside the region of rkey 0x\(String(req.rkey, radix: 16))",
                                 rule: "rkey.bounds")
                    return (.remoteAccessError, [])
                }
                if isAtomic {
                    guard UInt(bitPattern: p) & 7 == 0 else {
                        denyDataPath(qp, "atomic target is not 8-byte aligned in the region's memory", rule: "atomic.alignment")
                        return (.remoteInvalidRequest, [])
                    }
                    let word = p.assumingMemoryBound(to: UInt64.self)
                    let old = op == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
                        ? sluice_atomic_fetch_add64(word, req.compareAdd)
                        : sluice_atomic_cmp_swap64(word, req.compareAdd, req.swap)
                    payload = withUnsafeBytes(of: old.littleEndian) { Array($0) }
                } else if isRead {
                    payload = Array(UnsafeRawBufferPointer(start: p, count: length))
                } else {
                    req.payload.withUnsafeBytes { memmove(p, $0.baseAddress!, length) }
                }
            }
        }
        if let rw = recv {
            qp.consumeRecv()
            pushRecvCompletion(qp, rw, status: UInt32(SLUICE_WC_SUCCESS), req: req, r: r,
                               opcode: UInt32(isSend ? SLUICE_WC_OP_RECV : SLUICE_WC_OP_RECV_RDMA_WITH_IMM), length: UInt32(length))
        }
        return (.ok, payload)
    }

    private func pushRecvCompletion(_ qp: QueuePair, _ rw: sluice_recv_wqe, status: UInt32, req: RemoteRequest, r: RemotePeer,
                                    opcode: UInt32, length: UInt32) {
        var c = sluice_cqe()
        c.wr_id = rw.wr_id
        c.status = status
        c.opcode = opcode
        c.byte_len = length
        c.qp_num = qp.qpn
        c.src_qp = req.sourceQPN
        c.slid = req.sourceLID
        let withImm = req.opcode == UInt32(SLUICE_WR_SEND_WITH_IMM) || req.opcode == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        if withImm && status == UInt32(SLUICE_WC_SUCCESS) {
            c.imm_data = req.immediate
            c.wc_flags |= UInt32(SLUICE_WC_FLAG_WITH_IMM)
        }
        if r.ipv4 != 0 { c.wc_flags |= UInt32(SLUICE_WC_FLAG_GRH) }
        qp.recvCQ.push(c, solicited: req.solicited || status != UInt32(SLUICE_WC_SUCCESS))
    }

    /// Routers that left the directory (a lease expired): QPs connected to
    /// them fail with IBV_EVENT_QP_FATAL.
    func failQPsOfRoutersGone(_ present: Set<String>) {
        for s in sessions.values {
            for qp in s.qps.all where !qp.destroyed && qp.state != .error && qp.state != .reset {
                guard let r = qp.remote, !present.contains(r.router) else { continue }
                denyDataPath(qp, "router \(r.router) left the cluster directory; QP moved to ERR", rule: "fabric.directory")
                enter(qp, .error)
                s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
            }
        }
    }
}
