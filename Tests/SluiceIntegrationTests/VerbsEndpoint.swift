import Foundation
import XCTest
import SluiceVerbs

/// One ibverbs context (= one router session) with a PD, a CQ and RC QPs,
/// driven through the C library's verbs API exactly as an application would.
final class VerbsEndpoint {
    let context: UnsafeMutablePointer<ibv_context>
    let pd: UnsafeMutablePointer<ibv_pd>
    let cq: UnsafeMutablePointer<ibv_cq>
    var qps: [UnsafeMutablePointer<ibv_qp>] = []
    let lid: UInt16
    let gid: ibv_gid
    private var mrs: [UnsafeMutablePointer<ibv_mr>] = []

    init(socket: String, cqDepth: Int32 = 256) throws {
        setenv("SLUICE_SOCKET", socket, 1)
        var n: Int32 = 0
        guard let list = ibv_get_device_list(&n), n == 1, let dev = list[0] else {
            throw VerbsError("ibv_get_device_list found \(n) devices")
        }
        defer { ibv_free_device_list(list) }
        XCTAssertEqual(String(cString: ibv_get_device_name(dev)), "sluice0")
        guard let ctx = ibv_open_device(dev) else { throw VerbsError("ibv_open_device", errno) }
        context = ctx
        var port = ibv_port_attr()
        // ibv_query_port is a macro over an inline function in verbs.h; call
        // the exported symbol the way old binaries do.
        guard ___ibv_query_port(ctx, 1, &port) == 0 else { throw VerbsError("ibv_query_port", errno) }
        lid = port.lid
        var g = ibv_gid()
        guard ibv_query_gid(ctx, 1, 0, &g) == 0 else { throw VerbsError("ibv_query_gid", errno) }
        gid = g
        guard let p = ibv_alloc_pd(ctx) else { throw VerbsError("ibv_alloc_pd", errno) }
        pd = p
        guard let c = ibv_create_cq(ctx, cqDepth, nil, nil, 0) else { throw VerbsError("ibv_create_cq", errno) }
        cq = c
    }

    deinit {
        for qp in qps { ibv_destroy_qp(qp) }
        for mr in mrs { ibv_dereg_mr(mr) }
        ibv_destroy_cq(cq)
        ibv_dealloc_pd(pd)
        ibv_close_device(context)
    }

    @discardableResult
    func createQP(sendDepth: UInt32 = 64, recvDepth: UInt32 = 64, sge: UInt32 = 4, inline: UInt32 = 0) throws -> UnsafeMutablePointer<ibv_qp> {
        var attr = ibv_qp_init_attr()
        attr.send_cq = cq
        attr.recv_cq = cq
        attr.qp_type = IBV_QPT_RC
        attr.cap.max_send_wr = sendDepth
        attr.cap.max_recv_wr = recvDepth
        attr.cap.max_send_sge = sge
        attr.cap.max_recv_sge = sge
        attr.cap.max_inline_data = inline
        guard let qp = ibv_create_qp(pd, &attr) else { throw VerbsError("ibv_create_qp", errno) }
        qps.append(qp)
        return qp
    }

