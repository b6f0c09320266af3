#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceBenchStats
import SluiceVerbs

/// How much issue 8's tables run in a mode: the size sweep, the message
/// rate, the control verbs, the router's CPU and wake-up, and scale.
struct LimitsPlans {
    var sweepSizes: [Int]
    var sweepQPs: [Int]
    var sweep: WindowPlan
    var sweepLatency: LatencyPlan
    /// Bytes in flight per QP in the sweep: the window is this over the
    /// message size, clamped to 4...64.
    var sweepInFlightBytes: Int
    var rate: WindowPlan
    var rateRounds: Int
    var ringMessages: Int
    var controlSamples: Int
    var bigMRBytes: Int
    var bigMRSamples: Int
    var idleSeconds: Double
    var wakeSamples: Int
    var wakeGapMillis: Int
    var load: WindowPlan
    var scaleMRs: [Int]
    var scaleIdleQPs: [Int]
    var scale: WindowPlan
    var scaleRounds: Int

    static let quick = LimitsPlans(
        sweepSizes: [8, 64 << 10, 4 << 20], sweepQPs: [1, 8],
        sweep: WindowPlan(settleSeconds: 0.03, windowSeconds: 0.1),
        sweepLatency: LatencyPlan(warmup: 200, iterations: 2_000, maxSeconds: 0.15, maxWarmupSeconds: 0.05),
        sweepInFlightBytes: 16 << 20,
        rate: WindowPlan(settleSeconds: 0.06, windowSeconds: 0.15), rateRounds: 3,
        ringMessages: 2_000_000,
        controlSamples: 100, bigMRBytes: 64 << 20, bigMRSamples: 3,
        idleSeconds: 1, wakeSamples: 25, wakeGapMillis: 20,
        load: WindowPlan(settleSeconds: 0.05, windowSeconds: 0.3),
        scaleMRs: [10, 10_000], scaleIdleQPs: [0, 100, 1_000],
        scale: WindowPlan(settleSeconds: 0.05, windowSeconds: 0.12), scaleRounds: 1)

    static let full = LimitsPlans(
        sweepSizes: [8, 32, 128, 512, 2 << 10, 8 << 10, 32 << 10, 64 << 10, 128 << 10, 512 << 10, 2 << 20, 4 << 20], sweepQPs: [1, 8],
        sweep: WindowPlan(settleSeconds: 0.1, windowSeconds: 0.5),
        sweepLatency: LatencyPlan(warmup: 1_000, iterations: 20_000, maxSeconds: 1, maxWarmupSeconds: 0.2),
        sweepInFlightBytes: 16 << 20,
        rate: WindowPlan(settleSeconds: 0.3, windowSeconds: 1), rateRounds: 5,
        ringMessages: 50_000_000,
        controlSamples: 1_000, bigMRBytes: 1 << 30, bigMRSamples: 5,
        idleSeconds: 2, wakeSamples: 200, wakeGapMillis: 20,
        load: WindowPlan(settleSeconds: 0.2, windowSeconds: 1),
        scaleMRs: [10, 10_000], scaleIdleQPs: [0, 100, 1_000],
        scale: WindowPlan(settleSeconds: 0.2, windowSeconds: 0.5), scaleRounds: 3)
}

/// Issue 8's tables that need tenants without quotas: they run as tenant
/// `open` of the generated policies, on the IsolationSuite's router (and
/// its enforcement-off twin where a row says so).
final class LimitsSuite {
    let plans: LimitsPlans
    let router: RouterProcess
    let routerOff: RouterProcess?
    let tenant: String
    let spinMicros: UInt64?
    private(set) var figures: [Figure] = []
    private(set) var failures: [String] = []
    private var deadRouters: Set<String> = []

    init(router: RouterProcess, routerOff: RouterProcess?, tenant: String, plans: LimitsPlans, spinMicros: UInt64?) {
        self.router = router
        self.routerOff = routerOff
        self.tenant = tenant
        self.plans = plans
        self.spinMicros = spinMicros
    }

    private var socket: String { router.socket(for: tenant) }

    private func progress(_ what: String) {
        benchProgress(what)
    }

    /// Runs one measurement; a failure becomes a row that says why.
    private func measure<T>(_ label: String, on routers: [RouterProcess], _ body: () throws -> T) -> Result<T, Error> {
        if routers.contains(where: { deadRouters.contains($0.runtimeDir) }) {
            return .failure(BenchFailure("not run: the router is gone"))
        }
        progress("measuring \(label)")
        let result = Result { try body() }
        if case .failure(let e) = result { failures.append("\(label): \(e)") }
        for r in routers {
            do {
                try r.checkAlive()
            } catch {
                deadRouters.insert(r.runtimeDir)
                failures.append("\(error)")
            }
        }
        return result
    }

    private func measure<T>(_ label: String, _ body: () throws -> T) -> Result<T, Error> {
        measure(label, on: [router], body)
    }

    private static func firstLine(_ e: Error) -> String {
        String("\(e)".split(separator: "\n").first ?? "")
    }

    private static func size(_ n: Int) -> String {
        n >= 1 << 20 ? "\(n >> 20) MiB" : n >= 1 << 10 ? "\(n >> 10) KiB" : "\(n) B"
    }

    /// One flow in a thread of this process: set up, settle, count, stop.
    private func runFlow(_ r: RouterProcess, _ shape: FlowShape, _ plan: WindowPlan) throws -> FlowRate {
        let flow = try ThreadFlow(name: "\(tenant)'s \(shape.encoded) flow", socket: r.socket(for: tenant), shape: shape)
        do {
            try flow.waitReady(timeoutSeconds: 120)
        } catch {
            try? Flows.finish([flow])
            throw error
        }
        return try Flows.measure([flow], settle: plan.settleSeconds, window: plan.windowSeconds)[0]
    }

