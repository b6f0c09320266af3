#if canImport(Glibc)
import Glibc
#endif
import SluiceVerbs

/// What one side of a connection needs to be reached: the address the
/// router minted for its session, its QP number, and (for RDMA) where it
/// may be written.
struct RemoteEndpoint {
    let lid: UInt16
    let qpn: UInt32
    let psn: UInt32
    let address: UInt64
    let rkey: UInt32
}

/// One side of an RC connection through Sluice: its own verbs context (and
/// so its own router session), PD, CQ shared by send and receive, one RC QP
/// and one registered buffer. Written against the standard libibverbs API
/// only, so it would run unchanged on a real NIC.
final class VerbsEndpoint {
    let context: UnsafeMutablePointer<ibv_context>
    let pd: UnsafeMutablePointer<ibv_pd>
    let cq: UnsafeMutablePointer<ibv_cq>
    let qp: UnsafeMutablePointer<ibv_qp>
    let mr: UnsafeMutablePointer<ibv_mr>
    let buffer: UnsafeMutableRawPointer
    let bufferBytes: Int
    let lid: UInt16
    let psn: UInt32
    /// Largest payload the QP accepts with IBV_SEND_INLINE, as created.
    let maxInline: UInt32
    private var released = false
    /// Regions registered over parts of the buffer (`registerRegions`).
    private(set) var regions: [UnsafeMutablePointer<ibv_mr>] = []
    /// Whether `mr`, the region over the whole buffer, is still registered.
    private(set) var holdsWholeBufferMR = true

    struct Shape {
        var bufferBytes: Int
        var mrAccess: UInt32 = IBV_ACCESS_LOCAL_WRITE.rawValue
        var cqDepth: Int32 = 256
        var sendDepth: UInt32 = 64
        var recvDepth: UInt32 = 64
        var maxInline: UInt32 = 64
    }