    /// RESET -> INIT -> RTR -> RTS towards `remote`, addressed by LID or GID.
    func connect(_ qp: UnsafeMutablePointer<ibv_qp>, to remote: UnsafeMutablePointer<ibv_qp>, of peer: VerbsEndpoint,
                 access: ibv_access_flags = ibv_access_flags(0), useGID: Bool = false, rnrRetry: UInt8 = 7,
                 retryCount: UInt8 = 7, timeout: UInt8 = 14) throws {
        var a = ibv_qp_attr()
        a.qp_state = IBV_QPS_INIT
        a.pkey_index = 0
        a.port_num = 1
        a.qp_access_flags = access.rawValue
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_ACCESS_FLAGS])
        a = ibv_qp_attr()
        a.qp_state = IBV_QPS_RTR
        a.path_mtu = IBV_MTU_4096
        a.dest_qp_num = remote.pointee.qp_num
        a.rq_psn = 0
        a.max_dest_rd_atomic = 1
        a.min_rnr_timer = 1
        a.ah_attr.port_num = 1
        if useGID {
            a.ah_attr.is_global = 1
            a.ah_attr.grh.dgid = peer.gid
            a.ah_attr.grh.hop_limit = 1
        } else {
            a.ah_attr.dlid = peer.lid
        }
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                            IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER])
        a = ibv_qp_attr()
        a.qp_state = IBV_QPS_RTS
        a.timeout = timeout
        a.retry_cnt = retryCount
        a.rnr_retry = rnrRetry
        a.sq_psn = 0
        a.max_rd_atomic = 1
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_TIMEOUT, IBV_QP_RETRY_CNT, IBV_QP_RNR_RETRY, IBV_QP_SQ_PSN, IBV_QP_MAX_QP_RD_ATOMIC])
    }

    func modify(_ qp: UnsafeMutablePointer<ibv_qp>, _ a: inout ibv_qp_attr, _ mask: [ibv_qp_attr_mask]) throws {
        let m = mask.reduce(Int32(0)) { $0 | Int32($1.rawValue) }
        let r = ibv_modify_qp(qp, &a, m)
        guard r == 0 else { throw VerbsError("ibv_modify_qp", r) }
    }

    func state(_ qp: UnsafeMutablePointer<ibv_qp>) -> ibv_qp_state {
        var a = ibv_qp_attr()
        var i = ibv_qp_init_attr()
        XCTAssertEqual(ibv_query_qp(qp, &a, Int32(IBV_QP_STATE.rawValue), &i), 0)
        return a.qp_state
    }

    func register(_ p: UnsafeMutableRawPointer, _ len: Int, _ access: ibv_access_flags) throws -> UnsafeMutablePointer<ibv_mr> {
        guard let mr = ibv_reg_mr(pd, p, len, Int32(access.rawValue)) else { throw VerbsError("ibv_reg_mr", errno) }
        mrs.append(mr)
        return mr
    }

    func deregister(_ mr: UnsafeMutablePointer<ibv_mr>) {
        mrs.removeAll { $0 == mr }
        XCTAssertEqual(ibv_dereg_mr(mr), 0)
    }

    func postRecv(_ qp: UnsafeMutablePointer<ibv_qp>, id: UInt64, _ sges: [ibv_sge]) throws {
        var list = sges
        try list.withUnsafeMutableBufferPointer { buf in
            var wr = ibv_recv_wr()
            wr.wr_id = id
            wr.sg_list = buf.baseAddress
            wr.num_sge = Int32(buf.count)
            var bad: UnsafeMutablePointer<ibv_recv_wr>?
            let r = ibv_post_recv(qp, &wr, &bad)
            guard r == 0 else { throw VerbsError("ibv_post_recv", r) }
        }
    }

    func postSend(_ qp: UnsafeMutablePointer<ibv_qp>, id: UInt64, _ opcode: ibv_wr_opcode, _ sges: [ibv_sge],
                  flags: ibv_send_flags = IBV_SEND_SIGNALED, remote: (UInt64, UInt32)? = nil, imm: UInt32 = 0) throws {
        var list = sges
        try list.withUnsafeMutableBufferPointer { buf in
            var wr = ibv_send_wr()
            wr.wr_id = id
            wr.sg_list = buf.baseAddress
            wr.num_sge = Int32(buf.count)
            wr.opcode = opcode
            wr.send_flags = flags.rawValue
            wr.imm_data = imm.bigEndian
            if let (addr, rkey) = remote {
                wr.wr.rdma.remote_addr = addr
                wr.wr.rdma.rkey = rkey
            }
            var bad: UnsafeMutablePointer<ibv_send_wr>?
            let r = ibv_post_send(qp, &wr, &bad)
            guard r == 0 else { throw VerbsError("ibv_post_send", r) }
        }
    }

    /// Polls until `count` completions arrived (or 10 s passed).
    func poll(_ count: Int, seconds: Double = 10) -> [ibv_wc] {
        var out: [ibv_wc] = []
        var wc = [ibv_wc](repeating: ibv_wc(), count: 16)
        let deadline = Date().addingTimeInterval(seconds)
        while out.count < count && Date() < deadline {
            let n = ibv_poll_cq(cq, Int32(min(16, count - out.count)), &wc)
            XCTAssertGreaterThanOrEqual(n, 0)
            if n > 0 { out += wc[0..<Int(n)] } else { usleep(50) }
        }
        return out
    }

    /// Asserts that no completion arrives within `seconds`.
    func assertQuiet(seconds: Double = 0.2, file: StaticString = #filePath, line: UInt = #line) {
        var wc = ibv_wc()
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            XCTAssertEqual(ibv_poll_cq(cq, 1, &wc), 0, "unexpected completion wr_id \(wc.wr_id) status \(wc.status.rawValue)", file: file, line: line)
            usleep(1000)
        }
    }
}

struct VerbsError: Error, CustomStringConvertible {
    let description: String
    /// The errno the call failed with (0 when none was given).
    let code: Int32
    init(_ call: String, _ err: Int32 = 0) {
        code = err
        description = err == 0 ? call : "\(call): \(String(cString: strerror(err)))"
    }
}

/// Page-aligned anonymous memory of its own, so that re-backing its pages
/// can never race with another thread's heap data on the same page.
final class TestBuffer {
    let base: UnsafeMutableRawPointer
    let size: Int
    init(pages: Int) {
        size = pages * 4096
        base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
    }
    deinit { munmap(base, size) }

    func fill(_ offset: Int, _ count: Int, seed: UInt8) {
        for i in 0..<count { base.storeBytes(of: UInt8(truncatingIfNeeded: Int(seed) &+ i &* 7), toByteOffset: offset + i, as: UInt8.self) }
    }

    func bytes(_ offset: Int, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: base + offset, count: count))
    }
}

func sge(_ p: UnsafeMutableRawPointer, _ len: Int, _ mr: UnsafeMutablePointer<ibv_mr>) -> ibv_sge {
    ibv_sge(addr: UInt64(UInt(bitPattern: p)), length: UInt32(len), lkey: mr.pointee.lkey)
}

func addr(_ p: UnsafeMutableRawPointer) -> UInt64 { UInt64(UInt(bitPattern: p)) }