    // MARK: size sweep

    /// The sweep's window for a size: `sweepInFlightBytes` in flight, 4 to
    /// 64 requests; one in a quarter of them signaled.
    func sweepShape(_ op: FlowOp, bytes: Int, qps: Int) -> FlowShape {
        let window = min(64, max(4, plans.sweepInFlightBytes / bytes))
        return FlowShape(ops: [op], qpPairs: qps, messageBytes: bytes, window: window, signalEvery: window / 4)
    }

    static func sweepSystem(_ op: FlowOp, qps: Int) -> String { "sluice-\(op.rawValue)-\(qps)qp" }

    /// SEND, WRITE and READ bandwidth at each size on 1 and 8 QP pairs,
    /// beside one core's memcpy of the same size.
    func sweepBandwidth() -> Table {
        let columns = FlowOp.sweepOrder.flatMap { op in plans.sweepQPs.map { "\(op.label) \($0)QP" } } + ["memcpy"]
        var table = Table(title: "Size sweep: bandwidth (GB/s)", columns: columns)
        var errors: [String] = []
        for bytes in plans.sweepSizes {
            var cells: [String] = []
            for op in FlowOp.sweepOrder {
                for qps in plans.sweepQPs {
                    let shape = sweepShape(op, bytes: bytes, qps: qps)
                    switch measure("sweep: \(op.label) \(Self.size(bytes)) on \(qps) QP pair(s)", { try runFlow(router, shape, plans.sweep) }) {
                    case .success(let r):
                        cells.append(Format.sig3(r.gigabytesPerSecond))
                        let system = Self.sweepSystem(op, qps: qps)
                        figures += [
                            Figure(metric: "sweep_bandwidth", system: system, size: bytes, value: r.gigabytesPerSecond, unit: "GB/s"),
                            Figure(metric: "sweep_rate", system: system, size: bytes, value: r.operationsPerSecond, unit: "msgs/s"),
                        ]
                    case .failure(let e):
                        cells.append("error")
                        errors.append("\(op.label) \(Self.size(bytes)) \(qps)QP: \(Self.firstLine(e))")
                    }
                }
            }
            let window = min(64, max(4, plans.sweepInFlightBytes / bytes))
            let copyPlan = BandwidthPlan(messageBytes: bytes, window: window, warmup: 64, operations: .max,
                                         maxSeconds: plans.sweep.windowSeconds, maxWarmupSeconds: plans.sweep.settleSeconds)
            switch measure("sweep: memcpy \(Self.size(bytes))", on: [], { try Baselines.memcpyBandwidth(plan: copyPlan) }) {
            case .success(let t):
                cells.append(Format.sig3(t.gigabytesPerSecond))
                figures += [
                    Figure(metric: "sweep_bandwidth", system: "memcpy", size: bytes, value: t.gigabytesPerSecond, unit: "GB/s"),
                    Figure(metric: "sweep_rate", system: "memcpy", size: bytes, value: t.operationsPerSecond, unit: "msgs/s"),
                ]
            case .failure(let e):
                cells.append("error")
                errors.append("memcpy \(Self.size(bytes)): \(Self.firstLine(e))")
            }
            table.add(Self.size(bytes), cells)
        }
        table.addNote("tenant \(tenant) (no rateLimits); N QP: N RC QP pairs driven by one thread, each end its own session; per QP, \(Self.size(plans.sweepInFlightBytes)) in flight (4 to 64 requests), a quarter of them signaled")
        table.addNote("WRITE and READ: into/from the peer's registered buffer; SEND: the peer reposts its receives as they complete; counted over \(plans.sweep.windowSeconds) s after \(plans.sweep.settleSeconds) s; READ counts bytes read back")
        table.addNote("memcpy: one core copying messages of the same size over the same footprint as one QP's window (a copy is the software fabric's work)")
        for e in errors { table.addNote("error: \(e)") }
        return table
    }

    /// Ping-pong round trip at each size: Sluice SEND beside TCP loopback.
    func sweepLatency() -> Table {
        var table = Table(title: "Size sweep: ping-pong round trip (µs)", columns: ["sluice p50", "sluice p99", "TCP p50", "TCP p99", "samples"])
        var errors: [String] = []
        for bytes in plans.sweepSizes {
            let s = measure("sweep: sluice SEND ping-pong \(Self.size(bytes))") {
                try SluiceMeasurements.sendPingPong(socket: socket, plan: plans.sweepLatency, yieldWhenIdle: true, bytes: bytes).0
            }
            let t = measure("sweep: TCP ping-pong \(Self.size(bytes))", on: []) { try Baselines.tcpPingPong(plan: plans.sweepLatency, bytes: bytes) }
            var cells: [String] = []
            for (r, system) in [(s, "sluice-send"), (t, "tcp-loopback")] {
                switch r {
                case .success(let l):
                    cells += [Format.micros(l.p50), Format.micros(l.p99)]
                    figures += [
                        Figure(metric: "sweep_rtt_p50", system: system, size: bytes, value: l.p50, unit: "us"),
                        Figure(metric: "sweep_rtt_p99", system: system, size: bytes, value: l.p99, unit: "us"),
                    ]
                case .failure(let e):
                    cells += ["error", "error"]
                    errors.append("\(system) \(Self.size(bytes)): \(Self.firstLine(e))")
                }
            }
            let counts = [s, t].compactMap { try? $0.get().samples }.map(String.init).joined(separator: "/")
            cells.append(counts.isEmpty ? "-" : counts)
            table.add(Self.size(bytes), cells)
        }
        table.addNote("sluice: SEND between two sessions of tenant \(tenant), one thread per side, pollers yield when idle (2 cores are shared with the router); TCP: 127.0.0.1, TCP_NODELAY, blocking")
        table.addNote("round trip, not halved; each run up to \(plans.sweepLatency.iterations) round trips or \(plans.sweepLatency.maxSeconds) s; samples: sluice/TCP")
        for e in errors { table.addNote("error: \(e)") }
        return table
    }

