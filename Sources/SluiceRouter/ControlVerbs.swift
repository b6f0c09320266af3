#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys
import SluicePolicy

/// The control verbs. Each one validates every field of its request before
/// it touches a table, and answers a refusal with the errno libibverbs
/// documents for that verb.
extension Router {
    func open(_ s: Session) throws -> Reply {
        guard !s.opened else { throw Refusal(EINVAL, "the session is already open") }
        var rep = sluice_open_rep()
        withUnsafeMutableBytes(of: &rep.gid) { $0.copyBytes(from: s.gidBytes) }
        rep.virtual_ipv4 = s.ipv4
        rep.lid = s.lid
        rep.pkey = 0xffff
        rep.max_qp = config.maxQP
        rep.max_qp_wr = config.maxQPWR
        rep.max_sge = SLUICE_MAX_SGE
        rep.max_cq = config.maxCQ
        rep.max_cqe = config.maxCQE
        rep.max_mr = config.maxMR
        rep.max_mr_size = config.maxMRSize
        rep.max_pd = config.maxPD
        rep.max_inline = SLUICE_MAX_INLINE
        rep.active_mtu = 5 // IBV_MTU_4096
        withUnsafeMutableBytes(of: &rep.tenant) { $0.copyBytes(from: Array(s.tenant.utf8.prefix(63))) }
        let fds = [s.pageFD, s.doorbellWrite, s.asyncRead]
        // The reply sender closes these after passing them on.
        s.pageFD = -1
        s.doorbellWrite = -1
        s.asyncRead = -1
        s.opened = true
        return Reply(rep, fds: fds, object: "endpoint lid=\(s.lid)")
    }

    // MARK: protection domains

    func allocPD(_ s: Session) throws -> Reply {
        guard s.pds.count < config.maxPD else { throw Refusal(ENOMEM, "protection domain limit \(config.maxPD) reached") }
        let decision = engine.allocPD(tenant: s.tenant, current: usage[s.tenant, default: .init()].pds)
        try enforce(decision)
        let pd = ProtectionDomain()
        try verbs?.allocPD(pd)
        pd.handle = s.pds.insert(pd)
        usage[s.tenant, default: .init()].pds += 1
        var rep = sluice_handle_rep()
        rep.handle = pd.handle
        return Reply(rep, object: "pd \(pd.handle)", rule: decision.rule)
    }

    func deallocPD(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let pd = s.pds.lookup(req.handle) else { throw Refusal(EINVAL, "no protection domain \(req.handle) in this session") }
        guard pd.users == 0 else { throw Refusal(EBUSY, "protection domain \(req.handle) still has \(pd.users) MRs or QPs") }
        s.pds.remove(req.handle)
        verbs?.deallocPD(pd)
        usage[s.tenant, default: .init()].pds -= 1
        return Reply(sluice_empty_rep(), object: "pd \(req.handle)")
    }

    // MARK: memory regions

    static let supportedAccess = UInt32(SLUICE_ACCESS_LOCAL_WRITE | SLUICE_ACCESS_REMOTE_WRITE | SLUICE_ACCESS_REMOTE_READ
        | SLUICE_ACCESS_REMOTE_ATOMIC | SLUICE_ACCESS_RELAXED_ORDERING)

    /// Checks a memfd the tenant sent and maps the requested window of it.
    /// An unsealed fd could be truncated under the router and fault it, so
    /// the seals and the size come first.
    func mapTenantMemory(fd: Int32, fdOffset: UInt64, mapLength: UInt64, pageOffset: UInt64, length: UInt64,
                         writable: Bool) throws -> SharedMapping {
        let page = UInt64(SLUICE_PAGE)
        guard fdOffset % page == 0, mapLength % page == 0, mapLength > 0 else {
            throw Refusal(EINVAL, "fd_offset \(fdOffset) and map_length \(mapLength) must be non-zero page multiples")
        }
        guard mapLength <= config.maxMRSize + 2 * page, pageOffset < page, length <= mapLength - pageOffset else {
            throw Refusal(EINVAL, "the mapping of \(mapLength) bytes does not cover \(length) bytes at page offset \(pageOffset)")
        }
        let seals = sluice_get_seals(fd)
        guard seals >= 0 else {
            throw Refusal(EINVAL, "the memory fd is not a sealable memfd")
        }
        let required = sluice_required_mr_seals()
        guard seals & required == required else {
            throw Refusal(EINVAL, "the memfd is not sealed against shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW)")
        }
        // Ordinary shared memory only: a hugetlb memfd could have a hole
        // punched in it and fault the router with SIGBUS when the huge page
        // pool is empty (its block size is the huge page size).
        guard try Sys.blockSize(fd) == Int(SLUICE_PAGE) else {
            throw Refusal(EINVAL, "the memfd is not ordinary shared memory (hugetlb memfds are refused)")
        }
        let size = UInt64(try Sys.fileSize(fd))
        guard fdOffset <= size, mapLength <= size - fdOffset else {
            throw Refusal(EINVAL, "the memfd holds \(size) bytes, fewer than offset \(fdOffset) + \(mapLength)")
        }
        do {
            return try SharedMapping(fd: fd, offset: Int(fdOffset), length: Int(mapLength), writable: writable)
        } catch let e as SystemError {
            throw Refusal(e.errno == EACCES || e.errno == EPERM ? EACCES : ENOMEM, "cannot map the memfd: \(e)")
        }
    }

