#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import Foundation
import SluicePolicy

/// How much each measurement runs in a mode.
struct Plans {
    var latency: LatencyPlan
    var bandwidth: BandwidthPlan
    var decisions: DecisionPlan
    /// Small RDMA WRITEs, few of them signaled: the rate of work requests,
    /// each of which the router checks against the connection's policy mask.
    var messageRate: BandwidthPlan
    var audit: AuditPlan
    /// Alpha's bandwidth beside the burst of denials: the bandwidth
    /// measurement, run for a fixed time so that the flood has time to bite.
    var burst: BandwidthPlan
    var flood: FloodPlan

    static let quick = Plans(
        latency: LatencyPlan(warmup: 1_000, iterations: 10_000, maxSeconds: 1, maxWarmupSeconds: 0.3),
        bandwidth: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 64, operations: 4_096,
                                 maxSeconds: 5, maxWarmupSeconds: 1),
        decisions: DecisionPlan(secondsPerLoop: 0.1),
        messageRate: BandwidthPlan(messageBytes: 8, window: 64, warmup: 4_096, operations: 200_000,
                                   maxSeconds: 0.5, maxWarmupSeconds: 0.2, signalEvery: 16),
        audit: AuditPlan(records: 100_000),
        burst: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 64, operations: .max,
                             maxSeconds: 0.5, maxWarmupSeconds: 0.2),
        flood: FloodPlan(maxRequests: 1_000_000, maxSeconds: 15, inFlight: 8))
    static let full = Plans(
        latency: LatencyPlan(warmup: 10_000, iterations: 100_000, maxSeconds: 20, maxWarmupSeconds: 3),
        bandwidth: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 512, operations: 65_536,
                                 maxSeconds: 20, maxWarmupSeconds: 3),
        decisions: DecisionPlan(secondsPerLoop: 1),
        messageRate: BandwidthPlan(messageBytes: 8, window: 64, warmup: 65_536, operations: 4_000_000,
                                   maxSeconds: 20, maxWarmupSeconds: 3, signalEvery: 16),
        audit: AuditPlan(records: 200_000),
        burst: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 512, operations: .max,
                             maxSeconds: 5, maxWarmupSeconds: 1),
        flood: FloodPlan(maxRequests: 5_000_000, maxSeconds: 60, inFlight: 8))
}

/// Runs every measurement once, in one process, against one router, and
/// collects tables, CSV figures and failures. Baselines run first, while
/// the router is idle (it sleeps after its spin interval), so they do not
/// compete with its poller; a failed Sluice measurement does not stop the
/// others.
final class Suite {
    let router: RouterProcess
    let plans: Plans
    /// The router's policy directory: the decisions are timed over it too.
    let policies: String
    private(set) var figures: [Figure] = []
    private(set) var failures: [String] = []
    private var routerDead = false

    init(router: RouterProcess, plans: Plans, policies: String) {
        self.router = router
        self.plans = plans
        self.policies = policies
    }

    private func progress(_ what: String) {
        benchProgress(what)
    }

    /// Runs one measurement; a failure becomes a row that says why.
    private func measure<T>(_ label: String, throughSluice: Bool, _ body: () throws -> T) -> Result<T, Error> {
        if throughSluice && routerDead {
            return .failure(BenchFailure("not run: the router is gone"))
        }
        progress("measuring \(label)")
        let result = Result { try body() }
        if case .failure(let e) = result { failures.append("\(label): \(e)") }
        if throughSluice {
            do {
                try router.checkAlive()
            } catch {
                routerDead = true
                failures.append("\(error)")
            }
        }
        return result
    }

