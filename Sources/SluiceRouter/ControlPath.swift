#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys

/// A refused request: the errno the verb documents, and why.
struct Refusal: Error {
    let errno: Int32
    let reason: String
    /// The policy rule that refused, when a policy did (else a plain check).
    let rule: String?
    /// A fuller reason for the audit log only, when `reason` (which the
    /// tenant sees) must not reveal another tenant's policy.
    let auditReason: String?
    init(_ errno: Int32, _ reason: String, rule: String? = nil, auditReason: String? = nil) {
        self.errno = errno
        self.reason = reason
        self.rule = rule
        self.auditReason = auditReason
    }
}

/// What a handler hands back: the reply body (a wire struct whose first
/// member is `sluice_reply_hdr`), fds to pass, the object it concerned.
struct Reply {
    var bytes: [UInt8]
    var fds: [Int32] = []
    var object: String? = nil
    /// The policy rule that allowed it, if a policy was consulted.
    var rule: String? = nil

    init<T>(_ body: T, fds: [Int32] = [], object: String? = nil, rule: String? = nil) {
        bytes = withUnsafeBytes(of: body) { Array($0) }
        self.fds = fds
        self.object = object
        self.rule = rule
    }
}

func fillReplyHeader(_ rep: inout sluice_reply_hdr, request: sluice_msg_hdr, length: Int, status: Int32, reason: String) {
    rep.hdr.magic = SLUICE_WIRE_MAGIC
    rep.hdr.version = UInt16(SLUICE_WIRE_VERSION)
    rep.hdr.opcode = request.opcode | UInt16(SLUICE_REPLY_BIT)
    rep.hdr.length = UInt32(length)
    rep.hdr.seq = request.seq
    rep.status = status
    withUnsafeMutableBytes(of: &rep.reason) { raw in
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        let bytes = Array(reason.utf8.prefix(raw.count - 1))
        raw.copyBytes(from: bytes)
    }
}

extension Router {
    static let opNames: [UInt16: String] = [
        UInt16(SLUICE_OP_OPEN.rawValue): "open", UInt16(SLUICE_OP_ALLOC_PD.rawValue): "alloc_pd",
        UInt16(SLUICE_OP_DEALLOC_PD.rawValue): "dealloc_pd", UInt16(SLUICE_OP_REG_MR.rawValue): "reg_mr",
        UInt16(SLUICE_OP_DEREG_MR.rawValue): "dereg_mr", UInt16(SLUICE_OP_REMAP_MR.rawValue): "remap_mr",
        UInt16(SLUICE_OP_CREATE_COMP_CHANNEL.rawValue): "create_comp_channel",
        UInt16(SLUICE_OP_DESTROY_COMP_CHANNEL.rawValue): "destroy_comp_channel",
        UInt16(SLUICE_OP_CREATE_CQ.rawValue): "create_cq", UInt16(SLUICE_OP_DESTROY_CQ.rawValue): "destroy_cq",
        UInt16(SLUICE_OP_CREATE_QP.rawValue): "create_qp", UInt16(SLUICE_OP_MODIFY_QP.rawValue): "modify_qp",
        UInt16(SLUICE_OP_QUERY_QP.rawValue): "query_qp", UInt16(SLUICE_OP_DESTROY_QP.rawValue): "destroy_qp",
    ]