    func regMR(_ s: Session, _ req: sluice_reg_mr_req, fd: Int32) throws -> Reply {
        guard let pd = s.pds.lookup(req.pd) else { throw Refusal(EINVAL, "no protection domain \(req.pd) in this session") }
        guard s.mrs.count < config.maxMR else { throw Refusal(ENOMEM, "memory region limit \(config.maxMR) reached") }
        guard req.access & ~Router.supportedAccess == 0 else {
            throw Refusal(EINVAL, "access flags 0x\(String(req.access & ~Router.supportedAccess, radix: 16)) are not supported")
        }
        let remoteWriteLike = UInt32(SLUICE_ACCESS_REMOTE_WRITE | SLUICE_ACCESS_REMOTE_ATOMIC)
        if req.access & remoteWriteLike != 0 && req.access & UInt32(SLUICE_ACCESS_LOCAL_WRITE) == 0 {
            throw Refusal(EINVAL, "remote write or atomic access requires local write")
        }
        guard req.length > 0, req.length <= config.maxMRSize else {
            throw Refusal(EINVAL, "length \(req.length) is not within 1...\(config.maxMRSize)")
        }
        guard req.addr <= UInt64.max - req.length, req.iova <= UInt64.max - req.length else {
            throw Refusal(EINVAL, "the region wraps the address space")
        }
        guard req.page_offset == req.addr % UInt64(SLUICE_PAGE) else {
            throw Refusal(EINVAL, "page_offset \(req.page_offset) does not match the address")
        }
        let held = usage[s.tenant, default: .init()]
        let decision = engine.regMR(tenant: s.tenant, bytes: req.length, access: req.access,
                                    currentCount: held.mrs, currentBytes: held.registeredBytes)
        try enforce(decision)
        let writable = req.access & UInt32(SLUICE_ACCESS_LOCAL_WRITE) != 0
        let mapping = try mapTenantMemory(fd: fd, fdOffset: req.fd_offset, mapLength: req.map_length,
                                          pageOffset: req.page_offset, length: req.length, writable: writable)
        let mr = MemoryRegion(pd: pd, addr: req.addr, length: req.length, iova: req.iova, access: req.access,
                              mapping: mapping, pageOffset: Int(req.page_offset))
        try verbs?.regMR(mr)
        mr.lkey = mintKey(unusedIn: s.lkeys)
        mr.rkey = mintKey(unusedIn: s.rkeys)
        mr.handle = s.mrs.insert(mr)
        s.lkeys[mr.lkey] = mr
        s.rkeys[mr.rkey] = mr
        pd.users += 1
        usage[s.tenant, default: .init()].mrs += 1
        usage[s.tenant, default: .init()].registeredBytes += req.length
        var rep = sluice_reg_mr_rep()
        rep.handle = mr.handle
        rep.lkey = mr.lkey
        rep.rkey = mr.rkey
        return Reply(rep, object: "mr \(mr.handle) pd \(pd.handle) length \(req.length) access 0x\(String(req.access, radix: 16))",
                     rule: decision.rule)
    }

