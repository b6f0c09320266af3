#if canImport(Glibc)
import Glibc
#endif
import SluiceCluster
import SluicePolicy
import SluiceWire

/// A cluster router on the verbs backend: QPs connected to QPs on other
/// routers run on the NIC, end to end. The routers connect the real QPs
/// and hand each other real keys over the authenticated fabric link; the
/// tenants see only virtual QPNs, LIDs and keys, as on one host.
///
/// Connecting. Both tenants move their QPs to RTR with each other's
/// virtual QPN and address (exchanged out of band, as ibv_rc_pingpong
/// does). At its tenant's RTR each router sends the other a `VerbsConnect`
/// (its real QPN, LID/GID and the send PSN it drew). The receiving router
/// checks it against its own tables (its QP exists, its tenant's RTR named
/// exactly that QP at that address on that router, both tenants consent)
/// and, once it has both its tenant's RTR and the peer's message, moves the
/// real QP to RTR (and to RTS once its tenant asked). The tenant's
/// modify_qp returns after the local checks; requests posted before the
/// real QP is connected wait at the head of the send queue, and fail with
/// IBV_WC_RETRY_EXC_ERR after the QP's retry budget if the peer never
/// answers. A message that arrives while the QP is still in RESET or INIT is kept
/// for its RTR. Each message says which of the receiver's epochs the sender
/// has applied, so a lost one is sent again when the peer shows it lacks
/// it, and a stalled request sends its QP's again on every retry.
///
/// Remote keys. A WRITE, READ or atomic carries the tenant's virtual rkey
/// and the remote tenant's virtual address. On first use of an rkey on a
/// connection the requesting router asks the target's router
/// (`VerbsKeyQuery`); the target checks the key against its own tables
/// (in the target QP's PD, the access the region, the QP and both tenants'
/// policies grant) and answers with the real rkey, the region's virtual
/// base and length and the real address it registered. The requester
/// caches it per connection, checks bounds and access itself, translates
/// the address and posts with the real key; the NIC checks again. A refused
/// query fails the request with IBV_WC_REM_ACCESS_ERR, audited at both
/// routers. Deregistering or re-registering a region at the target revokes
/// what was handed out (`VerbsKeyRevoke`); a request already on the wire
/// with the old real key is refused by the NIC.
final class RemoteVerbsLink {
    /// A `VerbsConnect` that arrived while the QP was in INIT: applied at
    /// the tenant's RTR if it names the same remote QP.
    var pending: (router: String, message: VerbsConnect)?
    /// The connection made at the tenant's latest RTR.
    var connection: Connection?

    /// Whether the tenant's receives go to the device: once connected, and
    /// only if the peer's tenant may post anything that consumes one.
    var takesReceives: Bool { connection.map { $0.peer != nil && $0.takesReceives } ?? false }

    final class Connection {
        let router: String
        /// Ours, drawn at RTR: the connection attempt, and the PSN our
        /// real QP sends from.
        let epoch: UInt64
        let sendPSN: UInt32
        let rtrAttrs: QPAttributes
        /// The tenant asked for RTS (with these attributes) before the real
        /// QP could follow.
        var rtsAttrs: QPAttributes?
        /// The tenant's access flags now (RTR->RTS and RTS->RTS may change
        /// them), and what the real QP was given: those, narrowed to the
        /// connection's consent; nil until the real QP is connected.
        var accessFlags: UInt32
        var appliedAccess: UInt32?
        /// The peer router's message we applied (real RTR done).
        var peer: VerbsConnect?
        /// What this QP may post to the peer's: both tenants' consent by
        /// this router's policies, and by the peer router's as it reported.
        var allowed: OperationSet = []
        /// The peer may post something that consumes a receive (SEND,
        /// SEND_WITH_IMM, WRITE_WITH_IMM) by this router's policies. If
        /// not, no receive is ever given to the device, so a SEND from a
        /// peer router that skipped its checks finds none (RNR), as the
        /// NIC, not this router, would deliver it.
        var takesReceives = false
        /// The real QP is at RTS.
        var realRTS = false
        /// The peer showed it applied our message.
        var peerHasOurs = false
        var lastSent: UInt64 = 0
        /// Requester: keys the target handed out, queries in flight, keys
        /// it refused (each fails the next request that uses it).
        var keys: [UInt32: RemoteKey] = [:]
        var queries: [UInt32: Query] = [:]
        var refused: Set<UInt32> = []
        var nextQueryID = UInt64.random(in: 1...(UInt64.max >> 1))
        /// Target: the virtual rkeys handed to the peer router.
        var granted: Set<UInt32> = []

        init(router: String, epoch: UInt64, sendPSN: UInt32, rtrAttrs: QPAttributes) {
            self.router = router
            self.epoch = epoch
            self.sendPSN = sendPSN
            self.rtrAttrs = rtrAttrs
            accessFlags = rtrAttrs.accessFlags
        }
    }

    struct RemoteKey {
        var realRkey: UInt32
        var virtualBase: UInt64
        var length: UInt64
        var realBase: UInt64
        var access: UInt32
    }

    struct Query {
        var id: UInt64
        var deadline: UInt64
        var retriesLeft: Int // -1: infinite
        var frame: [UInt8]
    }

    /// Keys cached per connection at most (a target has at most as many
    /// regions; a tenant cycling through random keys fails on the first).
    static let maxKeys = 4096
}

extension Router {
    // MARK: modify_qp