    // MARK: message rate

    /// 8-byte WRITEs on one QP pair, one in 16 signaled and all signaled,
    /// with enforcement on and off, beside a raw ring between two processes.
    func messageRate() -> Table {
        let plan = plans.rate
        var table = Table(title: "Message rate: 8 B, one QP pair / one ring", columns: ["ops/s", "ns/op", "vs ring", "spread %"])
        let ring = measure("ring between two processes, \(plans.ringMessages) messages", on: []) {
            try RingBaseline.messageRate(messages: plans.ringMessages, maxSeconds: max(1, plan.windowSeconds))
        }
        func shape(_ every: Int) -> FlowShape { FlowShape(ops: [.write], messageBytes: 8, window: 64, signalEvery: every) }
        var rows: [(label: String, system: String, router: RouterProcess, shape: FlowShape)] = [
            ("sluice WRITE, 1 in 16 signaled", "sluice-write-8b-signal16", router, shape(16)),
            ("sluice WRITE, all signaled", "sluice-write-8b-signal1", router, shape(1)),
        ]
        if let off = routerOff {
            rows.append(("sluice WRITE, 1 in 16, policy+shaping off", "sluice-write-8b-signal16-no-enforcement", off, shape(16)))
        }
        // Set up every row, then interleaved rounds: whatever else the
        // machine does touches every row alike.
        let runs = measure("sluice 8 B WRITE message rate, \(rows.count) rows in \(plans.rateRounds) interleaved rounds",
                           on: [router] + (routerOff.map { [$0] } ?? [])) { () -> [[FlowRate]] in
            var flows: [ThreadFlow] = []
            do {
                for r in rows {
                    let f = try ThreadFlow(name: "\(r.label) flow", socket: r.router.socket(for: tenant), shape: r.shape)
                    flows.append(f)
                    try f.waitReady(timeoutSeconds: 60)
                }
            } catch {
                try? Flows.finish(flows)
                throw error
            }
            return try Flows.rounds(flows, count: plans.rateRounds, settle: plan.settleSeconds, window: plan.windowSeconds)
        }
        let ringRate = try? ring.get().operationsPerSecond
        func add(_ label: String, _ system: String, rate: Double, spread: Double?) {
            let vs = ringRate.flatMap { Stats.ratio(rate, $0) }
            table.add(label, [Format.count(rate), Format.nanos(1e9 / max(rate, 1)), Format.ratio(vs),
                              spread.map { String(format: "%.1f", $0) } ?? "-"])
            figures += [
                Figure(metric: "message_rate", system: system, size: 8, value: rate, unit: "msgs/s"),
                Figure(metric: "message_rate_vs_ring", system: system, size: 8, value: vs ?? .nan, unit: "ratio"),
            ]
        }
        switch runs {
        case .success(let rates):
            for (row, r) in zip(rows, rates) {
                let ops = r.map(\.operationsPerSecond)
                let m = Stats.median(ops) ?? 0
                add(row.label, row.system, rate: m, spread: ops.count > 1 ? Stats.ratio((ops.max()! - ops.min()!) * 100, m) : nil)
            }
        case .failure(let e):
            for row in rows { table.addFailure(row.label, Self.firstLine(e)) }
        }
        switch ring {
        case .success(let t): add("ring between two processes (fork, shared memory)", "shm-ring-2proc", rate: t.operationsPerSecond, spread: nil)
        case .failure(let e): table.addFailure("ring between two processes (fork, shared memory)", Self.firstLine(e))
        }
        table.addNote("sluice: tenant \(tenant), one RC QP pair per row, 64 in flight; a signaled completion stands for the unsignaled ones before it; the poller yields when it finds nothing")
        table.addNote("rows set up first, then a warm-up round and \(plans.rateRounds) rounds, rows in turn (\(plan.windowSeconds) s after \(plan.settleSeconds) s); ops/s: the median round; spread: (max - min) / median")
        table.addNote("ring: this process and a fork of it on a MAP_SHARED ring of \(RingBaseline.capacity) 8-byte slots, free-running indices on their own cache lines (as Sluice's rings); \(plans.ringMessages) messages, one publish each, the consumer checks every value")
        table.addNote("a Sluice WRITE crosses two rings (send queue to the router, completion queue back) and is validated and copied in between")
        return table
    }

    // MARK: control verbs

    /// Samples of one control verb, in ns.
    private struct VerbSamples {
        var nanos: [UInt64] = []
        mutating func time(_ body: () throws -> Void) rethrows {
            let t0 = monotonicNanos()
            try body()
            nanos.append(monotonicNanos() &- t0)
        }
    }