    func deregMR(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let mr = s.mrs.remove(req.handle) else { throw Refusal(EINVAL, "no memory region \(req.handle) in this session") }
        // Its keys die now, for everyone: later work requests fail to resolve them.
        mr.dead = true
        revokeRemoteKeys(s, mr)
        verbs?.deregMR(mr)
        s.lkeys[mr.lkey] = nil
        s.rkeys[mr.rkey] = nil
        mr.pd.users -= 1
        usage[s.tenant, default: .init()].mrs -= 1
        usage[s.tenant, default: .init()].registeredBytes -= mr.length
        return Reply(sluice_empty_rep(), object: "mr \(req.handle)")
    }

    func remapMR(_ s: Session, _ req: sluice_remap_mr_req, fd: Int32) throws -> Reply {
        guard let mr = s.mrs.lookup(req.handle) else { throw Refusal(EINVAL, "no memory region \(req.handle) in this session") }
        guard req.page_offset == mr.addr % UInt64(SLUICE_PAGE) else {
            throw Refusal(EINVAL, "page_offset \(req.page_offset) does not match the region's address")
        }
        let mapping = try mapTenantMemory(fd: fd, fdOffset: req.fd_offset, mapLength: req.map_length,
                                          pageOffset: req.page_offset, length: mr.length, writable: mr.writable)
        revokeRemoteKeys(s, mr)
        if let verbs {
            // The device registered the old mapping: register the new one
            // (new real keys; the tenant's virtual ones do not change).
            let old = (mr.mapping, mr.pageOffset, mr.real)
            mr.mapping = mapping
            mr.pageOffset = Int(req.page_offset)
            do {
                try verbs.regMR(mr)
            } catch {
                (mr.mapping, mr.pageOffset, mr.real) = old
                throw error
            }
            // Requests the device holds may use the old registration: it
            // (and the old mapping) stay until they complete.
            if let r = old.2 { verbs.replaced(r, mapping: old.0, of: mr) }
        }
        mr.mapping = mapping
        mr.pageOffset = Int(req.page_offset)
        return Reply(sluice_empty_rep(), object: "mr \(req.handle)")
    }

    // MARK: completion channels and queues

    func createChannel(_ s: Session) throws -> Reply {
        guard s.channels.count < config.maxCQ else { throw Refusal(ENOMEM, "completion channel limit reached") }
        let (readEnd, writeEnd) = try Sys.pipe(nonblockingRead: false, nonblockingWrite: true)
        let ch = CompletionChannel(writeEnd: writeEnd)
        ch.handle = s.channels.insert(ch)
        var rep = sluice_handle_rep()
        rep.handle = ch.handle
        return Reply(rep, fds: [readEnd], object: "channel \(ch.handle)")
    }

    func destroyChannel(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let ch = s.channels.lookup(req.handle) else { throw Refusal(EINVAL, "no completion channel \(req.handle) in this session") }
        guard ch.users == 0 else { throw Refusal(EBUSY, "completion channel \(req.handle) still has \(ch.users) CQs") }
        s.channels.remove(req.handle)
        return Reply(sluice_empty_rep(), object: "channel \(req.handle)")
    }

    static func ringCapacity(_ n: UInt32) -> UInt32 {
        var c: UInt32 = 1
        while c < n { c <<= 1 }
        return c
    }

    func createCQ(_ s: Session, _ req: sluice_create_cq_req) throws -> Reply {
        guard req.cqe >= 1, req.cqe <= config.maxCQE else { throw Refusal(EINVAL, "cqe \(req.cqe) is not within 1...\(config.maxCQE)") }
        guard s.cqs.count < config.maxCQ else { throw Refusal(ENOMEM, "completion queue limit \(config.maxCQ) reached") }
        var channel: CompletionChannel?
        if req.channel != SLUICE_NO_HANDLE {
            guard let ch = s.channels.lookup(req.channel) else { throw Refusal(EINVAL, "no completion channel \(req.channel) in this session") }
            channel = ch
        }
        let decision = engine.createCQ(tenant: s.tenant, depth: req.cqe, current: usage[s.tenant, default: .init()].cqs)
        try enforce(decision)
        let capacity = Router.ringCapacity(req.cqe + 1)
        let size = Int(sluice_cq_size(capacity))
        let fd = try Sys.memfdCreate("sluice-cq", size: size)
        let mapping: SharedMapping
        do {
            mapping = try SharedMapping(fd: fd, length: size)
        } catch {
            Sys.close(fd)
            throw error
        }
        let cq = CompletionQueue(capacity: capacity, mapping: mapping, channel: channel)
        do {
            try verbs?.createCQ(cq)
        } catch {
            Sys.close(fd)
            throw error
        }
        cq.handle = s.cqs.insert(cq)
        channel?.users += 1
        usage[s.tenant, default: .init()].cqs += 1
        var rep = sluice_create_cq_rep()
        rep.handle = cq.handle
        rep.capacity = capacity
        rep.ring_size = UInt64(size)
        return Reply(rep, fds: [fd], object: "cq \(cq.handle) capacity \(capacity)", rule: decision.rule)
    }