    func latency() -> Table {
        let plan = plans.latency
        var table = Table(title: "8-byte ping-pong round trip (µs)", columns: ["p50", "p99", "mean", "samples"])
        let threads = measure("thread hand-off", throughSluice: false) { try Baselines.threadHandOff(plan: plan) }
        let tcp = measure("TCP loopback ping-pong", throughSluice: false) { try Baselines.tcpPingPong(plan: plan) }
        let ring = measure("shared-memory ring ping-pong between two processes", throughSluice: false) { try RingBaseline.pingPong(plan: plan) }
        let sluice = measure("sluice SEND ping-pong", throughSluice: true) {
            try SluiceMeasurements.sendPingPong(socket: router.tenantSocket, plan: plan, yieldWhenIdle: false)
        }
        let sluiceYield = measure("sluice SEND ping-pong, yielding pollers", throughSluice: true) {
            try SluiceMeasurements.sendPingPong(socket: router.tenantSocket, plan: plan, yieldWhenIdle: true)
        }
        let sluiceLabel: String
        if case .success(let (_, inline)) = sluice, !inline {
            sluiceLabel = "sluice SEND (RC, 2 sessions, no inline)"
        } else {
            sluiceLabel = "sluice SEND (RC, 2 sessions)"
        }
        add(&table, "sluice-send-rc", sluiceLabel, sluice.map(\.0))
        add(&table, "sluice-send-rc-yield", "sluice SEND, pollers yield when idle", sluiceYield.map(\.0))
        add(&table, "tcp-loopback", "TCP loopback (TCP_NODELAY)", tcp)
        add(&table, "shm-ring-2proc", "ring between two processes (fork, shared memory)", ring)
        add(&table, "thread-handoff", "thread hand-off (shared atomic)", threads)
        return table
    }

    func bandwidth() -> Table {
        let plan = plans.bandwidth
        let size = plan.messageBytes
        var table = Table(title: "\(size >> 10) KiB transfer bandwidth", columns: ["GB/s", "msgs/s", "messages"])
        let copy = measure("memcpy", throughSluice: false) { try Baselines.memcpyBandwidth(plan: plan) }
        let tcp = measure("TCP loopback stream", throughSluice: false) { try Baselines.tcpStream(plan: plan) }
        let sluice = measure("sluice RDMA WRITE", throughSluice: true) {
            try SluiceMeasurements.writeBandwidth(socket: router.tenantSocket, plan: plan)
        }
        add(&table, "sluice-rdma-write-rc", "sluice RDMA WRITE (RC, \(plan.window) in flight)", sluice, size: size)
        add(&table, "memcpy", "memcpy, one core", copy, size: size)
        add(&table, "tcp-stream", "TCP loopback stream", tcp, size: size)
        return table
    }

    /// Issue 3: what one policy decision costs, beside loops that decide
    /// nothing, and the rate of small work requests the router checks.
    func policyDecisions() -> Table {
        var table = Table(title: "Policy decisions (ns each)", columns: ["ns", "per second", "count"])
        let built = measure("loading \(policies) for the policy engine", throughSluice: false) {
            try PolicyDecisions(policies: policies, plan: plans.decisions)
        }
        switch built {
        case .failure(let e):
            table.addFailure("policy engine", Self.firstLine(e))
        case .success(let d):
            let loops: [(String, String, () -> DecisionCost)] = [
                ("policy-wr-mask", "work request: allowsWireOpcode, connection mask", d.workRequestCheck),
                ("plain-and", "  same loop, plain AND on the mask", d.plainAnd),
                ("empty-loop", "  same loop, no decision (sum the opcodes)", d.emptyLoop),
                ("policy-regmr-allow", "control: regMR, allowed (alpha)", d.regMRAllowed),
                ("policy-regmr-deny", "control: regMR, denied (beta, memoryAccess)", d.regMRDenied),
                ("policy-createqp-allow", "control: createQP, allowed (alpha)", d.createQPAllowed),
                ("policy-connect-allow", "control: connect alpha->alpha, allowed", d.connectAllowed),
                ("policy-connect-deny", "control: connect alpha->beta, denied (peers)", d.connectDenied),
            ]
            for (system, label, loop) in loops {
                progress("timing \(label.trimmingCharacters(in: .whitespaces))")
                let c = loop()
                table.add(label, [Format.nanos(c.nanosPerDecision), Format.count(c.decisionsPerSecond), Format.count(Double(c.decisions))])
                figures += [
                    Figure(metric: "decision_ns", system: system, size: 0, value: c.nanosPerDecision, unit: "ns"),
                    Figure(metric: "decision_rate", system: system, size: 0, value: c.decisionsPerSecond, unit: "decisions/s"),
                    Figure(metric: "decisions", system: system, size: 0, value: Double(c.decisions), unit: "count"),
                ]
            }
            table.addNote("work-request loops check \(PolicyDecisions.opcodeCount) opcodes (0...10, 7 allowed) per pass; mask \(d.connectionMask)")
        }
        let plan = plans.messageRate
        let label = "end to end: sluice \(plan.messageBytes) B RDMA WRITE, \(plan.window) in flight, 1 in \(plan.signalEvery) signaled"
        let rate = measure("sluice \(plan.messageBytes)-byte RDMA WRITE message rate", throughSluice: true) {
            try SluiceMeasurements.writeBandwidth(socket: router.tenantSocket, plan: plan)
        }
        switch rate {
        case .success(let t):
            let ns = 1e9 / max(t.operationsPerSecond, 1)
            table.add(label, [Format.nanos(ns), Format.count(t.operationsPerSecond), Format.count(Double(t.operations))])
            let system = "sluice-rdma-write-rc-unsignaled"
            figures += [
                Figure(metric: "message_ns", system: system, size: plan.messageBytes, value: ns, unit: "ns"),
                Figure(metric: "message_rate", system: system, size: plan.messageBytes, value: t.operationsPerSecond, unit: "msgs/s"),
                Figure(metric: "messages", system: system, size: plan.messageBytes, value: Double(t.operations), unit: "count"),
            ]
            table.addNote("end to end: the router checks every one of these writes against the mask (ns = 1/rate)")
        case .failure(let e):
            table.addFailure(label, Self.firstLine(e))
        }
        return table
    }