    /// reg_mr of 4 KiB and of a large buffer, dereg_mr, create_qp,
    /// destroy_qp and connect (INIT→RTR→RTS), each through the verbs
    /// library against the router, p50 and p99; beside a SEQPACKET round
    /// trip and memcpy of the registered bytes.
    func controlVerbs() -> Table {
        var table = Table(title: "Control verbs through the router (µs)", columns: ["p50", "p99", "mean", "samples"])
        let n = plans.controlSamples
        let bigLabel = plans.bigMRBytes == 1 << 30 ? "1 GiB" : "\(Self.size(plans.bigMRBytes)) (quick; full mode: 1 GiB)"
        typealias Row = (label: String, system: String, result: Result<LatencySummary, Error>)
        var rows: [Row] = []
        let verbs = measure("control verbs, \(n) samples each") { () -> [String: [UInt64]] in
            var out: [String: [UInt64]] = [:]
            let shape = VerbsEndpoint.Shape(bufferBytes: 4096)
            let a = try VerbsEndpoint(socket: socket, shape: shape, psn: 0x5000)
            defer { try? a.release() }
            let b = try VerbsEndpoint(socket: socket, shape: shape, psn: 0x6000)
            defer { try? b.release() }
            let access = IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue
            var reg = VerbSamples(), dereg = VerbSamples(), big = VerbSamples(), create = VerbSamples(), destroy = VerbSamples(),
                connect = VerbSamples()
            func register(_ bytes: Int, into s: inout VerbSamples, dereg d: inout VerbSamples?) throws {
                let buf = try PageBuffer(bytes: bytes)
                defer { buf.free() }
                // Written first, as an application's buffer is: the library copies its pages.
                memset(buf.base, 0x5a, bytes)
                var mr: UnsafeMutablePointer<ibv_mr>?
                s.time { mr = ibv_reg_mr_iova2(a.pd, buf.base, bytes, UInt64(UInt(bitPattern: buf.base)), access) }
                guard let mr else { throw VerbsError("ibv_reg_mr(\(bytes) bytes)", errno) }
                if d != nil {
                    try d!.time { try VerbsError.check("ibv_dereg_mr", ibv_dereg_mr(mr)) }
                } else {
                    try VerbsError.check("ibv_dereg_mr", ibv_dereg_mr(mr))
                }
            }
            var noDereg: VerbSamples? = nil
            var deregs: VerbSamples? = VerbSamples()
            for _ in 0..<n { try register(4096, into: &reg, dereg: &deregs) }
            dereg = deregs!
            for _ in 0..<plans.bigMRSamples { try register(plans.bigMRBytes, into: &big, dereg: &noDereg) }
            func makeQP(_ e: VerbsEndpoint) throws -> UnsafeMutablePointer<ibv_qp> {
                var req = ibv_qp_init_attr()
                req.send_cq = e.cq
                req.recv_cq = e.cq
                req.qp_type = IBV_QPT_RC
                req.cap.max_send_wr = 64
                req.cap.max_recv_wr = 64
                req.cap.max_send_sge = 1
                req.cap.max_recv_sge = 1
                guard let qp = ibv_create_qp(e.pd, &req) else { throw VerbsError("ibv_create_qp(RC)", errno) }
                return qp
            }
            for _ in 0..<n {
                var qp: UnsafeMutablePointer<ibv_qp>?
                try create.time { qp = try makeQP(a) }
                try destroy.time { try VerbsError.check("ibv_destroy_qp", ibv_destroy_qp(qp!)) }
            }
            // Each sample connects a fresh QP: RTS cannot be entered twice.
            for i in 0..<max(1, n / 2) {
                let qa = try makeQP(a), qb = try makeQP(b)
                defer {
                    _ = ibv_destroy_qp(qa)
                    _ = ibv_destroy_qp(qb)
                }
                try VerbsEndpoint.toInit(qa, access: IBV_ACCESS_LOCAL_WRITE.rawValue)
                try VerbsEndpoint.toInit(qb, access: IBV_ACCESS_LOCAL_WRITE.rawValue)
                let psn = UInt32(0x100 + i)
                try connect.time {
                    try VerbsEndpoint.toRTS(qa, psn: psn, to: RemoteEndpoint(lid: b.lid, qpn: qb.pointee.qp_num, psn: psn, address: 0, rkey: 0))
                }
                try connect.time {
                    try VerbsEndpoint.toRTS(qb, psn: psn, to: RemoteEndpoint(lid: a.lid, qpn: qa.pointee.qp_num, psn: psn, address: 0, rkey: 0))
                }
            }
            out["reg4k"] = reg.nanos
            out["dereg4k"] = dereg.nanos
            out["regbig"] = big.nanos
            out["create"] = create.nanos
            out["destroy"] = destroy.nanos
            out["connect"] = connect.nanos
            return out
        }
        let verbRows: [(String, String, String)] = [
            ("reg_mr, 4 KiB", "reg4k", "sluice-reg-mr-4k"),
            ("reg_mr, \(bigLabel)", "regbig", "sluice-reg-mr-big"),
            ("dereg_mr, 4 KiB", "dereg4k", "sluice-dereg-mr-4k"),
            ("create_qp (RC, 64 deep)", "create", "sluice-create-qp"),
            ("destroy_qp", "destroy", "sluice-destroy-qp"),
            ("connect: one QP INIT→RTR→RTS", "connect", "sluice-connect"),
        ]
        for (label, key, system) in verbRows {
            rows.append((label, system, verbs.flatMap { d in
                guard let s = d[key], !s.isEmpty else { return .failure(BenchFailure("no samples")) }
                return .success(LatencySummary(nanos: s))
            }))
        }
        rows.append(("baseline: AF_UNIX SEQPACKET round trip, 2 threads", "seqpacket-rtt",
                     measure("SEQPACKET round trip", on: []) { try ControlBaselines.seqpacketRoundTrip(samples: n * 4) }))
        rows.append(("baseline: memcpy of 4 KiB", "memcpy-4k",
                     measure("memcpy 4 KiB", on: []) { try ControlBaselines.copyTime(bytes: 4096, samples: n) }))
        rows.append(("baseline: memcpy of \(bigLabel)", "memcpy-big",
                     measure("memcpy \(Self.size(plans.bigMRBytes))", on: []) { try ControlBaselines.copyTime(bytes: plans.bigMRBytes, samples: plans.bigMRSamples) }))
        for (label, system, r) in rows {
            switch r {
            case .success(let s):
                table.add(label, [Format.micros(s.p50), Format.micros(s.p99), Format.micros(s.mean), Format.count(Double(s.samples))])
                let size = system.hasSuffix("big") ? plans.bigMRBytes : system.hasSuffix("4k") ? 4096 : 0
                figures += [
                    Figure(metric: "control_p50", system: system, size: size, value: s.p50, unit: "us"),
                    Figure(metric: "control_p99", system: system, size: size, value: s.p99, unit: "us"),
                ]
            case .failure(let e):
                table.addFailure(label, Self.firstLine(e))
            }
        }
        table.addNote("tenant \(tenant) through libibverbs' API into the router; each reg_mr registers a fresh, written buffer (the library copies its pages into a memfd and the router maps it)")
        table.addNote("create_qp on an existing PD and CQ; connect: a fresh QP in INIT taken to RTR and RTS towards a QP of another session (2 router round trips)")
        table.addNote("baselines: a 64-byte request and reply over a SEQPACKET socket pair between two threads (a control verb's transport, without the work); memcpy of the registered bytes")
        return table
    }