    /// The device's part of modify_qp on a cluster router: QPs connected to
    /// another router connect their real QP through the peer router;
    /// everything else is the local backend's.
    func modifyQPOnDevice(_ qp: QueuePair, to target: QPState, attrs: QPAttributes, peer: QueuePair?, remote: RemotePeer?) throws {
        guard let verbs else { return }
        guard let remote, cluster != nil else {
            if target == .reset { qp.verbsLink = nil }
            try verbs.modifyQP(qp, to: target, attrs: attrs, peer: peer)
            return
        }
        switch target {
        case .rtr:
            guard qp.real != nil else { throw Refusal(EINVAL, "the QP has no device QP", rule: "device") }
            let link = qp.verbsLink ?? RemoteVerbsLink()
            qp.verbsLink = link
            var epoch: UInt64 = 0
            while epoch == 0 { epoch = UInt64.random(in: 1...UInt64.max) }
            let conn = RemoteVerbsLink.Connection(router: remote.router, epoch: epoch, sendPSN: VerbsBackend.freshPSN(), rtrAttrs: attrs)
            link.connection = conn
            // A message the peer sent while this QP was in INIT.
            if let p = link.pending {
                link.pending = nil
                if p.router == remote.router, matches(p.message, remote), consents(qp, p.message, from: p.router) {
                    try applyPeer(qp, conn, p.message, remote: remote)
                }
            }
            sendConnect(qp, conn, remote: remote, yourEpoch: conn.peer?.epoch ?? 0, now: Sys.monotonicNanos())
        case .rts:
            guard let conn = qp.verbsLink?.connection else { throw Refusal(EINVAL, "the QP was not connected at RTR", rule: "device") }
            if conn.peer != nil && !conn.realRTS {
                try realRTS(qp, conn, attrs)
            } else {
                conn.rtsAttrs = attrs
            }
            conn.accessFlags = attrs.accessFlags
        default:
            if target == .reset { qp.verbsLink = nil }
            try verbs.modifyQP(qp, to: target, attrs: attrs, peer: nil)
        }
    }

    /// `flags` less the remote access the peer tenant may not use on this
    /// connection by both tenants' policies.
    private func narrowedAccess(_ flags: UInt32, _ qp: QueuePair, from peerTenant: String) -> UInt32 {
        guard fabric.enforcement else { return flags }
        let incoming = engine.connectionOperations(from: peerTenant, to: qp.session.tenant)
        var f = flags
        if incoming.isDisjoint(with: [.write, .writeWithImm]) { f &= ~UInt32(SLUICE_ACCESS_REMOTE_WRITE) }
        if incoming.isDisjoint(with: [.read]) { f &= ~UInt32(SLUICE_ACCESS_REMOTE_READ) }
        if incoming.isDisjoint(with: [.compareSwap, .fetchAdd]) { f &= ~UInt32(SLUICE_ACCESS_REMOTE_ATOMIC) }
        return f
    }

    /// The tenant changed its QP's access flags without changing state: the
    /// device's QP follows; a QP connected to another host's gets them
    /// narrowed to the connection's consent, as at connect.
    func changeAccessOnDevice(_ qp: QueuePair, to target: QPState, attrs: QPAttributes, peer: QueuePair?, remote: RemotePeer?) throws {
        guard let verbs else { return }
        guard remote != nil, cluster != nil, let conn = qp.verbsLink?.connection else {
            try verbs.modifyQP(qp, to: target, attrs: attrs, peer: peer)
            return
        }
        guard let m = conn.peer else {
            // The real QP waits for the peer's message (in INIT): the flags
            // are applied, narrowed, when it connects.
            conn.accessFlags = attrs.accessFlags
            conn.rtsAttrs?.accessFlags = attrs.accessFlags
            return
        }
        let narrowed = narrowedAccess(attrs.accessFlags, qp, from: m.tenant)
        if narrowed != conn.appliedAccess, let r = qp.real {
            // The real QP's state, which may lag the tenant's (RTR while the
            // tenant is at RTS and waits for nothing): flags alone.
            var a = RealQPAttributes(target: conn.realRTS ? .readyToSend : .readyToReceive)
            a.accessFlags = narrowed
            a.onlyAccessFlags = true
            if conn.realRTS {
                let rc = verbs.device.modifyQP(r.handle, a)
                guard rc == 0 else { throw verbs.refusal(RealError("ibv_modify_qp", rc)) }
                conn.appliedAccess = narrowed
            }
        }
        conn.accessFlags = attrs.accessFlags
        conn.rtsAttrs?.accessFlags = attrs.accessFlags
    }

    /// Both tenants' consent to the connection, by this router's policies;
    /// a refusal is audited (the QP is then never connected).
    private func consents(_ qp: QueuePair, _ m: VerbsConnect, from router: String) -> Bool {
        let d = engine.connect(from: qp.session.tenant, to: m.tenant)
        guard d.isAllowed || !fabric.enforcement else {
            refuseFrame(router, qpn: qp.qpn, d.rule, "connect from QP 0x\(String(m.sourceQPN, radix: 16)) (tenant \(m.tenant)) on router \(router) for QP 0x\(String(qp.qpn, radix: 16)): \(Router.reason(d))",
                        tenant: m.tenant)
            return false
        }
        return true
    }

    private func matches(_ m: VerbsConnect, _ r: RemotePeer) -> Bool {
        m.sourceQPN == r.qpn && (r.ipv4 != 0 ? m.sourceIPv4 == r.ipv4 : m.sourceLID == r.lid)
    }