    /// The exact request size and fd count each opcode must come with.
    static let requestShape: [UInt16: (size: Int, fds: Int)] = [
        UInt16(SLUICE_OP_OPEN.rawValue): (MemoryLayout<sluice_open_req>.size, 0),
        UInt16(SLUICE_OP_ALLOC_PD.rawValue): (MemoryLayout<sluice_alloc_pd_req>.size, 0),
        UInt16(SLUICE_OP_DEALLOC_PD.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
        UInt16(SLUICE_OP_REG_MR.rawValue): (MemoryLayout<sluice_reg_mr_req>.size, 1),
        UInt16(SLUICE_OP_DEREG_MR.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
        UInt16(SLUICE_OP_REMAP_MR.rawValue): (MemoryLayout<sluice_remap_mr_req>.size, 1),
        UInt16(SLUICE_OP_CREATE_COMP_CHANNEL.rawValue): (MemoryLayout<sluice_alloc_pd_req>.size, 0),
        UInt16(SLUICE_OP_DESTROY_COMP_CHANNEL.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
        UInt16(SLUICE_OP_CREATE_CQ.rawValue): (MemoryLayout<sluice_create_cq_req>.size, 0),
        UInt16(SLUICE_OP_DESTROY_CQ.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
        UInt16(SLUICE_OP_CREATE_QP.rawValue): (MemoryLayout<sluice_create_qp_req>.size, 0),
        UInt16(SLUICE_OP_MODIFY_QP.rawValue): (MemoryLayout<sluice_modify_qp_req>.size, 0),
        UInt16(SLUICE_OP_QUERY_QP.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
        UInt16(SLUICE_OP_DESTROY_QP.rawValue): (MemoryLayout<sluice_handle_req>.size, 0),
    ]

    /// Validates the framing of one datagram, runs its handler, replies, and
    /// records the decision. Fds that came along are closed in every case
    /// (by the reaper thread: a tenant's socket with SO_LINGER could block a
    /// close): handlers map what they need and keep no received fd.
    func handleMessage(_ s: Session, _ raw: UnsafeRawBufferPointer, declaredLength: Int, fds: [Int32], truncated: Bool) {
        var hdr = sluice_msg_hdr()
        if raw.count >= MemoryLayout<sluice_msg_hdr>.size {
            hdr = raw.loadUnaligned(as: sluice_msg_hdr.self)
        }
        let verb = Router.opNames[hdr.opcode] ?? "opcode \(hdr.opcode)"
        defer { fds.forEach(reaper.close) }

        func refuse(_ r: Refusal) {
            log.record(event: "control", subject: s.subject, verb: verb, decision: .deny, rule: r.rule ?? "wire",
                       reason: r.auditReason ?? r.reason)
            var rep = sluice_reply_hdr()
            fillReplyHeader(&rep, request: hdr, length: MemoryLayout<sluice_reply_hdr>.size, status: r.errno, reason: r.reason)
            send(s, withUnsafeBytes(of: rep) { Array($0) }, fds: [])
        }

        if truncated {
            return refuse(Refusal(EINVAL, "message of \(declaredLength) bytes or its fds exceed the limits (\(SLUICE_MSG_MAX) bytes, \(SLUICE_MSG_MAX_FDS) fds)"))
        }
        guard raw.count >= MemoryLayout<sluice_msg_hdr>.size else {
            return refuse(Refusal(EINVAL, "message of \(raw.count) bytes is shorter than the header"))
        }
        guard hdr.magic == SLUICE_WIRE_MAGIC else {
            return refuse(Refusal(EINVAL, "bad magic 0x\(String(hdr.magic, radix: 16))"))
        }
        guard hdr.version == SLUICE_WIRE_VERSION else {
            return refuse(Refusal(EPROTONOSUPPORT, "wire version \(hdr.version) is not \(SLUICE_WIRE_VERSION)"))
        }
        guard let shape = Router.requestShape[hdr.opcode] else {
            return refuse(Refusal(EOPNOTSUPP, "unknown opcode \(hdr.opcode)"))
        }
        guard Int(hdr.length) == raw.count else {
            return refuse(Refusal(EINVAL, "header length \(hdr.length) does not match the \(raw.count) bytes received"))
        }
        guard raw.count == shape.size else {
            return refuse(Refusal(EINVAL, "\(verb) must be \(shape.size) bytes, got \(raw.count)"))
        }
        guard fds.count == shape.fds else {
            return refuse(Refusal(EINVAL, "\(verb) carries \(shape.fds) file descriptors, got \(fds.count)"))
        }
        guard s.opened || hdr.opcode == UInt16(SLUICE_OP_OPEN.rawValue) else {
            return refuse(Refusal(EINVAL, "the session must be opened first"))
        }
        do {
            var reply = try dispatch(s, hdr.opcode, raw, fds: fds)
            reply.bytes.withUnsafeMutableBytes { bytes in
                var rep = bytes.loadUnaligned(as: sluice_reply_hdr.self)
                fillReplyHeader(&rep, request: hdr, length: bytes.count, status: 0, reason: "")
                withUnsafeBytes(of: rep) { bytes.copyMemory(from: $0) }
            }
            log.record(event: "control", subject: s.subject, verb: verb, object: reply.object, decision: .allow, rule: reply.rule)
            send(s, reply.bytes, fds: reply.fds)
            reply.fds.forEach(Sys.close)
        } catch let r as Refusal {
            refuse(r)
        } catch {
            refuse(Refusal(ENOMEM, "\(error)"))
        }
    }

    private func send(_ s: Session, _ bytes: [UInt8], fds: [Int32]) {
        let n = bytes.withUnsafeBytes { raw in
            fds.withUnsafeBufferPointer { f in
                sluice_send_fds(s.fd, raw.baseAddress, raw.count, f.baseAddress, Int32(f.count))
            }
        }
        if n < 0 && errno != EAGAIN {
            closeSession(s, reason: "cannot reply: \(String(cString: strerror(errno)))")
        }
    }

    private func dispatch(_ s: Session, _ op: UInt16, _ raw: UnsafeRawBufferPointer, fds: [Int32]) throws -> Reply {
        switch UInt32(op) {
        case SLUICE_OP_OPEN.rawValue: return try open(s)
        case SLUICE_OP_ALLOC_PD.rawValue: return try allocPD(s)
        case SLUICE_OP_DEALLOC_PD.rawValue: return try deallocPD(s, raw.loadUnaligned(as: sluice_handle_req.self))
        case SLUICE_OP_REG_MR.rawValue: return try regMR(s, raw.loadUnaligned(as: sluice_reg_mr_req.self), fd: fds[0])
        case SLUICE_OP_DEREG_MR.rawValue: return try deregMR(s, raw.loadUnaligned(as: sluice_handle_req.self))
        case SLUICE_OP_REMAP_MR.rawValue: return try remapMR(s, raw.loadUnaligned(as: sluice_remap_mr_req.self), fd: fds[0])
        case SLUICE_OP_CREATE_COMP_CHANNEL.rawValue: return try createChannel(s)
        case SLUICE_OP_DESTROY_COMP_CHANNEL.rawValue: return try destroyChannel(s, raw.loadUnaligned(as: sluice_handle_req.self))
        case SLUICE_OP_CREATE_CQ.rawValue: return try createCQ(s, raw.loadUnaligned(as: sluice_create_cq_req.self))
        case SLUICE_OP_DESTROY_CQ.rawValue: return try destroyCQ(s, raw.loadUnaligned(as: sluice_handle_req.self))
        case SLUICE_OP_CREATE_QP.rawValue: return try createQP(s, raw.loadUnaligned(as: sluice_create_qp_req.self))
        case SLUICE_OP_MODIFY_QP.rawValue: return try modifyQP(s, raw.loadUnaligned(as: sluice_modify_qp_req.self))
        case SLUICE_OP_QUERY_QP.rawValue: return try queryQP(s, raw.loadUnaligned(as: sluice_handle_req.self))
        case SLUICE_OP_DESTROY_QP.rawValue: return try destroyQP(s, raw.loadUnaligned(as: sluice_handle_req.self))
        default: throw Refusal(EOPNOTSUPP, "unknown opcode \(op)")
        }
    }
}