    func destroyCQ(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let cq = s.cqs.lookup(req.handle) else { throw Refusal(EINVAL, "no completion queue \(req.handle) in this session") }
        guard cq.users == 0 else { throw Refusal(EBUSY, "completion queue \(req.handle) is still used by \(cq.users) QPs") }
        s.cqs.remove(req.handle)
        verbs?.destroyCQ(cq)
        cq.channel?.users -= 1
        usage[s.tenant, default: .init()].cqs -= 1
        return Reply(sluice_empty_rep(), object: "cq \(req.handle)")
    }

    // MARK: queue pairs

    func createQP(_ s: Session, _ req: sluice_create_qp_req) throws -> Reply {
        try checkQuarantine(s)
        guard req.qp_type == UInt32(SLUICE_QPT_RC) else { throw Refusal(EOPNOTSUPP, "QP type \(req.qp_type) is not supported; only RC") }
        guard let pd = s.pds.lookup(req.pd) else { throw Refusal(EINVAL, "no protection domain \(req.pd) in this session") }
        guard let scq = s.cqs.lookup(req.send_cq) else { throw Refusal(EINVAL, "no completion queue \(req.send_cq) in this session") }
        guard let rcq = s.cqs.lookup(req.recv_cq) else { throw Refusal(EINVAL, "no completion queue \(req.recv_cq) in this session") }
        guard s.qps.count < config.maxQP else { throw Refusal(ENOMEM, "queue pair limit \(config.maxQP) reached") }
        guard req.max_send_wr <= config.maxQPWR, req.max_recv_wr <= config.maxQPWR else {
            throw Refusal(EINVAL, "work request depth above \(config.maxQPWR)")
        }
        guard req.max_send_sge <= SLUICE_MAX_SGE, req.max_recv_sge <= SLUICE_MAX_SGE else {
            throw Refusal(EINVAL, "more than \(SLUICE_MAX_SGE) SGEs per work request")
        }
        guard req.max_inline_data <= SLUICE_MAX_INLINE else {
            throw Refusal(EINVAL, "inline data above \(SLUICE_MAX_INLINE) bytes")
        }
        let decision = engine.createQP(tenant: s.tenant, sendDepth: req.max_send_wr, recvDepth: req.max_recv_wr,
                                       sendSGE: req.max_send_sge, recvSGE: req.max_recv_sge, inlineBytes: req.max_inline_data,
                                       current: usage[s.tenant, default: .init()].qps)
        try enforce(decision)
        let now = Sys.monotonicNanos()
        let limits = engine.policy(s.tenant)?.rateLimits ?? RateLimits()
        let lane = fabric.lane(s.tenant, limits: limits, now: now)
        let sqCap = Router.ringCapacity(max(req.max_send_wr, 1))
        let rqCap = Router.ringCapacity(max(req.max_recv_wr, 1))
        let layout = sluice_qp_layout(sqCap, rqCap)
        let fd = try Sys.memfdCreate("sluice-qp", size: Int(layout.size))
        let mapping: SharedMapping
        do {
            mapping = try SharedMapping(fd: fd, length: Int(layout.size))
        } catch {
            Sys.close(fd)
            throw error
        }
        let qp = QueuePair(qpn: mintQPN(), session: s, pd: pd, sendCQ: scq, recvCQ: rcq, mapping: mapping, layout: layout,
                           sqCapacity: sqCap, rqCapacity: rqCap, maxSendSGE: max(req.max_send_sge, 1),
                           maxRecvSGE: max(req.max_recv_sge, 1), maxInline: inlineLimit(s.tenant), sqSigAll: req.sq_sig_all != 0,
                           lane: lane, shaper: RateShaper(tenant: lane.limiter, queuePair: limits.queuePair, now: now))
        do {
            try verbs?.createQP(qp, sendSGE: qp.maxSendSGE, recvSGE: qp.maxRecvSGE)
        } catch {
            Sys.close(fd)
            throw error
        }
        qp.handle = s.qps.insert(qp)
        qpsByNumber[qp.qpn] = qp
        fabric.add(qp)
        pd.users += 1
        scq.users += 1
        rcq.users += 1
        usage[s.tenant, default: .init()].qps += 1
        var rep = sluice_create_qp_rep()
        rep.handle = qp.handle
        rep.qp_num = qp.qpn
        rep.sq_capacity = sqCap
        rep.rq_capacity = rqCap
        rep.max_send_wr = sqCap
        rep.max_recv_wr = rqCap
        rep.max_send_sge = qp.maxSendSGE
        rep.max_recv_sge = qp.maxRecvSGE
        rep.max_inline_data = qp.maxInline
        rep.ring_size = layout.size
        return Reply(rep, fds: [fd], object: "qp \(qp.handle) qpn 0x\(String(qp.qpn, radix: 16))", rule: decision.rule)
    }