    /// Real RTR towards the peer router's real QP (and RTS if the tenant
    /// already asked). The destination and PSNs are the routers' own.
    private func applyPeer(_ qp: QueuePair, _ conn: RemoteVerbsLink.Connection, _ m: VerbsConnect, remote: RemotePeer) throws {
        guard let verbs, let r = qp.real else { throw Refusal(EIO, "the QP has no device QP", rule: "device") }
        // The NIC grants the peer only the remote access both tenants'
        // policies allow on this connection (INIT -> INIT, before RTR): a
        // peer router that skipped its checks, holding a key granted for
        // WRITE, still cannot READ with it.
        var i = RealQPAttributes(target: .initial)
        i.accessFlags = narrowedAccess(conn.accessFlags, qp, from: m.tenant)
        let irc = verbs.device.modifyQP(r.handle, i)
        guard irc == 0 else { throw verbs.refusal(RealError("ibv_modify_qp", irc)) }
        var a = RealQPAttributes(target: .readyToReceive)
        a.pathMTU = min(conn.rtrAttrs.pathMTU, verbs.device.activeMTU)
        a.destQPN = m.realQPN
        a.rqPSN = m.sendPSN
        a.maxDestRdAtomic = max(conn.rtrAttrs.maxDestRdAtomic, 1)
        a.minRNRTimer = conn.rtrAttrs.minRNRTimer
        a.dlid = m.realLID
        if m.realLID == 0 { a.dgid = m.realGID }
        let rc = verbs.device.modifyQP(r.handle, a)
        guard rc == 0 else { throw verbs.refusal(RealError("ibv_modify_qp", rc)) }
        qp.realRecvPSN = m.sendPSN
        conn.appliedAccess = i.accessFlags
        log.record(event: "fabric.connect", subject: qp.session.subject, object: "qpn 0x\(String(qp.qpn, radix: 16))",
                   decision: .allow, rule: "peers", fields: ["peer": remote.router, "remoteQPN": "0x\(String(m.sourceQPN, radix: 16))",
                                                            "remoteTenant": m.tenant])
        conn.peer = m
        conn.allowed = engine.connectionOperations(from: qp.session.tenant, to: m.tenant)
            .intersection(OperationSet(rawValue: m.operations))
        conn.takesReceives = peerPostsReceives(from: m.tenant, to: qp.session.tenant)
        remote.tenant = m.tenant
        if let rts = conn.rtsAttrs { try realRTS(qp, conn, rts) }
    }

    /// Whether the peer's tenant may post anything that consumes one of our
    /// tenant's receives (SEND, SEND_WITH_IMM, WRITE_WITH_IMM).
    private func peerPostsReceives(from peerTenant: String, to tenant: String) -> Bool {
        !fabric.enforcement
            || !engine.connectionOperations(from: peerTenant, to: tenant).isDisjoint(with: [.send, .sendWithImm, .writeWithImm])
    }

    private func realRTS(_ qp: QueuePair, _ conn: RemoteVerbsLink.Connection, _ attrs: QPAttributes) throws {
        guard let verbs, let r = qp.real else { throw Refusal(EIO, "the QP has no device QP", rule: "device") }
        var a = RealQPAttributes(target: .readyToSend)
        a.sqPSN = conn.sendPSN
        a.timeout = attrs.timeout
        a.retryCount = attrs.retryCount
        a.rnrRetry = attrs.rnrRetry
        a.maxRdAtomic = max(attrs.maxRdAtomic, 1)
        // Flags the tenant changed at RTR->RTS reach the device, narrowed.
        let narrowed = conn.peer.map { narrowedAccess(attrs.accessFlags, qp, from: $0.tenant) } ?? conn.appliedAccess
        if let narrowed, narrowed != conn.appliedAccess {
            a.accessFlags = narrowed
            a.changesAccessFlags = true
        }
        let rc = verbs.device.modifyQP(r.handle, a)
        guard rc == 0 else { throw verbs.refusal(RealError("ibv_modify_qp", rc)) }
        if a.changesAccessFlags { conn.appliedAccess = a.accessFlags }
        qp.realSendPSN = conn.sendPSN
        conn.realRTS = true
        conn.rtsAttrs = nil
    }

    private func sendConnect(_ qp: QueuePair, _ conn: RemoteVerbsLink.Connection, remote: RemotePeer, yourEpoch: UInt64, now: UInt64) {
        guard let c = cluster, let verbs, let r = qp.real else { return }
        // What the peer's QP may post to this one, by this router's copies
        // of both tenants' policies; all, until the peer names its tenant
        // (the peer's router then checks its own copies alone).
        let ops = (conn.peer?.tenant ?? remote.tenant).map { engine.connectionOperations(from: $0, to: qp.session.tenant) }
            ?? OperationSet(rawValue: UInt32.max)
        // (A debug build's --test-forge-* flags make it claim otherwise.)
        let me = claimedSender(qp.session)
        let m = VerbsConnect(sourceQPN: qp.qpn, sourceLID: me.lid, sourceIPv4: me.ipv4, targetQPN: remote.qpn,
                             epoch: conn.epoch, yourEpoch: yourEpoch, realQPN: r.qpn, realLID: verbs.device.lid,
                             realGID: verbs.device.gid, sendPSN: conn.sendPSN, operations: ops.rawValue, tenant: me.tenant)
        conn.lastSent = now
        c.node.send(to: remote.router, LinkFrame.Frame(.data, stream: remote.qpn, body: m.encode()))
    }

