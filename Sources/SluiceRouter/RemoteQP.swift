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

    // Requester side: up to `maxWindow` requests in flight, completed in
    // the order of the send queue. They stay in the tenant's ring until they
    // complete (the queue's depth still bounds what is outstanding); the
    // first is the queue's head.
    var nextID: UInt64
    struct Sent {
        var id: UInt64
        var wqe: sluice_send_wqe
        var wcOpcode: UInt32
        var total: UInt64
        var frame: [UInt8]
        /// The target's answer, once it came (completed in order).
        var response: RemoteResponse?
    }
    var window: [Sent] = []
    /// Payload bytes of the requests in the window.
    var windowBytes: UInt64 { window.reduce(0) { $0 &+ $1.total } }
    /// When the oldest unanswered request is sent again (with everything
    /// after it: go-back-N), and how many more times (-1: forever).
    var deadline: UInt64 = 0
    var retriesLeft = -1
    /// RNR retries left for the head request (nil: not counting yet).
    var rnrLeft: Int?
    /// After an RNR answer: when the window is sent again from its head
    /// (the target ran nothing after the refused request).
    var resendAt: UInt64?
    /// A resend in progress: the index in `window` of the next request to
    /// send again (a backlogged link takes them a few at a time; nothing
    /// new is sent before them, so the target still sees ids in order).
    var resendNext: Int?

    /// Requests one QP may have in flight to another host.
    static let maxWindow = 16

    /// Requester: forget what is in flight (the QP failed or was reset).
    func resetRequester() {
        window.removeAll()
        rnrLeft = nil
        resendAt = nil
        resendNext = nil
    }

    /// Requester: an id for the next request.
    func takeID() -> UInt64 {
        let id = nextID
        nextID &+= 1
        return id
    }

    // Target side: requests run strictly in id order. `expected` is the
    // next id to run; a request after a gap (one refused with RNR, or
    // lost) is dropped until the requester sends again from the gap; the
    // last `maxWindow` answers are kept for retransmissions (a READ's is
    // not: it is read again); after an error answer nothing newer runs.
    var expected: UInt64?
    var answers: [(id: UInt64, response: [UInt8]?)] = []
    var halted = false

    /// How far from `expected` an id still belongs to this connection. Ids
    /// go up by one per request from a random start in 2^63, so a real
    /// retransmission or gap is always close; an id far away is a
    /// requester that reset its QP and started again.
    static let staleWindow: UInt64 = 1 << 32

    enum Arrival: Equatable {
        /// The next request in order (or the first of a connection): run it.
        case run
        /// Ran before and still cached: answer it again.
        case answer([UInt8])
        /// A READ that ran before: read it again (nothing changes).
        case rerun
        /// Already run and forgotten, after a gap, or after an error: drop it.
        case stale
    }

    /// Target: what to do with a request carrying `id`, sent when the
    /// requester's oldest uncompleted request was `base`. A request of a
    /// connection this target has run nothing of (the first, or a
    /// requester that reset its QP and started again from a new random
    /// id, far away) runs only if it is that oldest one: one after it
    /// whose predecessor was lost must not run first.
    func arrival(of id: UInt64, base: UInt64) -> Arrival {
        guard let e = expected, e &- base <= RemotePeer.staleWindow || base &- e <= RemotePeer.staleWindow else {
            return id == base ? .run : .stale
        }
        if id == e { return halted ? .stale : .run }
        let behind = e &- id
        if behind <= RemotePeer.staleWindow {
            guard let a = answers.last(where: { $0.id == id }) else { return .stale }
            return a.response.map { .answer($0) } ?? .rerun
        }
        return .stale
    }

    /// Target: request `id` (which `arrival` said to run) ran; `response`
    /// is what a retransmission gets (nil for a READ); `failed`: it was
    /// answered with an error, after which nothing newer runs.
    func executed(_ id: UInt64, response: [UInt8]?, failed: Bool) {
        if id != expected { startOver() }
        expected = id &+ 1
        answers.append((id, response))
        if answers.count > RemotePeer.maxWindow { answers.removeFirst() }
        if failed { halted = true }
    }

    /// Target: request `id` found no receive (RNR); it runs nothing, and
    /// requests after it wait for it.
    func notReady(_ id: UInt64) {
        if id != expected {
            startOver()
            expected = id
        }
    }

    private func startOver() {
        answers.removeAll()
        halted = false
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

    /// The retransmission interval of a QP's requests to another host: the
    /// QP's timeout (4.096 us << timeout), at least 1 ms; timeout 0 means
    /// forever in InfiniBand, retried every 100 ms here.
    static func remoteInterval(_ qp: QueuePair) -> UInt64 {
        qp.attrs.timeout == 0 ? 100_000_000 : max(1_000_000, UInt64(4096) << UInt64(qp.attrs.timeout))
    }

    /// Whether the link to `router` has room for `bytes` more now (else a
    /// request waits, as behind a full send queue, so one busy host pair
    /// cannot grow the link's buffer without bound).
    func linkHasRoom(_ c: ClusterAgent, to router: String, bytes: Int) -> Bool {
        guard let queued = c.node.queuedBytes(to: router) else { return true }
        return queued + bytes <= Router.linkBacklogLimit
    }

    /// The checks of a request to another host this router makes itself
    /// (the target makes its own): the operation and the message size. Nil
    /// when they pass; else the completion status, rule and reason.
    func checkRemoteRequest(_ qp: QueuePair, _ w: sluice_send_wqe, total: UInt64, enforcement: Bool) -> (UInt32, String, String)? {
        guard qp.allowedOperations.allowsWireOpcode(w.opcode) || !enforcement || uncheckedSender else {
            return (UInt32(SLUICE_WC_LOC_QP_OP_ERR), "operations", "\(qp.session.tenant)'s operations do not include opcode \(w.opcode)")
        }
        guard total <= UInt64(maxRemoteMessage) else {
            return (UInt32(SLUICE_WC_LOC_LEN_ERR), "length", "a message of \(total) bytes to another host is above the fabric's \(maxRemoteMessage)")
        }
        return nil
    }

    /// Sends a checked, shaped request of `qp` to the QP on another router
    /// and adds it to the QP's window; its completion comes with the
    /// answer. With no link up yet, the frame waits (bounded) for the link
    /// this starts; if it cannot be queued or the link fails it is lost, as
    /// on a fabric, and the retransmission timer sends it again.
    func sendRemote(_ qp: QueuePair, _ r: RemotePeer, _ c: ClusterAgent, _ w: sluice_send_wqe, _ wcOpcode: UInt32,
                    total: UInt64, gather src: [(UnsafeRawPointer, Int)], now: UInt64) {
        let carries = w.opcode == UInt32(SLUICE_WR_SEND) || w.opcode == UInt32(SLUICE_WR_SEND_WITH_IMM)
            || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE) || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        var payload: [UInt8] = []
        if carries {
            payload.reserveCapacity(Int(total))
            for (p, n) in src { payload += UnsafeRawBufferPointer(start: p, count: n) }
        }
        let me = claimedSender(qp.session)
        let id = r.takeID()
        let req = RemoteRequest(opcode: w.opcode, solicited: w.send_flags & UInt32(SLUICE_SEND_SOLICITED) != 0,
                                sourceQPN: qp.qpn, sourceLID: me.lid, sourceIPv4: me.ipv4, id: id, base: r.window.first?.id ?? id,
                                rkey: w.rkey, remoteAddress: w.remote_addr, compareAdd: w.compare_add, swap: w.swap,
                                immediate: w.imm_data, length: UInt32(total), tenant: me.tenant, payload: payload)
        let frame = req.encode()
        if r.window.allSatisfy({ $0.response != nil }) {
            // Nothing else unanswered: this request's timer starts now.
            r.deadline = now &+ Router.remoteInterval(qp)
            r.retriesLeft = qp.attrs.timeout == 0 ? -1 : Int(qp.attrs.retryCount)
        }
        r.window.append(RemotePeer.Sent(id: id, wqe: w, wcOpcode: wcOpcode, total: total, frame: frame))
        c.node.send(to: r.router, LinkFrame.Frame(.data, stream: r.qpn, body: frame))
    }

    /// Goes on sending the window's unanswered requests again, in order,
    /// from `resendNext`, while the link has room. True when all went.
    func resendRemote(_ r: RemotePeer, _ c: ClusterAgent) -> Bool {
        var k = r.resendNext ?? r.window.count
        while k < r.window.count {
            if r.window[k].response == nil {
                guard linkHasRoom(c, to: r.router, bytes: r.window[k].frame.count) else { break }
                c.node.send(to: r.router, LinkFrame.Frame(.data, stream: r.qpn, body: r.window[k].frame))
            }
            k += 1
        }
        r.resendNext = k < r.window.count ? k : nil
        return r.resendNext == nil
    }

    enum RemoteFinish {
        case completed
        /// An error completion was written; the QP goes to ERR.
        case failed
        /// Receiver not ready: send the window again after this many ns.
        case notReady(UInt64)
    }

    /// Completes the head request of the window with the target's answer.
    /// The caller checked the send CQ has room.
    func finishRemote(_ qp: QueuePair, _ r: RemotePeer, _ sent: RemotePeer.Sent, _ resp: RemoteResponse, now: UInt64) -> RemoteFinish {
        let w = sent.wqe, wcOpcode = sent.wcOpcode, total = sent.total
        r.tenant = resp.tenant
        switch resp.status {
        case .ok:
            r.rnrLeft = nil
            let isRead = w.opcode == UInt32(SLUICE_WR_RDMA_READ)
            let isAtomic = w.opcode == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
            if isRead || isAtomic {
                guard UInt64(resp.payload.count) == total else {
                    failRemote(qp, w, 7 /* IBV_WC_BAD_RESP_ERR; SLUICE_WC_* are IBV_WC_* */, wcOpcode, "fabric",
                               "router \(r.router) answered \(resp.payload.count) bytes for \(total)")
                    return .failed
                }
                // The local buffers again: a region deregistered meanwhile is gone.
                var off = 0
                for i in 0..<Int(w.num_sge) {
                    let sge = w.sge(i)
                    if sge.length == 0 { continue }
                    guard let mr = qp.session.lkeys[sge.lkey], mr.pd === qp.pd, mr.writable,
                          let p = mr.local(sge.addr, UInt64(sge.length)) else {
                        failRemote(qp, w, UInt32(SLUICE_WC_LOC_PROT_ERR), wcOpcode, "lkey",
                                   "lkey 0x\(String(sge.lkey, radix: 16)) no longer covers its buffer")
                        return .failed
                    }
                    let n = min(Int(sge.length), resp.payload.count - off)
                    _ = resp.payload.withUnsafeBytes { memmove(p, $0.baseAddress! + off, n) }
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
            qp.session.allows &+= 1
            return .completed
        case .receiverNotReady:
            let budget = qp.attrs.rnrRetry == 7 ? -1 : Int(qp.attrs.rnrRetry)
            let left = r.rnrLeft ?? budget
            if left == 0 {
                r.rnrLeft = nil
                failRemote(qp, w, UInt32(SLUICE_WC_RNR_RETRY_EXC_ERR), wcOpcode, "retry.rnr", "receiver not ready: RNR retries exhausted")
                return .failed
            }
            r.rnrLeft = left < 0 ? -1 : left - 1
            return .notReady(SoftwareFabric.rnrDelayNanos(resp.rnrDelayCode))
        case .remoteAccessError:
            failRemote(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), wcOpcode, "rkey",
                       "router \(r.router) refused the remote access (key, bounds or access)")
            noteRemoteAccessFault(qp, now: now)
            return .failed
        case .remoteInvalidRequest:
            failRemote(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, "fabric.target",
                       "router \(r.router) refused the request as invalid")
            return .failed
        case .remoteOperationError:
            failRemote(qp, w, UInt32(SLUICE_WC_REM_OP_ERR), wcOpcode, "fabric.target", "the remote QP failed the request")
            return .failed
        }
    }

    /// An error completion for the head request (the caller moves the QP
    /// to ERR, which flushes what was posted after it).
    func failRemote(_ qp: QueuePair, _ w: sluice_send_wqe, _ status: UInt32, _ opcode: UInt32,
                    _ rule: String, _ reason: String) {
        denyDataPath(qp, reason, rule: rule)
        qp.remote?.resetRequester()
        qp.consumeSend()
        var c = sluice_cqe()
        c.wr_id = w.wr_id
        c.status = status
        c.opcode = opcode
        c.qp_num = qp.qpn
        qp.sendCQ.push(c, solicited: false)
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
        // Only answers to requests in the window, from the router and QP
        // this QP is connected to; anything else is stale and dropped.
        guard let qp = qpsByNumber[qpn], !qp.destroyed, qp.state == .rts, let r = qp.remote, r.router == router,
              r.qpn == resp.sourceQPN, let i = r.window.firstIndex(where: { $0.id == resp.id }), r.window[i].response == nil else { return }
        r.window[i].response = resp
        // The fabric completes it on its next visit (in order, with CQ room).
        if i == 0 || r.window[..<i].allSatisfy({ $0.response != nil }) {
            if qp.stall != nil { qp.stall?.retryAt = 0 } else { qp.stall = Stall(kind: .peerNotReady, retryAt: 0, retriesLeft: -1) }
            fabric.activate(qp)
        }
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
        let arrival = r.arrival(of: req.id, base: req.base)
        switch arrival {
        case .answer(let cached):
            c.node.send(to: router, LinkFrame.Frame(.data, stream: req.sourceQPN, body: cached))
            return
        case .stale:
            // Run and forgotten (the requester has its answer), after a
            // gap (the requester sends again from the gap), or after an
            // error: running it would run it twice or out of order.
            return
        case .run, .rerun:
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
        // An RNR answer ran nothing: requests after it are dropped until the
        // requester sends again from it, with the same ids. A READ may run
        // again (RC allows it, nothing changes), so its possibly large answer
        // is not kept; anything else is answered from the cache if
        // retransmitted. A READ run again changes nothing here.
        if arrival == .run {
            if status == .receiverNotReady {
                r.notReady(req.id)
            } else {
                r.executed(req.id, response: req.opcode == UInt32(SLUICE_WR_RDMA_READ) ? nil : resp, failed: status != .ok)
            }
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