    /// What a QP of this tenant may carry inline: the wire's limit, or the
    /// tenant's `quotas.inlineBytes` if lower. Reported as the QP's
    /// max_inline_data (at least what was asked, which the policy checked)
    /// and enforced on every work request.
    func inlineLimit(_ tenant: String) -> UInt32 {
        guard let q = engine.policy(tenant)?.quotas.inlineBytes else { return SLUICE_MAX_INLINE }
        return UInt32(min(UInt64(SLUICE_MAX_INLINE), q))
    }

    static let qpAccessFlags = UInt32(SLUICE_ACCESS_LOCAL_WRITE | SLUICE_ACCESS_REMOTE_WRITE | SLUICE_ACCESS_REMOTE_READ
        | SLUICE_ACCESS_REMOTE_ATOMIC)

    func modifyQP(_ s: Session, _ req: sluice_modify_qp_req) throws -> Reply {
        guard let qp = s.qps.lookup(req.handle) else { throw Refusal(EINVAL, "no queue pair \(req.handle) in this session") }
        let a = req.attr
        let target: QPState
        switch QPStateMachine.check(current: qp.state, mask: req.attr_mask, requested: a.qp_state) {
        case .success(let t): target = t
        case .failure(let f): throw Refusal(EINVAL, f.reason)
        }
        let mask = QPStateMachine.Mask(rawValue: req.attr_mask)
        if mask.contains(.curState), let cur = QPState(rawValue: a.cur_qp_state), cur != qp.state {
            throw Refusal(EINVAL, "cur_qp_state \(cur) is not the QP's state \(qp.state)")
        }
        var attrs = qp.attrs
        if mask.contains(.port) {
            guard a.port_num == 1 else { throw Refusal(EINVAL, "port \(a.port_num) does not exist; the device has port 1") }
            attrs.port = a.port_num
        }
        if mask.contains(.pkeyIndex) {
            guard a.pkey_index == 0 else { throw Refusal(EINVAL, "P_Key index \(a.pkey_index) does not exist") }
            attrs.pkeyIndex = a.pkey_index
        }
        if mask.contains(.accessFlags) {
            guard a.qp_access_flags & ~Router.qpAccessFlags == 0 else {
                throw Refusal(EINVAL, "QP access flags 0x\(String(a.qp_access_flags, radix: 16)) are not supported")
            }
            attrs.accessFlags = a.qp_access_flags
        }
        if mask.contains(.pathMTU) {
            guard (1...5).contains(a.path_mtu) else { throw Refusal(EINVAL, "path MTU \(a.path_mtu) is not an ibv_mtu") }
            attrs.pathMTU = a.path_mtu
        }
        if mask.contains(.minRNRTimer) {
            guard a.min_rnr_timer <= 31 else { throw Refusal(EINVAL, "min_rnr_timer \(a.min_rnr_timer) is above 31") }
            attrs.minRNRTimer = a.min_rnr_timer
        }
        if mask.contains(.timeout) {
            guard a.timeout <= 31 else { throw Refusal(EINVAL, "timeout \(a.timeout) is above 31") }
            attrs.timeout = a.timeout
        }
        if mask.contains(.retryCount) {
            guard a.retry_cnt <= 7 else { throw Refusal(EINVAL, "retry_cnt \(a.retry_cnt) is above 7") }
            attrs.retryCount = a.retry_cnt
        }
        if mask.contains(.rnrRetry) {
            guard a.rnr_retry <= 7 else { throw Refusal(EINVAL, "rnr_retry \(a.rnr_retry) is above 7") }
            attrs.rnrRetry = a.rnr_retry
        }
        if mask.contains(.rqPSN) { attrs.rqPSN = a.rq_psn & 0xff_ffff }
        if mask.contains(.sqPSN) { attrs.sqPSN = a.sq_psn & 0xff_ffff }
        if mask.contains(.maxQPRdAtomic) { attrs.maxRdAtomic = min(a.max_rd_atomic, 16) }
        if mask.contains(.maxDestRdAtomic) { attrs.maxDestRdAtomic = min(a.max_dest_rd_atomic, 16) }
        var peer: QueuePair? = qp.peer
        var rule: String?
        // A destination the cluster directory gives to another router.
        let remote = mask.contains(.av) || mask.contains(.destQPN) ? try remoteDestination(s, ah: a.ah, destQPN: a.dest_qp_num) : qp.remote
        if let r = remote, mask.contains(.av) || mask.contains(.destQPN) {
            try checkQuarantine(s)
            peer = nil
            rule = "fabric.\(r.router)"
            attrs.ah = a.ah
            attrs.destQPN = a.dest_qp_num
        } else if mask.contains(.av) || mask.contains(.destQPN) {
            try checkQuarantine(s)
            let p = try resolvePeer(s, qp, ah: a.ah, destQPN: a.dest_qp_num)
            let decision = engine.connect(from: s.tenant, to: p.session.tenant)
            if case .deny(let rule, let reason, let errno) = decision {
                // The reason may describe the peer tenant's policy: it goes
                // to the audit log; the tenant learns only the rule.
                throw Refusal(errno, "connection refused by policy (rule \(rule))", rule: rule, auditReason: reason)
            }
            // One connection per QP pair: a QP already connected to, or
            // claimed by, another QP cannot be joined (NeVerMore's hijack).
            if let other = p.peer, other !== qp, !other.destroyed {
                throw Refusal(EINVAL, "queue pair 0x\(String(p.qpn, radix: 16)) is already connected to another QP",
                              rule: "connection.exclusive")
            }
            // A claimant in ERR holds no connection any more (it must reset
            // to use one again); the target's own `peer` is checked above.
            if let other = p.claimedBy, other !== qp, !other.destroyed, other.peer === p, other.state != .error {
                throw Refusal(EINVAL, "queue pair 0x\(String(p.qpn, radix: 16)) is already connected to another QP",
                              rule: "connection.exclusive")
            }
            peer = p
            rule = decision.rule
            attrs.ah = a.ah
            attrs.destQPN = a.dest_qp_num
        }
        // The device's QP first: its refusal refuses the verb.
        if target != qp.state {
            try modifyQPOnDevice(qp, to: target, attrs: attrs, peer: peer, remote: remote)
        } else if attrs.accessFlags != qp.attrs.accessFlags {
            try changeAccessOnDevice(qp, to: target, attrs: attrs, peer: peer, remote: remote)
        }
        // All checks passed: commit.
        qp.attrs = attrs
        if let old = qp.peer, old !== peer, old.claimedBy === qp { old.claimedBy = nil }
        qp.peer = peer
        peer?.claimedBy = qp
        if let peer {
            qp.allowedOperations = engine.connectionOperations(from: s.tenant, to: peer.session.tenant)
        }
        qp.remote = remote
        if remote != nil { qp.allowedOperations = remoteOperations(s) }
        if target != qp.state || mask.contains(.state) {
            enter(qp, target)
        }
        return Reply(sluice_empty_rep(), object: "qp \(req.handle) qpn 0x\(String(qp.qpn, radix: 16)) -> \(target)"
            + (peer.map { " peer 0x\(String($0.qpn, radix: 16)) (\($0.session.tenant))" } ?? ""), rule: rule)
    }