    /// After a policy reload: a cross-host connection on the device whose
    /// tenants no longer consent fails (ERR, IBV_EVENT_QP_FATAL, audited),
    /// as a local one does; otherwise what its QP may post is recomputed,
    /// the real QP's remote access flags follow the new consent, and the
    /// device gets no more receives if the peer may no longer post
    /// anything that consumes one. (Keys already handed out stay cached at
    /// the peer router; the NIC holds them to the QP's new flags.)
    func reapplyCrossHostConsent() {
        guard verbs != nil, cluster != nil else { return }
        for s in sessions.values {
            for qp in s.qps.all where qp.remote != nil && qp.state != .error && qp.state != .reset {
                guard let conn = qp.verbsLink?.connection, let m = conn.peer else { continue }
                let d = engine.connect(from: s.tenant, to: m.tenant)
                guard d.isAllowed || !fabric.enforcement else {
                    log.record(event: "policy.enforce", subject: s.subject, verb: "modify_qp",
                               object: "qpn 0x\(String(qp.qpn, radix: 16))", decision: .deny, rule: d.rule,
                               reason: "connection to \(m.tenant) on router \(conn.router) withdrawn by a policy reload: " + Router.reason(d))
                    enter(qp, .error)
                    s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
                    continue
                }
                conn.allowed = engine.connectionOperations(from: s.tenant, to: m.tenant).intersection(OperationSet(rawValue: m.operations))
                let tookReceives = conn.takesReceives
                conn.takesReceives = peerPostsReceives(from: m.tenant, to: s.tenant)
                // Receives posted while they did not go to the device wait
                // in the ring of a QP that may have left the active list.
                if conn.takesReceives && !tookReceives { fabric.activate(qp) }
                qp.allowedOperations = remoteOperations(s)
                let narrowed = narrowedAccess(conn.accessFlags, qp, from: m.tenant)
                // A real QP still at RTR cannot change its flags (there is
                // no RTR->RTR): one that would lose access fails instead.
                if !conn.realRTS, let applied = conn.appliedAccess, applied & ~narrowed != 0 {
                    log.record(event: "policy.enforce", subject: s.subject, verb: "modify_qp",
                               object: "qpn 0x\(String(qp.qpn, radix: 16))", decision: .deny, rule: "peers",
                               reason: "a policy reload narrowed the remote access of the connection to \(m.tenant) on router \(conn.router) while its device QP is at RTR")
                    enter(qp, .error)
                    s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
                    continue
                }
                if conn.realRTS, narrowed != conn.appliedAccess, let verbs, let r = qp.real {
                    var a = RealQPAttributes(target: .readyToSend)
                    a.accessFlags = narrowed
                    a.onlyAccessFlags = true
                    let rc = verbs.device.modifyQP(r.handle, a)
                    if rc == 0 {
                        conn.appliedAccess = narrowed
                    } else {
                        denyDataPath(qp, "the device refused the QP's new access flags after a policy reload: \(String(cString: strerror(rc)))",
                                     rule: "device")
                        enter(qp, .error)
                        s.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
                    }
                }
            }
        }
    }

    // MARK: frames from other routers

    /// Frames for QPs on the verbs backend, and frames of the other
    /// backend, which a router refuses: every router of a cluster must run
    /// the same backend (a NIC takes a QP's receives ahead of time, so the
    /// software fabric's requests could not be matched to them).
    func handleVerbsFrame(from router: String, _ f: LinkFrame.Frame) {
        guard let kind = f.body.first else { return }
        guard verbs != nil, kind >= VerbsConnect.kind else {
            refuseFrame(router, qpn: f.stream, "fabric.backend",
                        "a \(kind >= VerbsConnect.kind ? "verbs" : "software") fabric message from router \(router); this router runs the \(verbs == nil ? "software" : "verbs") backend and every router of a cluster must run the same",
                        event: "fabric.frame")
            return
        }
        do {
            switch kind {
            case VerbsConnect.kind: takeConnect(from: router, qpn: f.stream, try VerbsConnect.decode(f.body))
            case VerbsKeyQuery.kind: answerKeyQuery(from: router, qpn: f.stream, try VerbsKeyQuery.decode(f.body))
            case VerbsKeyAnswer.kind: takeKeyAnswer(from: router, qpn: f.stream, try VerbsKeyAnswer.decode(f.body))
            case VerbsKeyRevoke.kind: takeKeyRevoke(from: router, qpn: f.stream, try VerbsKeyRevoke.decode(f.body))
            default:
                log.record(event: "fabric.frame", decision: .deny, rule: "fabric.frame", reason: "unknown message kind \(kind)",
                           fields: ["peer": router])
            }
        } catch {
            log.record(event: "fabric.frame", decision: .deny, rule: "fabric.frame", reason: "\(error)", fields: ["peer": router])
        }
    }

    /// A refused message from a peer router, audited. The peer resends
    /// on every retry of its QP, so, as for the software fabric's requests,
    /// one record a second per (router, QPN), with the count left out.
    private func refuseFrame(_ router: String, qpn: UInt32, _ rule: String, _ reason: String, tenant: String? = nil,
                             event: String = "fabric.connect") {
        guard let suppressed = cluster?.auditConnectionDenial(peer: router, qpn: qpn, now: Sys.monotonicNanos()) else { return }
        var fields = ["peer": router]
        if let tenant { fields["tenant"] = tenant }
        if suppressed > 0 { fields["suppressed"] = String(suppressed) }
        log.record(event: event, decision: .deny, rule: rule, reason: reason, fields: fields)
    }

