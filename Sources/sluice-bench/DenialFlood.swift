#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SluiceWire
import CSluiceSys

/// How big the burst of denials is: at most `maxRequests` requests, and no
/// longer than `maxSeconds`, whichever comes first.
struct FloodPlan {
    var maxRequests: Int
    var maxSeconds: Double
    /// Requests sent before the answer to the first comes back.
    var inFlight: Int
}

/// A hostile tenant: it speaks the wire protocol by hand (the verbs library
/// would print every refusal), takes the protection domains its quota
/// allows, then asks for more as fast as the router answers, with several
/// requests in flight. The router refuses each one by policy
/// (`quotas.protectionDomains`, ENOMEM) and audits it.
final class QuotaFlooder {
    private let fd: Int32
    private var seq: UInt32 = 0
    private var replies = [UInt8](repeating: 0, count: Int(SLUICE_MSG_MAX))
    /// What the refusals said, from the first one.
    private(set) var refusal = ""
    private(set) var refusalErrno: Int32 = 0
    /// Protection domains the quota allowed before the first refusal.
    private(set) var granted = 0

    /// Shared with the thread that waits for the flood to be under way.
    final class Progress {
        let refused = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
    }

    struct Result {
        let refused: Int
        /// Requests the router allowed during the flood (another session of
        /// the tenant freed a PD); expected 0.
        let allowed: Int
        let startNanos: UInt64
        let endNanos: UInt64
        var refusalsPerSecond: Double { Double(refused) * 1e9 / Double(max(endNanos &- startNanos, 1)) }
    }

    /// Connects to the tenant's socket and opens a session.
    init(socket path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError("socket(AF_UNIX, SOCK_SEQPACKET)", errno) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Glibc.close(fd)
            throw BenchFailure("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let r = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0 else {
            let e = errno
            Glibc.close(fd)
            throw SystemCallError("connect(\(path))", e)
        }
        var open = sluice_open_req()
        open.abi_version = SLUICE_WIRE_VERSION
        try send(&open, opcode: SLUICE_OP_OPEN.rawValue)
        let (status, reason) = try receive()
        guard status == 0 else { throw BenchFailure("OPEN on \(path) refused: \(reason) (errno \(status))") }
    }

    /// Ends the session; the router reclaims its protection domains.
    func close() {
        Glibc.close(fd)
    }

    /// Allocates protection domains until the quota refuses one; returns
    /// after the first refusal, which it keeps to show.
    func exhaustQuota(limit: Int = 4096) throws {
        while granted < limit {
            var req = sluice_alloc_pd_req()
            try send(&req, opcode: SLUICE_OP_ALLOC_PD.rawValue)
            let (status, reason) = try receive()
            if status != 0 {
                refusal = reason
                refusalErrno = status
                return
            }
            granted += 1
        }
        throw BenchFailure("the router allowed \(limit) ALLOC_PD in one session; this tenant's policy has no quota to flood against")
    }

    /// Sends ALLOC_PD with `plan.inFlight` outstanding until told to stop or
    /// the plan's bounds are reached; then collects the answers still due.
    func flood(plan: FloodPlan, progress: Progress) throws -> Result {
        var refused = 0, allowed = 0, sent = 0, due = 0
        let start = monotonicNanos()
        let limit = UInt64(plan.maxSeconds * 1e9)
        while true {
            let stopping = progress.stop.load(ordering: .relaxed) || sent >= plan.maxRequests
                || monotonicNanos() &- start > limit
            while !stopping && due < plan.inFlight && sent < plan.maxRequests {
                var req = sluice_alloc_pd_req()
                try send(&req, opcode: SLUICE_OP_ALLOC_PD.rawValue)
                sent += 1
                due += 1
            }
            if due == 0 { break }
            let (status, _) = try receive(reason: false)
            due -= 1
            if status == 0 { allowed += 1 } else { refused += 1 }
            progress.refused.store(refused, ordering: .relaxed)
        }
        return Result(refused: refused, allowed: allowed, startNanos: start, endNanos: monotonicNanos())
    }

    private func send<T>(_ req: inout T, opcode: UInt32) throws {
        seq &+= 1
        let s = seq
        let n = withUnsafeMutableBytes(of: &req) { raw -> Int in
            var h = sluice_msg_hdr()
            h.magic = SLUICE_WIRE_MAGIC
            h.version = UInt16(SLUICE_WIRE_VERSION)
            h.opcode = UInt16(opcode)
            h.length = UInt32(raw.count)
            h.seq = s
            withUnsafeBytes(of: h) { raw.copyMemory(from: $0) }
            return sluice_send_fds(fd, raw.baseAddress, raw.count, nil, 0)
        }
        guard n == MemoryLayout<T>.size else { throw SystemCallError("sendmsg(tenant socket)", n < 0 ? errno : EMSGSIZE) }
    }

