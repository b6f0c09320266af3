#if canImport(Glibc)
import Glibc
#endif
import CIBVerbs
import SluiceRouter

/// The verbs backend's device operations, one libibverbs call each. The
/// router has already checked and translated everything passed here; this
/// layer only converts between the router's Real* values and libibverbs'
/// structs, and reports libibverbs' errno.
extension VerbsDevice: RDMADevice {
    public var lid: UInt16 { portAttributes.lid }

    public var gid: [UInt8] {
        var g = ibv_gid()
        guard ibv_query_gid(context, port, 0, &g) == 0 else { return [UInt8](repeating: 0, count: 16) }
        return withUnsafeBytes(of: g.raw) { Array($0) }
    }

    public var activeMTU: UInt32 { portAttributes.active_mtu.rawValue }

    public func allocPD() -> Result<RealHandle, RealError> {
        guard let pd = ibv_alloc_pd(context) else { return .failure(RealError("ibv_alloc_pd", errnoOr(ENOMEM))) }
        return .success(OpaquePointer(pd))
    }

    public func deallocPD(_ pd: RealHandle) {
        _ = ibv_dealloc_pd(UnsafeMutablePointer<ibv_pd>(pd))
    }

    public func regMR(pd: RealHandle, address: UnsafeMutableRawPointer, length: Int, access: UInt32) -> Result<RealMR, RealError> {
        errno = 0
        guard let mr = sluice_ibv_reg_mr(UnsafeMutablePointer<ibv_pd>(pd), address, length, Int32(bitPattern: access)) else {
            return .failure(RealError("ibv_reg_mr", errnoOr(EINVAL)))
        }
        return .success(RealMR(handle: OpaquePointer(mr), lkey: mr.pointee.lkey, rkey: mr.pointee.rkey))
    }

    public func deregMR(_ mr: RealHandle) {
        _ = ibv_dereg_mr(UnsafeMutablePointer<ibv_mr>(mr))
    }

    public func createCQ(depth: UInt32) -> Result<RealHandle, RealError> {
        errno = 0
        guard let cq = ibv_create_cq(context, Int32(clamping: depth), nil, channel, 0) else {
            return .failure(RealError("ibv_create_cq", errnoOr(ENOMEM)))
        }
        return .success(OpaquePointer(cq))
    }

    public func destroyCQ(_ cq: RealHandle) {
        _ = ibv_destroy_cq(UnsafeMutablePointer<ibv_cq>(cq))
    }

    public func createQP(pd: RealHandle, sendCQ: RealHandle, recvCQ: RealHandle, sendDepth: UInt32, recvDepth: UInt32,
                         sendSGE: UInt32, recvSGE: UInt32, inlineBytes: UInt32) -> Result<RealQP, RealError> {
        var attr = ibv_qp_init_attr()
        attr.send_cq = UnsafeMutablePointer<ibv_cq>(sendCQ)
        attr.recv_cq = UnsafeMutablePointer<ibv_cq>(recvCQ)
        attr.qp_type = IBV_QPT_RC
        attr.cap.max_send_wr = sendDepth
        attr.cap.max_recv_wr = recvDepth
        attr.cap.max_send_sge = sendSGE
        attr.cap.max_recv_sge = recvSGE
        // Inline requests stay inline on the device: the router posts them
        // from its own scratch copy, which the device takes at post time.
        attr.cap.max_inline_data = inlineBytes
        // Every request is signaled on the device, so that the router sees
        // each one finish (the tenant's signaling is applied on the way back).
        attr.sq_sig_all = 1
        errno = 0
        guard let qp = ibv_create_qp(UnsafeMutablePointer<ibv_pd>(pd), &attr) else {
            return .failure(RealError("ibv_create_qp", errnoOr(ENOMEM)))
        }
        return .success(RealQP(handle: OpaquePointer(qp), qpn: qp.pointee.qp_num))
    }

    public func destroyQP(_ qp: RealHandle) {
        _ = ibv_destroy_qp(UnsafeMutablePointer<ibv_qp>(qp))
    }