    private func takeConnect(from router: String, qpn: UInt32, _ m: VerbsConnect) {
        let what = "QP 0x\(String(m.sourceQPN, radix: 16)) on router \(router) for QP 0x\(String(qpn, radix: 16))"
        guard m.targetQPN == qpn, let qp = qpsByNumber[qpn], !qp.destroyed, qp.real != nil else {
            refuseFrame(router, qpn: qpn, "fabric.connection", "connect from \(what): no such QP here", tenant: m.tenant)
            return
        }
        // What the sending router says of its QP, checked where this
        // router can (as for the software fabric's requests): the address
        // must be one the directory gives that router, and a claimed
        // tenant with an addressPool must hold it.
        if let c = cluster, let why = checkSource(from: router, lid: m.sourceLID, ipv4: m.sourceIPv4, tenant: m.tenant, c) {
            refuseFrame(router, qpn: qpn, "fabric.source", "connect from \(what) claiming tenant \(m.tenant): \(why)", tenant: m.tenant)
            return
        }
        let link = qp.verbsLink ?? RemoteVerbsLink()
        if qp.state == .reset || qp.state == .initialized {
            // Kept for the tenant's RTR (one per QP, the newest): the peer's
            // tenant may well connect first. Applied only if the RTR names
            // exactly that QP; a reset by the tenant drops it.
            qp.verbsLink = link
            link.pending = (router, m)
            return
        }
        guard qp.state == .rtr || qp.state == .rts, let remote = qp.remote, remote.router == router, matches(m, remote),
              let conn = link.connection, conn.router == router else {
            refuseFrame(router, qpn: qpn, "fabric.connection", "connect from \(what): the QP is not connected to it", tenant: m.tenant)
            return
        }
        guard consents(qp, m, from: router) else { return }
        let now = Sys.monotonicNanos()
        if let have = conn.peer {
            guard have.epoch == m.epoch else {
                // The peer reset its QP and connected again: this side must
                // too (an RC QP is connected once per RESET), as on a fabric.
                refuseFrame(router, qpn: qpn, "fabric.connection", "connect from \(what): a new connection to a QP already connected; reset it first",
                            tenant: m.tenant)
                return
            }
        } else {
            do {
                try applyPeer(qp, conn, m, remote: remote)
            } catch {
                let reason = (error as? Refusal)?.reason ?? "\(error)"
                denyDataPath(qp, "connecting the device QP to router \(router) failed: \(reason)", rule: "device")
                enter(qp, .error)
                qp.session.postAsyncEvent(UInt32(SLUICE_EVENT_QP_FATAL), qpn: qp.qpn)
                return
            }
            // Requests waiting for the connection go now.
            if qp.stall?.kind == .peerNotReady { qp.stall?.retryAt = 0 }
            fabric.activate(qp)
        }
        conn.peerHasOurs = m.yourEpoch == conn.epoch
        if !conn.peerHasOurs { sendConnect(qp, conn, remote: remote, yourEpoch: m.epoch, now: now) }
    }

    // MARK: keys, the target's side

    private func answerKeyQuery(from router: String, qpn: UInt32, _ q: VerbsKeyQuery) {
        guard let c = cluster else { return }
        let what = "rkey 0x\(String(q.rkey, radix: 16)) from QP 0x\(String(q.sourceQPN, radix: 16)) on router \(router)"
        // Only on an established connection, from exactly its other end.
        guard q.targetQPN == qpn, let qp = qpsByNumber[qpn], !qp.destroyed, qp.state == .rtr || qp.state == .rts,
              let remote = qp.remote, remote.router == router, remote.qpn == q.sourceQPN,
              remote.ipv4 != 0 ? remote.ipv4 == q.sourceIPv4 : remote.lid == q.sourceLID,
              let conn = qp.verbsLink?.connection, conn.peer != nil else {
            refuseFrame(router, qpn: qpn, "fabric.connection", "key query for \(what): no QP 0x\(String(qpn, radix: 16)) here is connected to it",
                        tenant: q.tenant, event: "fabric.key")
            return
        }
        func answer(_ a: VerbsKeyAnswer) {
            c.node.send(to: router, LinkFrame.Frame(.data, stream: q.sourceQPN, body: a.encode()))
        }
        func refuse(_ rule: String, _ reason: String) {
            denyDataPath(qp, "key query for \(what): \(reason)", rule: rule)
            answer(VerbsKeyAnswer(sourceQPN: qp.qpn, targetQPN: q.sourceQPN, id: q.id, rkey: q.rkey, granted: false))
        }
        guard let mr = qp.session.rkeys[q.rkey], mr.pd === qp.pd, !mr.dead, let real = mr.real else {
            return refuse("rkey", "the key does not exist in the QP's PD")
        }
        // The access the requester may use: the region's, the QP's, and
        // both tenants' consent for the operations it takes.
        let requester = conn.peer?.tenant ?? q.tenant
        func consents(_ ops: [OperationSet]) -> Bool {
            !fabric.enforcement || ops.contains { engine.workRequest(from: requester, to: qp.session.tenant, operation: $0).isAllowed }
        }
        var access: UInt32 = 0
        for (flag, ops) in [(SLUICE_ACCESS_REMOTE_WRITE, [OperationSet.write, .writeWithImm]),
                            (SLUICE_ACCESS_REMOTE_READ, [OperationSet.read]),
                            (SLUICE_ACCESS_REMOTE_ATOMIC, [OperationSet.compareSwap, .fetchAdd])] {
            let f = UInt32(flag)
            if mr.access & f != 0 && qp.attrs.accessFlags & f != 0 && consents(ops) { access |= f }
        }
        guard access & q.access != 0 else {
            return refuse("rkey.access", "the key, the QP or the policies do not grant access 0x\(String(q.access, radix: 16))")
        }
        conn.granted.insert(q.rkey)
        log.record(event: "fabric.key", subject: qp.session.subject, object: "qpn 0x\(String(qp.qpn, radix: 16))", decision: .allow,
                   rule: "rkey", fields: ["peer": router, "rkey": "0x\(String(q.rkey, radix: 16))", "remoteTenant": requester])
        answer(VerbsKeyAnswer(sourceQPN: qp.qpn, targetQPN: q.sourceQPN, id: q.id, rkey: q.rkey, granted: true, access: access,
                              realRkey: real.rkey, virtualBase: mr.iova, length: mr.length,
                              realBase: UInt64(UInt(bitPattern: mr.base))))
    }