    // MARK: router CPU and wake-up

    /// CPU time of every thread of a process, precise (schedstat's run
    /// time in ns, summed over /proc/<pid>/task/*), or nil where the kernel
    /// does not keep it.
    static func scheduledNanos(pid: pid_t) -> UInt64? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var sum: UInt64 = 0
        for t in tasks {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/task/\(t)/schedstat", encoding: .utf8),
                  let ns = ProcFields.schedstatNanos(text) else { return nil }
            sum += ns
        }
        return sum
    }

    /// The router's CPU use over `seconds` of `body` (or of sleeping):
    /// from /proc/<pid>/stat (ticks) and from schedstat (ns).
    private func routerCPU(seconds: Double, during body: (() throws -> Void)? = nil) throws -> (stat: Double?, sched: Double?, wall: UInt64) {
        let pid = router.pid
        let s0 = ProcessCPU.nanos(pid: pid), n0 = Self.scheduledNanos(pid: pid), t0 = monotonicNanos()
        if let body { try body() } else { usleep(useconds_t(seconds * 1e6)) }
        let s1 = ProcessCPU.nanos(pid: pid), n1 = Self.scheduledNanos(pid: pid), t1 = monotonicNanos()
        let wall = t1 &- t0
        let stat = s0.flatMap { a in s1.flatMap { Stats.cpuPercent(cpuNanos: $0 &- a, wallNanos: wall) } }
        let sched = n0.flatMap { a in n1.flatMap { Stats.cpuPercent(cpuNanos: $0 &- a, wallNanos: wall) } }
        return (stat, sched, wall)
    }

    func routerCPUTable() -> (Table, Table) {
        var cpu = Table(title: "Router CPU (% of one core)", columns: ["stat %", "sched %", "ops/s", "router ns/op", "seconds"])
        func cpuCell(_ v: Double?) -> String { v.map { String(format: $0 < 10 ? "%.2f" : "%.0f", $0) } ?? "-" }
        func add(_ label: String, _ system: String, _ r: Result<(stat: Double?, sched: Double?, wall: UInt64, rate: FlowRate?), Error>) {
            switch r {
            case .success(let m):
                let ops = m.rate?.operationsPerSecond
                let best = m.sched ?? m.stat
                let perOp = ops.flatMap { o in best.flatMap { Stats.ratio($0 / 100 * 1e9, o) } }
                cpu.add(label, [cpuCell(m.stat), cpuCell(m.sched), ops.map { Format.count($0) } ?? "-", perOp.map { Format.nanos($0) } ?? "-",
                                String(format: "%.2f", Double(m.wall) / 1e9)])
                figures += [
                    Figure(metric: "router_cpu_stat", system: system, size: 0, value: m.stat ?? .nan, unit: "% of a core"),
                    Figure(metric: "router_cpu_sched", system: system, size: 0, value: m.sched ?? .nan, unit: "% of a core"),
                ]
                if let perOp { figures.append(Figure(metric: "router_cpu_per_op", system: system, size: 0, value: perOp, unit: "ns")) }
            case .failure(let e):
                cpu.addFailure(label, Self.firstLine(e))
            }
        }
        let idle = plans.idleSeconds
        // Long past the router's spin (100 times it), and at least the plan's gap.
        let gap = max(UInt64(plans.wakeGapMillis) * 1_000_000, (spinMicros ?? 10) * 100_000)
        let gapLabel = gap % 1_000_000 == 0 ? "\(gap / 1_000_000) ms" : String(format: "%.1f ms", Double(gap) / 1e6)
        // Let the router finish the set-up's audit records and fall asleep.
        usleep(200_000)
        add("idle, no sessions of this table", "sluice-router-idle",
            measure("router CPU, idle") { let m = try routerCPU(seconds: idle); return (m.stat, m.sched, m.wall, nil) })
        var wakeRows: [(String, String, Result<LatencySummary, Error>)] = []
        let pairIdle = measure("router CPU, idle with a connected QP pair; wake-up latency") { () -> ((stat: Double?, sched: Double?, wall: UInt64, rate: FlowRate?), LatencySummary, LatencySummary) in
            let w = try WakeProbe(socket: socket)
            defer { w.release() }
            usleep(100_000)
            let m = try routerCPU(seconds: idle)
            let asleep = try w.samples(plans.wakeSamples, gapNanos: gap)
            let awake = try w.samples(max(plans.wakeSamples, 1_000), gapNanos: 0)
            return ((m.stat, m.sched, m.wall, nil), asleep, awake)
        }
        add("idle, one connected QP pair open", "sluice-router-idle-pair", pairIdle.map(\.0))
        wakeRows.append(("sluice: WRITE after \(gapLabel) idle (router asleep)", "sluice-router-asleep", pairIdle.map(\.1)))
        wakeRows.append(("sluice: WRITE right after the last one (router awake)", "sluice-router-awake", pairIdle.map(\.2)))
        for (label, system, shape) in [("8 B WRITE flood, 64 in flight, 1 in 16 signaled", "sluice-router-load-8b",
                                        FlowShape(ops: [.write], messageBytes: 8, window: 64, signalEvery: 16)),
                                       ("64 KiB WRITE flood, 16 in flight", "sluice-router-load-64k",
                                        FlowShape(ops: [.write], messageBytes: 64 << 10, window: 16, signalEvery: 4))] {
            add("under load: \(label)", system, measure("router CPU under load: \(label)") { () -> (Double?, Double?, UInt64, FlowRate?) in
                let flow = try ThreadFlow(name: "load flow", socket: socket, shape: shape)
                do {
                    try flow.waitReady(timeoutSeconds: 60)
                    Flows.go([flow])
                    try Flows.sleep(plans.load.settleSeconds, watching: [flow])
                    let a = try Flows.sample([flow])[0]
                    let m = try routerCPU(seconds: plans.load.windowSeconds) { try Flows.sleep(self.plans.load.windowSeconds, watching: [flow]) }
                    let b = try Flows.sample([flow])[0]
                    try Flows.finish([flow])
                    return (m.stat, m.sched, m.wall, FlowRate(from: a, to: b))
                } catch {
                    try? Flows.finish([flow])
                    throw error
                }
            })
        }
        cpu.addNote("stat: utime+stime of /proc/<router>/stat (10 ms ticks: over \(idle) s, one tick is \(String(format: "%.1f", 1 / idle))%); sched: run time of all its threads from /proc/<router>/task/*/schedstat (ns)")
        cpu.addNote("idle: nothing posted for \(idle) s (the router spins \(spinMicros.map { "\($0)" } ?? "10 (its default)") µs after its last work, then sleeps in epoll_wait); router ns/op: its CPU time per completed request under load")

        var wake = Table(title: "Wake-up: post to completion, 8 B WRITE (µs)", columns: ["p50", "p99", "mean", "samples"])
        wakeRows.append(("baseline: thread in poll() woken by a datagram", "poll-datagram-wake",
                         measure("poll() wake-up baseline", on: []) {
                             try ControlBaselines.datagramWake(samples: plans.wakeSamples, gapNanos: gap)
                         }))
        for (label, system, r) in wakeRows {
            switch r {
            case .success(let s):
                wake.add(label, [Format.micros(s.p50), Format.micros(s.p99), Format.micros(s.mean), Format.count(Double(s.samples))])
                figures += [
                    Figure(metric: "wake_p50", system: system, size: 8, value: s.p50, unit: "us"),
                    Figure(metric: "wake_p99", system: system, size: 8, value: s.p99, unit: "us"),
                ]
            case .failure(let e):
                wake.addFailure(label, Self.firstLine(e))
            }
        }
        wake.addNote("one signaled 8 B RDMA WRITE between two sessions of tenant \(tenant), timed from ibv_post_send until ibv_poll_cq returns its completion (busy-polled)")
        wake.addNote("asleep: posted \(gapLabel) after the previous completion, long past the router's spin, so the library rings the doorbell and the router wakes from epoll_wait; p99 of \(plans.wakeSamples) samples is nearly their maximum")
        wake.addNote("baseline: a thread blocked in poll() on a datagram socket, woken by one byte after the same idle time; the time until its reply is seen (the kernel's part of a doorbell)")
        return (cpu, wake)
    }

    // MARK: scale

    /// Per-WR cost of 8 B WRITEs to random pages of the target whose pages
    /// are covered by 10 or 10,000 regions, while 0, 100 or 1,000 other QPs
    /// are open and idle; the router's memory per QP and per MR.
    func scale() -> (Table, Table) {
        var table = Table(title: "Scale: 8 B RDMA WRITE per-request cost", columns: ["ns/op", "ops/s", "vs 10 MRs, 0 QPs", "spread %"])
        var memory = Table(title: "Router memory per object", columns: ["RSS B/obj", "Pss B/obj", "objects", "RSS MiB after"])
        let slots = 10_000
        func shape(_ regions: Int) -> FlowShape {
            var s = FlowShape(ops: [.write], messageBytes: 8, window: 64, signalEvery: 16)
            s.targetRegions = regions
            s.slots = slots
            s.slotStride = 4096
            s.randomSlots = true
            return s
        }
        struct Cell { let mrs: Int; let idle: Int; let rates: [FlowRate]; let again: Bool }
        var memoryRows: [(String, String, Double?, Double?, Int, UInt64?)] = []
        let run = measure("scale: \(plans.scaleMRs.map { Format.grouped($0) }.joined(separator: ", ")) MRs with \(plans.scaleIdleQPs.map { Format.grouped($0) }.joined(separator: ", ")) idle QPs") { () -> [Cell] in
            var flows: [ThreadFlow] = []
            var idle: IdleQPs?
            defer {
                try? Flows.finish(flows)
                idle?.release()
            }
            var mrMemory: [(Int, ProcessMemory?, ProcessMemory?)] = []
            for mrs in plans.scaleMRs {
                let before = ProcessMemory(pid: router.pid)
                let f = try ThreadFlow(name: "scale flow, \(mrs) MRs", socket: socket, shape: shape(mrs))
                flows.append(f)
                try f.waitReady(timeoutSeconds: 120)
                mrMemory.append((mrs, before, ProcessMemory(pid: router.pid)))
            }
            // Per MR: the difference between the flows' set-ups is their regions.
            if mrMemory.count >= 2, let lo = mrMemory.first, let hi = mrMemory.last,
               let l0 = lo.1, let l1 = lo.2, let h0 = hi.1, let h1 = hi.2 {
                let n = hi.0 - lo.0
                func growth(_ a: UInt64, _ b: UInt64) -> Double { Double(b) - Double(a) }
                let rss = Stats.bytesPerObject(growthKiB: growth(h0.rssKiB, h1.rssKiB) - growth(l0.rssKiB, l1.rssKiB), count: n)
                var pss: Double?
                if let a = l0.pssKiB, let b = l1.pssKiB, let c = h0.pssKiB, let d = h1.pssKiB {
                    pss = Stats.bytesPerObject(growthKiB: growth(c, d) - growth(a, b), count: n)
                }
                memoryRows.append(("per MR (4 KiB regions over one registered buffer)", "sluice-router-per-mr", rss, pss, n, h1.rssKiB))
            }
            var cells: [Cell] = []
            let phases = plans.scaleIdleQPs + (plans.scaleIdleQPs.max().map { $0 > 0 ? [0] : [] } ?? [])
            var seenZero = false
            for count in phases {
                let again = count == 0 && seenZero
                if count == 0 { seenZero = true }
                if idle == nil { idle = try IdleQPs(socket: socket) }
                let before = ProcessMemory(pid: router.pid)
                let had = idle!.count
                try idle!.resize(to: count)
                let after = ProcessMemory(pid: router.pid)
                if count > had, let b = before, let a = after {
                    let n = count - had
                    let pss = b.pssKiB.flatMap { x in a.pssKiB.map { Stats.bytesPerObject(beforeKiB: x, afterKiB: $0, count: n) } } ?? nil
                    memoryRows.append(("per QP (idle, connected, 1-deep rings), \(Format.grouped(had))→\(Format.grouped(count))",
                                       "sluice-router-per-qp-\(count)", Stats.bytesPerObject(beforeKiB: b.rssKiB, afterKiB: a.rssKiB, count: n),
                                       pss, n, a.rssKiB))
                }
                let rates = try Flows.rounds(flows, count: plans.scaleRounds, settle: plans.scale.settleSeconds,
                                             window: plans.scale.windowSeconds, keepRunning: true)
                for (i, r) in rates.enumerated() { cells.append(Cell(mrs: plans.scaleMRs[i], idle: count, rates: r, again: again)) }
            }
            return cells
        }
        switch run {
        case .success(let cells):
            let base = cells.first(where: { $0.mrs == plans.scaleMRs.first && $0.idle == 0 && !$0.again })
                .map { Stats.median($0.rates.map(\.operationsPerSecond)) ?? 0 }
            var stalled: [String] = []
            for c in cells {
                let r = c.rates.map(\.operationsPerSecond)
                let m = Stats.median(r) ?? 0
                if c.rates.contains(where: { $0.operations == 0 }) {
                    stalled.append("\(Format.grouped(c.mrs)) MRs with \(Format.grouped(c.idle)) idle QPs")
                }
                let ns = m > 0 ? 1e9 / m : .nan
                let costRatio = base.flatMap { Stats.ratio($0, m) }
                let spread = r.count > 1 ? Stats.ratio((r.max()! - r.min()!) * 100, m) : nil
                let label = "\(Format.grouped(c.mrs)) MRs, \(Format.grouped(c.idle)) idle QPs\(c.again ? " (again, after)" : "")"
                table.add(label, [ns.isFinite ? Format.nanos(ns) : "-", Format.count(m), Format.ratio(costRatio),
                                  spread.map { String(format: "%.1f", $0) } ?? "-"])
                let system = "sluice-scale-\(c.mrs)mr-\(c.idle)qp\(c.again ? "-again" : "")"
                figures += [
                    Figure(metric: "scale_ns_per_wr", system: system, size: 8, value: ns, unit: "ns"),
                    Figure(metric: "scale_cost_vs_base", system: system, size: 8, value: costRatio ?? .nan, unit: "ratio"),
                ]
            }
            if !stalled.isEmpty {
                table.addNote("STALLED: a round completed no request at all in its \(plans.scale.windowSeconds) s window (\(stalled.joined(separator: "; "))): the router served the flow nothing meanwhile")
            }
        case .failure(let e):
            table.addFailure("scale", Self.firstLine(e))
        }
        table.addNote("one QP pair of tenant \(tenant), 64 in flight, 1 in 16 signaled, each WRITE to a random one of \(Format.grouped(slots)) pages of the target, covered by N regions (as in key translation)")
        table.addNote("idle QPs: other RC QPs of the same tenant in a session of their own, connected to each other in pairs, posting nothing; the rows run in phases as the idle QPs are created, then again once they are destroyed")
        table.addNote("\(plans.scaleRounds) round(s) per phase, flows in turn (\(plans.scale.windowSeconds) s after \(plans.scale.settleSeconds) s); vs: per-request cost / that of \(plans.scaleMRs.first.map(Format.grouped) ?? "?") MRs with no idle QPs (above 1 is slower)")
        for (label, system, rss, pss, n, after) in memoryRows {
            memory.add(label, [rss.map { Format.count($0) } ?? "-", pss.map { Format.count($0) } ?? "-", Format.grouped(n),
                               after.map { String(format: "%.1f", Double($0) / 1024) } ?? "-"])
            figures += [
                Figure(metric: "router_bytes_per_object_rss", system: system, size: n, value: rss ?? .nan, unit: "bytes"),
                Figure(metric: "router_bytes_per_object_pss", system: system, size: n, value: pss ?? .nan, unit: "bytes"),
            ]
        }
        if memoryRows.isEmpty, case .failure(let e) = run { memory.addFailure("router memory", Self.firstLine(e)) }
        memory.addNote("the router's VmRSS (/proc/<pid>/status) and Pss (smaps_rollup: a page shared with a tenant counts half) before and after creating the objects, divided by their number")
        memory.addNote("per MR: (growth while the \(Format.grouped(plans.scaleMRs.last ?? 0))-region flow set up − growth for the \(Format.grouped(plans.scaleMRs.first ?? 0))-region one) / the difference in regions; per QP: includes its share of the ring pages the router touched")
        return (table, memory)
    }
}

