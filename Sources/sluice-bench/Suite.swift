#if canImport(Glibc)
import Glibc
#endif
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

    static let quick = Plans(
        latency: LatencyPlan(warmup: 1_000, iterations: 10_000, maxSeconds: 3, maxWarmupSeconds: 1),
        bandwidth: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 64, operations: 4_096,
                                 maxSeconds: 5, maxWarmupSeconds: 1),
        decisions: DecisionPlan(secondsPerLoop: 0.1),
        messageRate: BandwidthPlan(messageBytes: 8, window: 64, warmup: 4_096, operations: 200_000,
                                   maxSeconds: 3, maxWarmupSeconds: 1, signalEvery: 16))
    static let full = Plans(
        latency: LatencyPlan(warmup: 10_000, iterations: 100_000, maxSeconds: 20, maxWarmupSeconds: 3),
        bandwidth: BandwidthPlan(messageBytes: 64 << 10, window: 16, warmup: 512, operations: 65_536,
                                 maxSeconds: 20, maxWarmupSeconds: 3),
        decisions: DecisionPlan(secondsPerLoop: 1),
        messageRate: BandwidthPlan(messageBytes: 8, window: 64, warmup: 65_536, operations: 4_000_000,
                                   maxSeconds: 20, maxWarmupSeconds: 3, signalEvery: 16))
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
        FileHandle.standardError.write("· \(what)\n".data(using: .utf8)!)
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