    /// A region of `s` is deregistered or re-registered: peer routers that
    /// hold its real key forget it.
    func revokeRemoteKeys(_ s: Session, _ mr: MemoryRegion) {
        guard let c = cluster, verbs != nil else { return }
        for qp in s.qps.all where qp.pd === mr.pd {
            guard let conn = qp.verbsLink?.connection, conn.granted.remove(mr.rkey) != nil, let remote = qp.remote else { continue }
            c.node.send(to: remote.router, LinkFrame.Frame(.data, stream: remote.qpn,
                                                           body: VerbsKeyRevoke(sourceQPN: qp.qpn, targetQPN: remote.qpn, rkey: mr.rkey).encode()))
        }
    }

    // MARK: keys, the requester's side

    /// The requester's QP this frame is for, if it comes from the router
    /// and QP the QP is connected to.
    private func requesterConnection(_ router: String, qpn: UInt32, target: UInt32, source: UInt32) -> (QueuePair, RemoteVerbsLink.Connection)? {
        guard target == qpn, let qp = qpsByNumber[qpn], !qp.destroyed, let remote = qp.remote, remote.router == router,
              remote.qpn == source, let conn = qp.verbsLink?.connection, conn.router == router else { return nil }
        return (qp, conn)
    }

    private func takeKeyAnswer(from router: String, qpn: UInt32, _ a: VerbsKeyAnswer) {
        guard let (qp, conn) = requesterConnection(router, qpn: qpn, target: a.targetQPN, source: a.sourceQPN),
              let q = conn.queries[a.rkey], q.id == a.id else { return }
        conn.queries[a.rkey] = nil
        if a.granted {
            if conn.keys.count >= RemoteVerbsLink.maxKeys { conn.keys.removeAll() }
            conn.keys[a.rkey] = RemoteVerbsLink.RemoteKey(realRkey: a.realRkey, virtualBase: a.virtualBase, length: a.length,
                                                          realBase: a.realBase, access: a.access)
        } else {
            conn.refused.insert(a.rkey)
        }
        if qp.stall?.kind == .peerNotReady { qp.stall?.retryAt = 0 }
        fabric.activate(qp)
    }

    private func takeKeyRevoke(from router: String, qpn: UInt32, _ r: VerbsKeyRevoke) {
        guard let (_, conn) = requesterConnection(router, qpn: qpn, target: r.targetQPN, source: r.sourceQPN) else { return }
        conn.keys[r.rkey] = nil
    }

    // MARK: the data path