    /// One reply: its status and (when `reason`) the refusal's reason. Fds that come with it (OPEN's
    /// session page and doorbell) are closed: this tenant never posts work.
    private func receive(reason wanted: Bool = true) throws -> (Int32, String) {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = retryingEINTR { poll(&pfd, 1, 10_000) }
        if ready < 0 { throw SystemCallError("poll(tenant socket)", errno) }
        if ready == 0 { throw BenchFailure("the router did not answer a request within 10 s") }
        var fds: [Int32] = [-1, -1, -1, -1]
        var nfds: Int32 = 0, truncated: Int32 = 0
        let n = replies.withUnsafeMutableBytes {
            sluice_recv_fds(fd, $0.baseAddress, $0.count, &fds, 4, &nfds, &truncated)
        }
        for f in fds.prefix(Int(nfds)) { Glibc.close(f) }
        if n < 0 { throw SystemCallError("recvmsg(tenant socket)", errno) }
        guard n >= MemoryLayout<sluice_reply_hdr>.size else {
            throw BenchFailure(n == 0 ? "the router closed the session" : "a reply of \(n) bytes is shorter than its header")
        }
        let rep = replies.withUnsafeBytes { $0.loadUnaligned(as: sluice_reply_hdr.self) }
        guard rep.status != 0, wanted else { return (rep.status, "") }
        let reason = withUnsafeBytes(of: rep.reason) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return (rep.status, reason)
    }
}

/// The burst-of-denials experiment: alpha's RDMA WRITE bandwidth measured
/// while beta's flood of refused requests is under way.
enum DenialBurst {
    /// Its repository policy has a protection-domain quota of 2.
    static let floodingTenant = "beta"

    struct Outcome {
        let write: Throughput
        let writeEndNanos: UInt64
        let flood: QuotaFlooder.Result
        /// Every refusal beta got, the one that found the quota's end included.
        var refused: Int { flood.refused + 1 }
        let granted: Int
        let refusal: String
        let refusalErrno: Int32
    }

    private final class Outlet {
        var result: QuotaFlooder.Result?
    }

    static func run(alpha: String, beta: String, bandwidth: BandwidthPlan, flood: FloodPlan) throws -> Outcome {
        let flooder: QuotaFlooder
        do {
            flooder = try QuotaFlooder(socket: beta)
        } catch {
            throw BenchFailure("tenant \(floodingTenant) (the flooding tenant) cannot open a session: \(error)")
        }
        defer { flooder.close() }
        try flooder.exhaustQuota()
        let progress = QuotaFlooder.Progress()
        let outlet = Outlet()
        let thread = try BenchThread {
            outlet.result = try flooder.flood(plan: flood, progress: progress)
        }
        // Measure only once the flood is under way (or has failed: then the
        // join below says why). A policy may delay beta's control verbs
        // (rateLimits.controlVerbs), so "under way" is a few refusals, not
        // a rate.
        let underWay = max(1, flood.inFlight)
        let warm = monotonicNanos()
        while progress.refused.load(ordering: .relaxed) < underWay && monotonicNanos() &- warm < 5_000_000_000 {
            usleep(1_000)
        }
        let write: Result<Throughput, Error>
        if progress.refused.load(ordering: .relaxed) >= underWay {
            write = Result { try SluiceMeasurements.writeBandwidth(socket: alpha, plan: bandwidth) }
        } else {
            write = .failure(BenchFailure("beta's flood did not get \(underWay) refusals within 5 s"))
        }
        let writeEnd = monotonicNanos()
        progress.stop.store(true, ordering: .relaxed)
        try thread.join()
        guard let result = outlet.result else { throw BenchFailure("the flooding thread ended without a result") }
        return Outcome(write: try write.get(), writeEndNanos: writeEnd, flood: result, granted: flooder.granted,
                       refusal: flooder.refusal, refusalErrno: flooder.refusalErrno)
    }

    /// The yardstick for the flood: alpha's bandwidth while one more thread
    /// of this process spins and asks the router for nothing. Where cores
    /// are scarce, any busy thread slows alpha; this shows by how much.
    static func besideSpinner(alpha: String, bandwidth: BandwidthPlan) throws -> Throughput {
        let control = RunControl()
        let spinner = try BenchThread {
            var spins: UInt64 = 0
            while !control.isFinished { spins &+= 1 }
            blackHole(spins)
        }
        let write = Result { try SluiceMeasurements.writeBandwidth(socket: alpha, plan: bandwidth) }
        control.finish()
        try spinner.join()
        return try write.get()
    }
}