extension FlowOp {
    static let sweepOrder: [FlowOp] = [.write, .read, .send]
}

/// QPs that exist and do nothing: RC QPs in a session of their own, 1 deep,
/// connected to each other in pairs (an odd one stays in INIT), on one CQ.
final class IdleQPs {
    private let endpoint: VerbsEndpoint
    private var qps: [UnsafeMutablePointer<ibv_qp>] = []

    var count: Int { qps.count }

    init(socket: String) throws {
        endpoint = try VerbsEndpoint(socket: socket, shape: .init(bufferBytes: 4096, cqDepth: 4096, sendDepth: 1, recvDepth: 1), psn: 0x7000)
    }

    /// Creates or destroys QPs until `n` exist.
    func resize(to n: Int) throws {
        while qps.count > n {
            let qp = qps.removeLast()
            try VerbsError.check("ibv_destroy_qp(idle)", ibv_destroy_qp(qp))
        }
        while qps.count < n {
            var req = ibv_qp_init_attr()
            req.send_cq = endpoint.cq
            req.recv_cq = endpoint.cq
            req.qp_type = IBV_QPT_RC
            req.cap.max_send_wr = 1
            req.cap.max_recv_wr = 1
            req.cap.max_send_sge = 1
            req.cap.max_recv_sge = 1
            guard let qp = ibv_create_qp(endpoint.pd, &req) else {
                throw VerbsError("ibv_create_qp(idle QP \(qps.count + 1) of \(n))", errno)
            }
            qps.append(qp)
            try VerbsEndpoint.toInit(qp, access: IBV_ACCESS_LOCAL_WRITE.rawValue)
            if qps.count % 2 == 0 {
                let a = qps[qps.count - 2], b = qp
                let psn = UInt32(qps.count)
                try VerbsEndpoint.toRTS(a, psn: psn, to: RemoteEndpoint(lid: endpoint.lid, qpn: b.pointee.qp_num, psn: psn, address: 0, rkey: 0))
                try VerbsEndpoint.toRTS(b, psn: psn, to: RemoteEndpoint(lid: endpoint.lid, qpn: a.pointee.qp_num, psn: psn, address: 0, rkey: 0))
            }
        }
    }