    /// Finds the QP a connection names, by the address the router minted
    /// (LID, or GID index 0 = ::ffff:<virtual IPv4>) and the virtual QPN.
    /// Only a QP the router resolved itself is ever connected; whether its
    /// tenant may be reached is the policy's `peers` (checked by the caller).
    func resolvePeer(_ s: Session, _ qp: QueuePair, ah: sluice_ah, destQPN: UInt32) throws -> QueuePair {
        let endpoint: Session?
        if ah.is_global != 0 {
            guard ah.sgid_index == 0 else {
                throw Refusal(EINVAL, "source GID index \(ah.sgid_index) does not exist", rule: "connection.address")
            }
            let g = withUnsafeBytes(of: ah.dgid) { Array($0) }
            guard g[0..<10].allSatisfy({ $0 == 0 }), g[10] == 0xff, g[11] == 0xff else {
                throw Refusal(EINVAL, "destination GID is not a Sluice endpoint address", rule: "connection.address")
            }
            let v4 = UInt32(g[12]) << 24 | UInt32(g[13]) << 16 | UInt32(g[14]) << 8 | UInt32(g[15])
            endpoint = endpointsByIPv4[v4]
        } else {
            endpoint = endpointsByLID[ah.dlid]
        }
        guard let ep = endpoint, let peer = qpsByNumber[destQPN & 0xff_ffff], peer.session === ep, !peer.destroyed else {
            throw Refusal(EINVAL, "no queue pair 0x\(String(destQPN, radix: 16)) at that address", rule: "connection.address")
        }
        return peer
    }