    /// Runs the head request of a QP connected to another router, on the
    /// NIC: called by the fabric once the request passed every local check
    /// (`local` and `inline` are its translated buffers) and the shaper.
    func executeRemoteVerbs(_ device: VerbsBackend, _ qp: QueuePair, _ w: sluice_send_wqe, _ wcOpcode: UInt32, total: UInt64,
                            local: [RealSGE], inline: RealSGE?, now: UInt64) -> SoftwareFabric.Outcome {
        guard let remote = qp.remote, let conn = qp.verbsLink?.connection else {
            return failAcross(qp, w, UInt32(SLUICE_WC_RETRY_EXC_ERR), wcOpcode, "fabric", "the QP has no connection to another router")
        }
        let interval = qp.attrs.timeout == 0 ? 100_000_000 : max(1_000_000, UInt64(4096) << UInt64(qp.attrs.timeout))
        let budget = qp.attrs.timeout == 0 ? -1 : Int(qp.attrs.retryCount)
        /// Waits for the peer router (the connection, a key), as a request
        /// waits for an ACK: after the QP's retry budget, RETRY_EXC_ERR.
        func waitForPeer(_ why: String, resend: () -> Void) -> SoftwareFabric.Outcome {
            let left = qp.stall.map { $0.kind == .peerNotReady ? $0.retriesLeft : budget } ?? budget
            if let s = qp.stall, s.kind == .peerNotReady, s.retryAt > now { return .wait(s) }
            if qp.stall?.kind == .peerNotReady && left == 0 {
                return failAcross(qp, w, UInt32(SLUICE_WC_RETRY_EXC_ERR), wcOpcode, "retry.transport",
                                  "no answer from router \(remote.router) (\(why)): retries exhausted")
            }
            resend()
            let next = qp.stall?.kind == .peerNotReady ? (left < 0 ? -1 : left - 1) : budget
            return .wait(Stall(kind: .peerNotReady, retryAt: now &+ interval, retriesLeft: next))
        }
        guard conn.peer != nil, conn.realRTS else {
            return waitForPeer("the connection") {
                if !(conn.peer != nil && conn.peerHasOurs) {
                    sendConnect(qp, conn, remote: remote, yourEpoch: conn.peer?.epoch ?? 0, now: now)
                }
            }
        }
        // Both tenants' consent: this router's tenant's, and the target's as
        // its router computed it (the NIC delivers SENDs unchecked).
        if fabric.enforcement {
            guard qp.allowedOperations.allowsWireOpcode(w.opcode) || uncheckedSender else {
                return failAcross(qp, w, UInt32(SLUICE_WC_LOC_QP_OP_ERR), wcOpcode, "operations",
                                  "\(qp.session.tenant)'s operations do not include opcode \(w.opcode)")
            }
            guard conn.allowed.allowsWireOpcode(w.opcode) || uncheckedSender else {
                return failAcross(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, "operations",
                                  "the tenants' policies do not allow opcode \(w.opcode) to \(conn.peer?.tenant ?? "the peer") on router \(remote.router)")
            }
        }
        let isAtomic = w.opcode == UInt32(SLUICE_WR_ATOMIC_CMP_AND_SWP) || w.opcode == UInt32(SLUICE_WR_ATOMIC_FETCH_AND_ADD)
        let isRead = w.opcode == UInt32(SLUICE_WR_RDMA_READ)
        let isWrite = w.opcode == UInt32(SLUICE_WR_RDMA_WRITE) || w.opcode == UInt32(SLUICE_WR_RDMA_WRITE_WITH_IMM)
        var target: (UInt64, UInt32)?
        if isAtomic || isRead || isWrite {
            target = (0, 0)
            if isAtomic && w.remote_addr & 7 != 0 {
                return failAcross(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, "atomic.alignment",
                                  "atomic at 0x\(String(w.remote_addr, radix: 16)) is not 8-byte aligned")
            }
            // A zero-length transfer touches no memory: no key, as on a NIC.
            if total > 0 {
                let need = UInt32(isAtomic ? SLUICE_ACCESS_REMOTE_ATOMIC : isRead ? SLUICE_ACCESS_REMOTE_READ : SLUICE_ACCESS_REMOTE_WRITE)
                if conn.refused.remove(w.rkey) != nil {
                    let outcome = failAcross(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), wcOpcode, "rkey",
                                             "router \(remote.router) refused rkey 0x\(String(w.rkey, radix: 16))")
                    noteRemoteAccessFault(qp, now: now)
                    return outcome
                }
                guard let k = conn.keys[w.rkey] else {
                    return queryKey(qp, conn, remote, w.rkey, need: need, now: now, interval: interval, budget: budget,
                                    wait: waitForPeer)
                }
                guard k.access & need != 0 || uncheckedSender, w.remote_addr >= k.virtualBase, total <= k.length,
                      w.remote_addr - k.virtualBase <= k.length - total else {
                    let outcome = failAcross(qp, w, UInt32(SLUICE_WC_REM_ACCESS_ERR), wcOpcode, "rkey.bounds",
                                             "[0x\(String(w.remote_addr, radix: 16)), +\(total)) with rkey 0x\(String(w.rkey, radix: 16)) is outside the region or its access")
                    noteRemoteAccessFault(qp, now: now)
                    return outcome
                }
                // The target's real address of the checked range (its
                // router's mapping): the NIC checks it against the real
                // registration again.
                let real = k.realBase &+ (w.remote_addr - k.virtualBase)
                if isAtomic && real & 7 != 0 {
                    // The region's iova, which the tenant chose, may align
                    // differently from its memory: check the word itself.
                    return failAcross(qp, w, UInt32(SLUICE_WC_REM_INV_REQ_ERR), wcOpcode, "atomic.alignment",
                                      "atomic target is not 8-byte aligned in the region's memory")
                }
                target = (real, k.realRkey)
            }
        }
        switch device.postAcross(qp, w, local: local, inline: inline, remote: target) {
        case .posted:
            qp.consumeSend()
            return .completed
        case .busy:
            return .wait(Stall(kind: .completionQueueFull, retryAt: now + 20_000, retriesLeft: -1))
        case .refused(let reason):
            return failAcross(qp, w, UInt32(SLUICE_WC_LOC_QP_OP_ERR), wcOpcode, "device", reason)
        }
    }

    /// Asks the target's router for a key (or waits for the answer to the
    /// question already asked, asking again after the QP's timeout).
    private func queryKey(_ qp: QueuePair, _ conn: RemoteVerbsLink.Connection, _ remote: RemotePeer, _ rkey: UInt32, need: UInt32,
                          now: UInt64, interval: UInt64, budget: Int,
                          wait: (String, () -> Void) -> SoftwareFabric.Outcome) -> SoftwareFabric.Outcome {
        guard let c = cluster else { return .wait(Stall(kind: .peerNotReady, retryAt: now &+ interval, retriesLeft: budget)) }
        if conn.queries[rkey] == nil {
            let id = conn.nextQueryID
            conn.nextQueryID &+= 1
            let frame = VerbsKeyQuery(sourceQPN: qp.qpn, sourceLID: qp.session.lid, sourceIPv4: qp.session.ipv4, targetQPN: remote.qpn,
                                      id: id, rkey: rkey, access: need, tenant: qp.session.tenant).encode()
            conn.queries[rkey] = RemoteVerbsLink.Query(id: id, deadline: now &+ interval, retriesLeft: budget, frame: frame)
            c.node.send(to: remote.router, LinkFrame.Frame(.data, stream: remote.qpn, body: frame))
            // A fresh wait: the retry budget counts from here.
            qp.stall = nil
            return .wait(Stall(kind: .peerNotReady, retryAt: now &+ interval, retriesLeft: budget))
        }
        return wait("the key query for rkey 0x\(String(rkey, radix: 16))") {
            if let q = conn.queries[rkey] { c.node.send(to: remote.router, LinkFrame.Frame(.data, stream: remote.qpn, body: q.frame)) }
        }
    }

    /// An error completion for the head request (the fabric moves the QP to
    /// ERR), behind what the device still holds for the QP.
    private func failAcross(_ qp: QueuePair, _ w: sluice_send_wqe, _ status: UInt32, _ opcode: UInt32,
                            _ rule: String, _ reason: String) -> SoftwareFabric.Outcome {
        denyDataPath(qp, reason, rule: rule)
        qp.consumeSend()
        var c = sluice_cqe()
        c.wr_id = w.wr_id
        c.status = status
        c.opcode = opcode
        c.qp_num = qp.qpn
        if !qp.inFlight.isEmpty {
            qp.behindInFlight.append(c)
        } else {
            qp.sendCQ.pushInOrder(c, solicited: false)
        }
        qp.held = nil
        qp.stall = nil
        qp.paid = false
        qp.progress = 0
        return .failed
    }

    /// Receives of a QP connected to another router go to its real QP as
    /// soon as they are posted (the peer's NIC sends without asking this
    /// router), each checked in the QP's PD first. Returns whether any moved.
    func pumpRemoteReceives(_ qp: QueuePair) -> Bool {
        guard let verbs, verbs.lost == nil, let r = qp.real, qp.remote != nil, qp.state == .rtr || qp.state == .rts,
              qp.verbsLink?.takesReceives == true else { return false }
        var moved = false
        while qp.recvInFlight < Int(qp.rqCapacity), qp.recvCQ.room >= 1, qp.recvCQ.realOutstanding < qp.recvCQ.realLimit {
            guard let n = qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) else {
                denyDataPath(qp, "receive queue producer index is corrupt; QP moved to ERR", rule: "ring")
                enter(qp, .error)
                return true
            }
            if n == 0 { break }
            let rw = qp.copyRecvWQE(qp.rqCons)
            var sges: [RealSGE] = []
            var bad: (UInt32, String, String)?
            if rw.num_sge > qp.maxRecvSGE {
                bad = (UInt32(SLUICE_WC_LOC_QP_OP_ERR), "sge", "receive request with \(rw.num_sge) SGEs, above the QP's \(qp.maxRecvSGE)")
            }
            for i in 0..<Int(min(rw.num_sge, qp.maxRecvSGE)) where bad == nil {
                let sge = rw.sge(i)
                if sge.length == 0 { continue }
                guard let mr = qp.session.lkeys[sge.lkey], mr.pd === qp.pd, mr.writable, let p = mr.local(sge.addr, UInt64(sge.length)),
                      let real = mr.real else {
                    bad = (UInt32(SLUICE_WC_LOC_PROT_ERR), "lkey", "receive lkey 0x\(String(sge.lkey, radix: 16)) does not cover its buffer")
                    break
                }
                sges.append(RealSGE(address: UInt64(UInt(bitPattern: p)), length: sge.length, lkey: real.lkey))
            }
            if bad == nil {
                let rc = verbs.device.postRecv(r.handle, RealRecv(wrID: rw.wr_id, sges: sges))
                if rc == ENOMEM { break }
                if rc != 0 { bad = (UInt32(SLUICE_WC_LOC_QP_OP_ERR), "device", "the device refused the receive: \(String(cString: strerror(rc)))") }
            }
            qp.consumeRecv()
            moved = true
            if let (status, rule, reason) = bad {
                // As a NIC fails a receive it cannot use: an error completion,
                // and the QP goes to ERR.
                var c = sluice_cqe()
                c.wr_id = rw.wr_id
                c.status = status
                c.opcode = UInt32(SLUICE_WC_OP_RECV)
                c.qp_num = qp.qpn
                qp.recvCQ.pushInOrder(c, solicited: true)
                denyDataPath(qp, reason, rule: rule)
                enter(qp, .error)
                return true
            }
            qp.recvHeld.append(rw.wr_id)
            qp.recvCQ.deviceOwed += 1
            qp.recvCQ.realOutstanding += 1
        }
        // Blocked by completions the tenant has not polled (not by what the
        // device owes, whose completions wake the router anyway): polling
        // rings nothing, so the router must look again by itself.
        let cq = qp.recvCQ
        if qp.recvInFlight < Int(qp.rqCapacity), cq.room < 1, UInt64(cq.deviceOwed) + UInt64(cq.waiting.count) < UInt64(cq.capacity),
           cq.realOutstanding < cq.realLimit, qp.pending(prod: qp.rqProd, cons: qp.rqCons, capacity: qp.rqCapacity) ?? 0 > 0 {
            remoteReceivesBlocked = true
        }
        return moved
    }
}

extension VerbsBackend {
    /// Posts one checked request of a QP connected to another router: no
    /// receive to match here (the peer's NIC finds one its router posted).
    func postAcross(_ qp: QueuePair, _ w: sluice_send_wqe, local: [RealSGE], inline: RealSGE?, remote: (UInt64, UInt32)?) -> PostResult {
        if let lost { return .refused("the device failed: \(lost)") }
        guard let rq = qp.real else { return .refused("no device QP") }
        guard qp.inFlight.count < Int(qp.sqCapacity) else { return .busy }
        guard qp.sendCQ.realOutstanding + 1 <= qp.sendCQ.realLimit else { return .busy }
        let signaled = qp.sqSigAll || w.send_flags & UInt32(SLUICE_SEND_SIGNALED) != 0
        let send = VerbsBackend.realSend(w, local: local, inline: inline, remote: remote)
        let rc = device.postSend(rq.handle, send)
        if rc == ENOMEM { return .busy }
        guard rc == 0 else { return .refused("the device refused the request: \(String(cString: strerror(rc)))") }
        qp.inFlight.append((w.wr_id, signaled))
        if signaled { qp.sendCQ.deviceOwed += 1 }
        qp.sendCQ.realOutstanding += 1
        return .posted
    }
}