    func release() {
        try? resize(to: 0)
        try? endpoint.release()
    }
}

/// One signaled 8-byte WRITE at a time between two sessions, timed from
/// post to completion, after a chosen idle gap.
final class WakeProbe {
    private let writer: VerbsEndpoint
    private let target: VerbsEndpoint
    private let wr: WorkRequests
    private let remote: RemoteEndpoint

    init(socket: String) throws {
        writer = try VerbsEndpoint(socket: socket, shape: .init(bufferBytes: 4096, recvDepth: 1), psn: 0x8000)
        do {
            let access = IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue
            target = try VerbsEndpoint(socket: socket, shape: .init(bufferBytes: 4096, mrAccess: access, recvDepth: 1), psn: 0x9000)
            try writer.connect(to: target.endpoint(), access: IBV_ACCESS_LOCAL_WRITE.rawValue)
            try target.connect(to: writer.endpoint(), access: access)
        } catch {
            try? writer.release()
            throw error
        }
        wr = WorkRequests(writer)
        remote = target.endpoint()
    }

    func samples(_ n: Int, gapNanos: UInt64) throws -> LatencySummary {
        var out = [UInt64]()
        out.reserveCapacity(n)
        for i in 0..<n {
            if gapNanos > 0 {
                sleepNanos(gapNanos)
            }
            writer.buffer.storeBytes(of: UInt64(i), as: UInt64.self)
            var watch = StallWatch()
            let t0 = monotonicNanos()
            try wr.postSend(wrID: UInt64(i), opcode: IBV_WR_RDMA_WRITE, offset: 0, length: 8, remoteAddress: remote.address, rkey: remote.rkey)
            while try wr.poll() == 0 {
                try watch.idle(waitingFor: "the completion of wake-up WRITE \(i)")
            }
            out.append(monotonicNanos() &- t0)
            guard target.buffer.load(as: UInt64.self) == UInt64(i) else {
                throw BenchFailure("wake-up WRITE \(i) completed but the target does not hold its value")
            }
        }
        return LatencySummary(nanos: out)
    }

    func release() {
        try? writer.release()
        try? target.release()
    }
}