    /// Moves a QP into a state, with the side effects the state implies.
    func enter(_ qp: QueuePair, _ state: QPState) {
        switch state {
        case .reset:
            // Everything posted is discarded without completions.
            if let p = qp.peer, p.claimedBy === qp { p.claimedBy = nil }
            qp.peer = nil
            qp.remote = nil
            qp.allowedOperations = []
            if qp.stall?.kind == .throttled { qp.shaper.abandonWait(now: Sys.monotonicNanos()) }
            qp.stall = nil
            qp.held = nil
            qp.progress = 0
            qp.paid = false
            qp.attrs = QPAttributes()
            qp.sqCons = qp.sqProd
            qp.rqCons = qp.rqProd
            sluice_store_release(&qp.shared.pointee.sq.cons, qp.sqCons)
            sluice_store_release(&qp.shared.pointee.rq.cons, qp.rqCons)
        case .error:
            qp.remote?.resetRequester()
            if qp.stall?.kind == .throttled { qp.shaper.abandonWait(now: Sys.monotonicNanos()) }
            qp.stall = nil
            qp.held = nil
            qp.progress = 0
            qp.paid = false
        default:
            break
        }
        qp.setState(state)
        // A new state may mean work (RTS: sends posted before; ERR: a flush).
        fabric.activate(qp)
        // The device's QP follows (a round trip to the device: after the
        // tenant already sees the state).
        verbs?.entered(qp, state)
    }

    func queryQP(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let qp = s.qps.lookup(req.handle) else { throw Refusal(EINVAL, "no queue pair \(req.handle) in this session") }
        var rep = sluice_query_qp_rep()
        let a = qp.attrs
        rep.attr.qp_state = qp.state.rawValue
        rep.attr.cur_qp_state = qp.state.rawValue
        rep.attr.path_mtu = a.pathMTU
        rep.attr.rq_psn = a.rqPSN
        rep.attr.sq_psn = a.sqPSN
        rep.attr.dest_qp_num = a.destQPN
        rep.attr.qp_access_flags = a.accessFlags
        rep.attr.max_send_wr = qp.sqCapacity
        rep.attr.max_recv_wr = qp.rqCapacity
        rep.attr.max_send_sge = qp.maxSendSGE
        rep.attr.max_recv_sge = qp.maxRecvSGE
        rep.attr.max_inline_data = qp.maxInline
        rep.attr.pkey_index = a.pkeyIndex
        rep.attr.max_rd_atomic = a.maxRdAtomic
        rep.attr.max_dest_rd_atomic = a.maxDestRdAtomic
        rep.attr.min_rnr_timer = a.minRNRTimer
        rep.attr.port_num = a.port
        rep.attr.timeout = a.timeout
        rep.attr.retry_cnt = a.retryCount
        rep.attr.rnr_retry = a.rnrRetry
        rep.attr.ah = a.ah
        rep.sq_sig_all = qp.sqSigAll ? 1 : 0
        return Reply(rep, object: "qp \(req.handle)")
    }

    func destroyQP(_ s: Session, _ req: sluice_handle_req) throws -> Reply {
        guard let qp = s.qps.lookup(req.handle) else { throw Refusal(EINVAL, "no queue pair \(req.handle) in this session") }
        destroyQP(qp, in: s)
        return Reply(sluice_empty_rep(), object: "qp \(req.handle) qpn 0x\(String(qp.qpn, radix: 16))")
    }
}