    /// Opens a new session: SLUICE_SOCKET is read by the library when the
    /// device is opened, so it is set right before.
    init(socket: String, shape: Shape, psn: UInt32) throws {
        setenv("SLUICE_SOCKET", socket, 1)
        var count: Int32 = 0
        errno = 0
        guard let list = ibv_get_device_list(&count) else {
            throw VerbsError("ibv_get_device_list", errno)
        }
        defer { ibv_free_device_list(list) }
        guard count > 0, let device = list[0] else {
            throw BenchFailure("ibv_get_device_list found no device (SLUICE_SOCKET=\(socket))")
        }
        guard let ctx = ibv_open_device(device) else {
            throw VerbsError("ibv_open_device(\(socket))", errno)
        }
        context = ctx
        var mapped: UnsafeMutableRawPointer?
        // From here on, a failure closes the device; the router reclaims
        // whatever the session still owns when its socket closes.
        do {
            var port = ibv_port_attr()
            try VerbsError.check("ibv_query_port(port 1)", ___ibv_query_port(ctx, 1, &port))
            guard port.state == IBV_PORT_ACTIVE else {
                throw BenchFailure("ibv_query_port: port 1 is not active (state \(port.state.rawValue))")
            }
            lid = port.lid
            self.psn = psn & 0xff_ffff

            guard let pd = ibv_alloc_pd(ctx) else { throw VerbsError("ibv_alloc_pd", errno) }
            self.pd = pd

            // Page-aligned anonymous memory: the library re-backs the pages
            // of a registered region, and nothing else should share them.
            bufferBytes = shape.bufferBytes
            let mem = mmap(nil, shape.bufferBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            guard let mem, mem != MAP_FAILED else { throw SystemCallError("mmap(\(shape.bufferBytes) bytes)", errno) }
            buffer = mem
            mapped = mem
            memset(mem, 0, shape.bufferBytes)

            guard let mr = ibv_reg_mr_iova2(pd, mem, shape.bufferBytes, UInt64(UInt(bitPattern: mem)), shape.mrAccess) else {
                throw VerbsError("ibv_reg_mr(\(shape.bufferBytes) bytes, access 0x\(String(shape.mrAccess, radix: 16)))", errno)
            }
            self.mr = mr

            guard let cq = ibv_create_cq(ctx, shape.cqDepth, nil, nil, 0) else {
                throw VerbsError("ibv_create_cq(\(shape.cqDepth))", errno)
            }
            self.cq = cq

            var request = ibv_qp_init_attr()
            request.send_cq = cq
            request.recv_cq = cq
            request.qp_type = IBV_QPT_RC
            request.sq_sig_all = 0
            request.cap.max_send_wr = shape.sendDepth
            request.cap.max_recv_wr = shape.recvDepth
            request.cap.max_send_sge = 1
            request.cap.max_recv_sge = 1
            request.cap.max_inline_data = shape.maxInline
            guard let qp = ibv_create_qp(pd, &request) else { throw VerbsError("ibv_create_qp(RC)", errno) }
            self.qp = qp
            maxInline = request.cap.max_inline_data
        } catch {
            // Objects created so far belong to the session; closing the
            // device ends it. Only the mapping is ours to free.
            _ = ibv_close_device(ctx)
            if let mapped { munmap(mapped, shape.bufferBytes) }
            throw error
        }
    }

    var qpn: UInt32 { qp.pointee.qp_num }

    /// Registers `count` more regions in this endpoint's PD: region k covers
    /// `bytesPerRegion` bytes from offset k·bytesPerRegion of the buffer.
    /// They share the memfd the library made for the whole-buffer region,
    /// so each costs a router round trip and a router mapping, no copy.
    func registerRegions(count: Int, bytesPerRegion: Int, access: UInt32) throws {
        precondition(count * bytesPerRegion <= bufferBytes)
        regions.reserveCapacity(regions.count + count)
        for k in 0..<count {
            let at = buffer + k * bytesPerRegion
            guard let r = ibv_reg_mr_iova2(pd, at, bytesPerRegion, UInt64(UInt(bitPattern: at)), access) else {
                throw VerbsError("ibv_reg_mr(region \(k + 1) of \(count), \(bytesPerRegion) bytes)", errno)
            }
            regions.append(r)
        }
    }

    /// Deregisters the whole-buffer region, so that exactly the regions of
    /// `registerRegions` are left (the buffer stays mapped and shared: they
    /// still use its memfd).
    func dropWholeBufferMR() throws {
        guard holdsWholeBufferMR else { return }
        holdsWholeBufferMR = false
        try VerbsError.check("ibv_dereg_mr(whole buffer)", ibv_dereg_mr(mr))
    }

    func endpoint(offset: Int = 0) -> RemoteEndpoint {
        precondition(holdsWholeBufferMR, "endpoint() after dropWholeBufferMR(): its rkey is gone")
        return RemoteEndpoint(lid: lid, qpn: qpn, psn: psn,
                       address: UInt64(UInt(bitPattern: mr.pointee.addr)) + UInt64(offset), rkey: mr.pointee.rkey)
    }

    /// RESET → INIT → RTR → RTS, with the attributes an RC connection on
    /// InfiniBand needs (LID addressing, port 1, P_Key index 0).
    func connect(to remote: RemoteEndpoint, access: UInt32) throws {
        try Self.toInit(qp, access: access)
        try Self.toRTS(qp, psn: psn, to: remote)
    }

    /// RESET → INIT, for any RC QP.
    static func toInit(_ qp: UnsafeMutablePointer<ibv_qp>, access: UInt32) throws {
        var attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_INIT
        attr.pkey_index = 0
        attr.port_num = 1
        attr.qp_access_flags = access
        try VerbsError.check("ibv_modify_qp(RESET→INIT)", ibv_modify_qp(qp, &attr, Self.mask(
            IBV_QP_STATE, IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_ACCESS_FLAGS)))
    }

    /// INIT → RTR → RTS towards `remote`, sending from `psn`: what an RC
    /// connection's second half costs, for any QP.
    static func toRTS(_ qp: UnsafeMutablePointer<ibv_qp>, psn: UInt32, to remote: RemoteEndpoint) throws {
        var attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTR
        attr.path_mtu = IBV_MTU_4096
        attr.dest_qp_num = remote.qpn
        attr.rq_psn = remote.psn
        attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.ah_attr.is_global = 0
        attr.ah_attr.dlid = remote.lid
        attr.ah_attr.sl = 0
        attr.ah_attr.src_path_bits = 0
        attr.ah_attr.port_num = 1
        try VerbsError.check("ibv_modify_qp(INIT→RTR, dlid \(remote.lid), dest_qp_num 0x\(String(remote.qpn, radix: 16)))",
                             ibv_modify_qp(qp, &attr, Self.mask(
                                 IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                                 IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER)))

        attr = ibv_qp_attr()
        attr.qp_state = IBV_QPS_RTS
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        attr.sq_psn = psn
        attr.max_rd_atomic = 1
        try VerbsError.check("ibv_modify_qp(RTR→RTS)", ibv_modify_qp(qp, &attr, Self.mask(
            IBV_QP_STATE, IBV_QP_TIMEOUT, IBV_QP_RETRY_CNT, IBV_QP_RNR_RETRY, IBV_QP_SQ_PSN, IBV_QP_MAX_QP_RD_ATOMIC)))
    }

    private static func mask(_ bits: ibv_qp_attr_mask...) -> Int32 {
        Int32(bitPattern: bits.reduce(0) { $0 | $1.rawValue })
    }

    /// Destroys everything in reverse order of creation, reporting the
    /// first verb that fails. Runs once; later calls do nothing.
    func release() throws {
        guard !released else { return }
        released = true
        try VerbsError.check("ibv_destroy_qp", ibv_destroy_qp(qp))
        try VerbsError.check("ibv_destroy_cq", ibv_destroy_cq(cq))
        for r in regions.reversed() { try VerbsError.check("ibv_dereg_mr(region)", ibv_dereg_mr(r)) }
        regions = []
        if holdsWholeBufferMR { try VerbsError.check("ibv_dereg_mr", ibv_dereg_mr(mr)) }
        munmap(buffer, bufferBytes)
        try VerbsError.check("ibv_dealloc_pd", ibv_dealloc_pd(pd))
        try VerbsError.check("ibv_close_device", ibv_close_device(context))
    }
}

/// Preallocated work requests, so the measured loops allocate nothing.
final class WorkRequests {
    let send = UnsafeMutablePointer<ibv_send_wr>.allocate(capacity: 1)
    let sendSGE = UnsafeMutablePointer<ibv_sge>.allocate(capacity: 1)
    let recv = UnsafeMutablePointer<ibv_recv_wr>.allocate(capacity: 1)
    let recvSGE = UnsafeMutablePointer<ibv_sge>.allocate(capacity: 1)
    let badSend = UnsafeMutablePointer<UnsafeMutablePointer<ibv_send_wr>?>.allocate(capacity: 1)
    let badRecv = UnsafeMutablePointer<UnsafeMutablePointer<ibv_recv_wr>?>.allocate(capacity: 1)
    let completions: UnsafeMutablePointer<ibv_wc>
    let completionCapacity: Int32
    private let endpoint: VerbsEndpoint