    /// Issue 4: records per second through `AuditWriter` into a temporary
    /// log, with the router's fsync interval and with an fsync per batch,
    /// beside plain writes of the same bytes.
    func auditWriting() -> Table {
        let plan = plans.audit
        var table = Table(title: "Audit writing, \(plan.records) records", columns: ["records/s", "MB/s", "ns/record", "written", "dropped", "fsyncs"])
        let dir: String
        do {
            dir = try AuditThroughput.makeDirectory()
        } catch {
            failures.append("audit writing: \(error)")
            table.addFailure("audit writer", Self.firstLine(error))
            return table
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func writer(_ fsyncMillis: Int, paced: Bool) -> Result<AuditRun, Error> {
            measure("audit writing, fsync \(fsyncMillis) ms, \(paced ? "paced" : "flood")", throughSluice: false) {
                try AuditThroughput.writer(fsyncMillis: fsyncMillis, paced: paced, plan: plan, directory: dir)
            }
        }
        let batched = writer(100, paced: true)
        let everyBatch = writer(0, paced: true)
        let flood = writer(100, paced: false)
        let lineBytes = (try? batched.get()).map { Int($0.bytesPerRecord.rounded()) } ?? 400
        let plain = measure("plain write(2), fsync every 100 ms", throughSluice: false) {
            try AuditThroughput.plainWrites(plan: plan, lineBytes: lineBytes, directory: dir)
        }
        add(&table, "audit-fsync-100ms", "AuditWriter, fsync every 100 ms (router default)", batched)
        add(&table, "audit-fsync-0ms", "AuditWriter, fsync after every batch (0 ms)", everyBatch)
        add(&table, "audit-fsync-100ms-flood", "AuditWriter, 100 ms, caller never waits", flood)
        add(&table, "plain-write-fsync-100ms", "write(2) of same-size lines, 1024 a call, 100 ms", plain)
        table.addNote("\(lineBytes) bytes a record (a router denial: control, alloc_pd, quotas.protectionDomains); log in \(dir) (\(AuditThroughput.fileSystem(of: dir)))")
        table.addNote("first two: the caller waits while the queue (65536) is over half full, so none is dropped; the third never waits, as the router")
        table.addNote("ns/record: the caller's record(...) call (plain writes: the whole write); records/s: records written, until the last fsync")
        return table
    }

    private func add(_ table: inout Table, _ system: String, _ label: String, _ r: Result<AuditRun, Error>) {
        switch r {
        case .success(let a):
            table.add(label, [Format.count(a.recordsPerSecond), String(format: "%.1f", a.megabytesPerSecond), Format.nanos(a.callerNanosPerRecord),
                              Format.count(Double(a.written)), Format.count(Double(a.dropped)), Format.count(Double(a.syncs))])
            let size = Int(a.bytesPerRecord.rounded())
            figures += [
                Figure(metric: "audit_records_per_s", system: system, size: size, value: a.recordsPerSecond, unit: "records/s"),
                Figure(metric: "audit_mb_per_s", system: system, size: size, value: a.megabytesPerSecond, unit: "MB/s"),
                Figure(metric: "audit_record_ns", system: system, size: size, value: a.callerNanosPerRecord, unit: "ns"),
                Figure(metric: "audit_written", system: system, size: size, value: Double(a.written), unit: "count"),
                Figure(metric: "audit_dropped", system: system, size: size, value: Double(a.dropped), unit: "count"),
                Figure(metric: "audit_fsyncs", system: system, size: size, value: Double(a.syncs), unit: "count"),
            ]
        case .failure(let e):
            table.addFailure(label, Self.firstLine(e))
        }
    }

    /// Issue 4: alpha's bandwidth alone, then while beta's requests are
    /// refused as fast as the router can answer, with the denials the
    /// router audited in each run.
    func denialBurst() -> Table {
        let plan = plans.burst
        let size = plan.messageBytes
        var table = Table(title: "\(size >> 10) KiB RDMA WRITE (alpha) beside a burst of denials (beta)",
                          columns: ["GB/s", "msgs/s", "messages", "refused", "refused/s", "audited"])
        var tally = AuditLogTally(path: router.auditLogPath)
        _ = try? tally.scan()
        let alone = measure("sluice RDMA WRITE, alone", throughSluice: true) {
            try SluiceMeasurements.writeBandwidth(socket: router.tenantSocket, plan: plan)
        }
        let aloneDenials = (try? tally.scan().denials) ?? 0
        let flooded = measure("sluice RDMA WRITE, while beta floods", throughSluice: true) {
            try DenialBurst.run(alpha: router.tenantSocket, beta: router.socket(for: DenialBurst.floodingTenant),
                                bandwidth: plan, flood: plans.flood)
        }
        let spinning = measure("sluice RDMA WRITE, beside a spinning thread", throughSluice: true) {
            try DenialBurst.besideSpinner(alpha: router.tenantSocket, bandwidth: plan)
        }
        let aloneLabel = "alpha alone"
        let floodLabel = "alpha while beta floods (\(plans.flood.inFlight) in flight)"
        let spinLabel = "alpha beside a spinning thread (no requests)"
        switch alone {
        case .success(let t):
            table.add(aloneLabel, [Format.gbps(t.gigabytesPerSecond), Format.count(t.operationsPerSecond), Format.count(Double(t.operations)),
                                   "0", "0", Format.count(Double(aloneDenials))])
            figures += throughputFigures("sluice-rdma-write-rc-alone", t, size: size)
            figures.append(Figure(metric: "denials_audited", system: "sluice-rdma-write-rc-alone", size: size, value: Double(aloneDenials), unit: "count"))
        case .failure(let e):
            table.addFailure(aloneLabel, Self.firstLine(e))
        }
        switch flooded {
        case .success(let b):
            // The router's writer thread may still hold the last denials.
            var audited = AuditLogTally.Counts()
            let deadline = monotonicNanos() + 5_000_000_000
            while true {
                if let c = try? tally.scan() {
                    audited.denials += c.denials
                    audited.lostDenials += c.lostDenials
                }
                if audited.denials + audited.lostDenials >= b.refused || monotonicNanos() > deadline { break }
                usleep(50_000)
            }
            let system = "sluice-rdma-write-rc-beta-flood"
            table.add(floodLabel, [Format.gbps(b.write.gigabytesPerSecond), Format.count(b.write.operationsPerSecond),
                                   Format.count(Double(b.write.operations)), Format.count(Double(b.refused)),
                                   Format.count(b.flood.refusalsPerSecond), Format.count(Double(audited.denials))])
            figures += throughputFigures(system, b.write, size: size)
            figures += [
                Figure(metric: "flood_refused", system: system, size: size, value: Double(b.refused), unit: "count"),
                Figure(metric: "flood_refused_rate", system: system, size: size, value: b.flood.refusalsPerSecond, unit: "refusals/s"),
                Figure(metric: "denials_audited", system: system, size: size, value: Double(audited.denials), unit: "count"),
                Figure(metric: "denials_lost", system: system, size: size, value: Double(audited.lostDenials), unit: "count"),
            ]
            table.addNote("beta took \(b.granted) protection domains, then each ALLOC_PD was refused: \(b.refusal) (\(Decision.errnoName(b.refusalErrno)))")
            table.addNote("refused: answers beta got during the run; audited: \"decision\":\"deny\" records the router's log gained")
            if let limit = (try? PolicySet.load(directory: policies))?.tenants
                .first(where: { $0.name == DenialBurst.floodingTenant })?.rateLimits.controlVerbs {
                table.addNote("beta's policy delays its control verbs to \(limit.operations)/s, burst \(limit.burstOperationsOrDefault) (rateLimits.controlVerbs): its flood runs at that rate")
            }
            if audited.lostDenials > 0 {
                table.addNote("the router's audit queue overflowed: audit.loss records count \(audited.lostDenials) denials not written")
            }
            if b.flood.endNanos < b.writeEndNanos {
                table.addNote("the flood stopped at its bound (\(plans.flood.maxRequests) requests or \(Int(plans.flood.maxSeconds)) s) before alpha's run ended")
            }
            if b.flood.allowed > 0 {
                table.addNote("\(b.flood.allowed) of beta's requests were allowed during the flood")
            }
        case .failure(let e):
            table.addFailure(floodLabel, Self.firstLine(e))
        }
        switch spinning {
        case .success(let t):
            table.add(spinLabel, [Format.gbps(t.gigabytesPerSecond), Format.count(t.operationsPerSecond), Format.count(Double(t.operations)),
                                  "-", "-", "-"])
            figures += throughputFigures("sluice-rdma-write-rc-beside-spinner", t, size: size)
        case .failure(let e):
            table.addFailure(spinLabel, Self.firstLine(e))
        }
        table.addNote("the spinning thread asks the router for nothing: what one more busy thread costs alpha on \(Machine.onlineCPUs) CPUs")
        return table
    }

    private func throughputFigures(_ system: String, _ t: Throughput, size: Int) -> [Figure] {
        [
            Figure(metric: "bandwidth", system: system, size: size, value: t.gigabytesPerSecond, unit: "GB/s"),
            Figure(metric: "message_rate", system: system, size: size, value: t.operationsPerSecond, unit: "msgs/s"),
            Figure(metric: "messages", system: system, size: size, value: Double(t.operations), unit: "count"),
        ]
    }

    private func add(_ table: inout Table, _ system: String, _ label: String, _ r: Result<LatencySummary, Error>) {
        switch r {
        case .success(let s):
            table.add(label, [Format.micros(s.p50), Format.micros(s.p99), Format.micros(s.mean), Format.count(Double(s.samples))])
            figures += [
                Figure(metric: "pingpong_rtt_p50", system: system, size: 8, value: s.p50, unit: "us"),
                Figure(metric: "pingpong_rtt_p99", system: system, size: 8, value: s.p99, unit: "us"),
                Figure(metric: "pingpong_rtt_mean", system: system, size: 8, value: s.mean, unit: "us"),
                Figure(metric: "pingpong_samples", system: system, size: 8, value: Double(s.samples), unit: "count"),
            ]
        case .failure(let e):
            table.addFailure(label, Self.firstLine(e))
        }
    }

    private func add(_ table: inout Table, _ system: String, _ label: String, _ r: Result<Throughput, Error>, size: Int) {
        switch r {
        case .success(let t):
            table.add(label, [Format.gbps(t.gigabytesPerSecond), Format.count(t.operationsPerSecond), Format.count(Double(t.operations))])
            figures += [
                Figure(metric: "bandwidth", system: system, size: size, value: t.gigabytesPerSecond, unit: "GB/s"),
                Figure(metric: "message_rate", system: system, size: size, value: t.operationsPerSecond, unit: "msgs/s"),
                Figure(metric: "messages", system: system, size: size, value: Double(t.operations), unit: "count"),
            ]
        case .failure(let e):
            table.addFailure(label, Self.firstLine(e))
        }
    }

    private static func firstLine(_ e: Error) -> String {
        String("\(e)".split(separator: "\n").first ?? "")
    }
}