    public func modifyQP(_ qp: RealHandle, _ a: RealQPAttributes) -> Int32 {
        var attr = ibv_qp_attr()
        var mask: UInt32 = IBV_QP_STATE.rawValue
        if a.onlyAccessFlags {
            // A transition to the same state: nothing but the flags changes.
            switch a.target {
            case .reset: attr.qp_state = IBV_QPS_RESET
            case .initial: attr.qp_state = IBV_QPS_INIT
            case .readyToReceive: attr.qp_state = IBV_QPS_RTR
            case .readyToSend: attr.qp_state = IBV_QPS_RTS
            case .error: attr.qp_state = IBV_QPS_ERR
            }
            attr.qp_access_flags = a.accessFlags
            mask |= IBV_QP_ACCESS_FLAGS.rawValue
            return ibv_modify_qp(UnsafeMutablePointer<ibv_qp>(qp), &attr, Int32(bitPattern: mask))
        }
        if a.changesAccessFlags {
            attr.qp_access_flags = a.accessFlags
            mask |= IBV_QP_ACCESS_FLAGS.rawValue
        }
        switch a.target {
        case .reset:
            attr.qp_state = IBV_QPS_RESET
        case .error:
            attr.qp_state = IBV_QPS_ERR
        case .initial:
            attr.qp_state = IBV_QPS_INIT
            attr.pkey_index = 0
            attr.port_num = port
            attr.qp_access_flags = a.accessFlags
            mask |= IBV_QP_PKEY_INDEX.rawValue | IBV_QP_PORT.rawValue | IBV_QP_ACCESS_FLAGS.rawValue
        case .readyToReceive:
            attr.qp_state = IBV_QPS_RTR
            attr.path_mtu = ibv_mtu(rawValue: min(a.pathMTU, portAttributes.active_mtu.rawValue))
            attr.dest_qp_num = a.destQPN
            attr.rq_psn = a.rqPSN
            attr.max_dest_rd_atomic = a.maxDestRdAtomic
            attr.min_rnr_timer = a.minRNRTimer
            attr.ah_attr.port_num = port
            attr.ah_attr.dlid = a.dlid
            if let g = a.dgid {
                attr.ah_attr.is_global = 1
                withUnsafeMutableBytes(of: &attr.ah_attr.grh.dgid.raw) { $0.copyBytes(from: g.prefix(16)) }
                attr.ah_attr.grh.sgid_index = 0
                attr.ah_attr.grh.hop_limit = 1
            }
            mask |= IBV_QP_AV.rawValue | IBV_QP_PATH_MTU.rawValue | IBV_QP_DEST_QPN.rawValue | IBV_QP_RQ_PSN.rawValue
                | IBV_QP_MAX_DEST_RD_ATOMIC.rawValue | IBV_QP_MIN_RNR_TIMER.rawValue
        case .readyToSend:
            attr.qp_state = IBV_QPS_RTS
            attr.sq_psn = a.sqPSN
            attr.timeout = a.timeout
            attr.retry_cnt = a.retryCount
            attr.rnr_retry = a.rnrRetry
            attr.max_rd_atomic = a.maxRdAtomic
            mask |= IBV_QP_SQ_PSN.rawValue | IBV_QP_TIMEOUT.rawValue | IBV_QP_RETRY_CNT.rawValue
                | IBV_QP_RNR_RETRY.rawValue | IBV_QP_MAX_QP_RD_ATOMIC.rawValue
        }
        return ibv_modify_qp(UnsafeMutablePointer<ibv_qp>(qp), &attr, Int32(bitPattern: mask))
    }

    public func postSend(_ qp: RealHandle, _ w: RealSend) -> Int32 {
        var sges = w.sges.map { ibv_sge(addr: $0.address, length: $0.length, lkey: $0.lkey) }
        return sges.withUnsafeMutableBufferPointer { buf in
            var wr = ibv_send_wr()
            wr.wr_id = w.wrID
            wr.sg_list = buf.count > 0 ? buf.baseAddress : nil
            wr.num_sge = Int32(buf.count)
            wr.opcode = ibv_wr_opcode(rawValue: w.opcode)
            wr.send_flags = w.flags
            wr.imm_data = w.immData
            switch Int(w.opcode) {
            case Int(IBV_WR_ATOMIC_CMP_AND_SWP.rawValue), Int(IBV_WR_ATOMIC_FETCH_AND_ADD.rawValue):
                wr.wr.atomic.remote_addr = w.remoteAddress
                wr.wr.atomic.rkey = w.rkey
                wr.wr.atomic.compare_add = w.compareAdd
                wr.wr.atomic.swap = w.swap
            default:
                wr.wr.rdma.remote_addr = w.remoteAddress
                wr.wr.rdma.rkey = w.rkey
            }
            var bad: UnsafeMutablePointer<ibv_send_wr>?
            return sluice_ibv_post_send(UnsafeMutablePointer<ibv_qp>(qp), &wr, &bad)
        }
    }