    init(_ endpoint: VerbsEndpoint, completionBatch: Int32 = 16) {
        self.endpoint = endpoint
        completionCapacity = completionBatch
        completions = .allocate(capacity: Int(completionBatch))
        completions.initialize(repeating: ibv_wc(), count: Int(completionBatch))
        send.initialize(to: ibv_send_wr())
        sendSGE.initialize(to: ibv_sge())
        recv.initialize(to: ibv_recv_wr())
        recvSGE.initialize(to: ibv_sge())
        badSend.initialize(to: nil)
        badRecv.initialize(to: nil)
    }

    deinit {
        send.deallocate()
        sendSGE.deallocate()
        recv.deallocate()
        recvSGE.deallocate()
        badSend.deallocate()
        badRecv.deallocate()
        completions.deallocate()
    }

    /// Posts one receive of `length` bytes at `offset` in the buffer.
    @inline(__always)
    func postRecv(wrID: UInt64, offset: Int, length: UInt32) throws {
        recvSGE.pointee.addr = UInt64(UInt(bitPattern: endpoint.buffer)) + UInt64(offset)
        recvSGE.pointee.length = length
        recvSGE.pointee.lkey = endpoint.mr.pointee.lkey
        recv.pointee.wr_id = wrID
        recv.pointee.next = nil
        recv.pointee.sg_list = recvSGE
        recv.pointee.num_sge = 1
        try VerbsError.check("ibv_post_recv", ibv_post_recv(endpoint.qp, recv, badRecv))
    }

    /// Posts one SEND (inline when `inline`), RDMA WRITE or READ, signaled unless
    /// told otherwise.
    @inline(__always)
    func postSend(wrID: UInt64, opcode: ibv_wr_opcode, offset: Int, length: UInt32, inline: Bool = false,
                  signaled: Bool = true, remoteAddress: UInt64 = 0, rkey: UInt32 = 0) throws {
        sendSGE.pointee.addr = UInt64(UInt(bitPattern: endpoint.buffer)) + UInt64(offset)
        sendSGE.pointee.length = length
        sendSGE.pointee.lkey = endpoint.mr.pointee.lkey
        send.pointee.wr_id = wrID
        send.pointee.next = nil
        send.pointee.sg_list = sendSGE
        send.pointee.num_sge = 1
        send.pointee.opcode = opcode
        send.pointee.send_flags = (signaled ? IBV_SEND_SIGNALED.rawValue : 0) | (inline ? IBV_SEND_INLINE.rawValue : 0)
        send.pointee.wr.rdma.remote_addr = remoteAddress
        send.pointee.wr.rdma.rkey = rkey
        try VerbsError.check(opcode == IBV_WR_SEND ? "ibv_post_send(SEND)"
                             : opcode == IBV_WR_RDMA_READ ? "ibv_post_send(RDMA_READ)" : "ibv_post_send(RDMA_WRITE)",
                             ibv_post_send(endpoint.qp, send, badSend))
    }

    /// Polls once; returns how many completions are in `completions`, all
    /// successful (an error completion is thrown with its status).
    @inline(__always)
    func poll() throws -> Int {
        let n = ibv_poll_cq(endpoint.cq, completionCapacity, completions)
        if n < 0 {
            // A provider returns -errno or -1 with errno set; either way, name it.
            throw VerbsError("ibv_poll_cq", n < -1 ? -n : (errno != 0 ? errno : EIO))
        }
        for i in 0..<Int(n) where completions[i].status != IBV_WC_SUCCESS {
            let wc = completions[i]
            throw BenchFailure("work completion error on qpn 0x\(String(wc.qp_num, radix: 16)): "
                + "\(String(cString: ibv_wc_status_str(wc.status))) (status \(wc.status.rawValue), "
                + "opcode \(wc.opcode.rawValue), wr_id \(wc.wr_id), vendor_err \(wc.vendor_err))")
        }
        return Int(n)
    }
}