    public func postRecv(_ qp: RealHandle, _ w: RealRecv) -> Int32 {
        var sges = w.sges.map { ibv_sge(addr: $0.address, length: $0.length, lkey: $0.lkey) }
        return sges.withUnsafeMutableBufferPointer { buf in
            var wr = ibv_recv_wr()
            wr.wr_id = w.wrID
            wr.sg_list = buf.count > 0 ? buf.baseAddress : nil
            wr.num_sge = Int32(buf.count)
            var bad: UnsafeMutablePointer<ibv_recv_wr>?
            return sluice_ibv_post_recv(UnsafeMutablePointer<ibv_qp>(qp), &wr, &bad)
        }
    }

    public func pollCQ(_ cq: RealHandle, max: Int, into out: inout [RealCompletion]) -> Int {
        var wc = [ibv_wc](repeating: ibv_wc(), count: max)
        let n = Int(sluice_ibv_poll_cq(UnsafeMutablePointer<ibv_cq>(cq), Int32(max), &wc))
        guard n > 0 else { return n }
        for w in wc[0..<n] {
            var r = RealCompletion()
            r.wrID = w.wr_id
            r.status = w.status.rawValue
            r.opcode = w.opcode.rawValue
            r.vendorError = w.vendor_err
            r.byteLength = w.byte_len
            r.immData = w.imm_data
            r.qpNum = w.qp_num
            r.srcQP = w.src_qp
            r.flags = w.wc_flags
            r.pkeyIndex = w.pkey_index
            r.slid = w.slid
            r.sl = w.sl
            r.dlidPathBits = w.dlid_path_bits
            out.append(r)
        }
        return n
    }

    public var asyncFD: Int32 { context.pointee.async_fd }

    public var completionFD: Int32 { channel.pointee.fd }

    public func armCQ(_ cq: RealHandle) -> Int32 {
        ibv_req_notify_cq(UnsafeMutablePointer<ibv_cq>(cq), 0)
    }

    public func nextCompletionEvent() -> RealHandle? {
        var cq: UnsafeMutablePointer<ibv_cq>?
        var ctx: UnsafeMutableRawPointer?
        guard ibv_get_cq_event(channel, &cq, &ctx) == 0, let cq else { return nil }
        ibv_ack_cq_events(cq, 1)
        return OpaquePointer(cq)
    }

    public func nextAsyncEvent() -> RealAsyncEvent {
        var e = ibv_async_event()
        errno = 0
        guard ibv_get_async_event(context, &e) == 0 else {
            let err = errno
            if err == EAGAIN || err == EINTR { return .none }
            return .deviceFailed("ibv_get_async_event: \(String(cString: strerror(err == 0 ? EIO : err)))")
        }
        defer { ibv_ack_async_event(&e) }
        switch e.event_type {
        case IBV_EVENT_QP_FATAL, IBV_EVENT_QP_REQ_ERR, IBV_EVENT_QP_ACCESS_ERR:
            return .queuePairFailed(e.element.qp.pointee.qp_num)
        case IBV_EVENT_CQ_ERR:
            return .completionQueueFailed(OpaquePointer(e.element.cq))
        case IBV_EVENT_DEVICE_FATAL:
            return .deviceFailed("IBV_EVENT_DEVICE_FATAL")
        case IBV_EVENT_PORT_ERR:
            return .deviceFailed("IBV_EVENT_PORT_ERR: port \(e.element.port_num) is down")
        default:
            return .other
        }
    }

    private func errnoOr(_ fallback: Int32) -> Int32 { errno != 0 ? errno : fallback }
}
