#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceBenchStats
import SluiceRouter

/// A measured interval of a flow: how long to let it run before counting
/// (the first burst of a rate limit, warm caches), and how long to count.
struct WindowPlan {
    var settleSeconds: Double
    var windowSeconds: Double
}

/// How much the key-translation, shaping, isolation, fairness and overhead
/// tables run in a mode.
struct IsolationPlans {
    /// Issue 5: 8-byte WRITEs spread over `keySlots` pages of the target,
    /// covered by each count of regions in turn.
    var keys: WindowPlan
    var keyRegions: [Int]
    var keySlots: Int
    var keyRounds: Int
    /// Issue 6, accuracy: the rates to configure, per operation.
    var shaping: WindowPlan
    var bandwidthPoints: [(FlowOp, [UInt64])]
    var operationPoints: [(FlowOp, [UInt64])]
    /// The bucket written into the shaping tenants' policies, in seconds at their rate.
    var shapingBurstSeconds: Double
    /// Issue 6, isolation: the victim's ping-pong and stream, and the noisy
    /// tenants' set-up and the operation limit of the limited variant.
    var victimLatency: LatencyPlan
    var victimStream: WindowPlan
    var noisySettleSeconds: Double
    var noisyQPs: Int
    /// Noisy and fair-share flooders: requests in flight per QP, one in
    /// `floodSignalEvery` signaled, and how long a flooder sleeps when all
    /// its queues are full. Queues this deep hold milliseconds of the
    /// router's work, so a flooder the CPU scheduler leaves waiting still
    /// has work queued, and the router, not the scheduler, decides shares.
    var floodWindow: Int
    var floodSignalEvery: Int
    var floodSleepMicros: Int
    /// One variant per limit: both noisy tenants held to that many operations a second.
    var noisyLimits: [UInt64]
    /// The bandwidth policy of the victim measured "within its policy
    /// share": below a third of what the router moves alone, so that with
    /// three equal-weight tenants backlogged its share covers it.
    var victimShareBits: UInt64 = 48_000_000_000
    /// Its rateLimits.weight: its one-thread ping-pong alone keeps the
    /// router busy most of the time (two requests of ~0.6 µs of router
    /// time per ~1.4 µs round trip), more than a third of the router; with
    /// weight 3 beside two tenants of weight 1 its share is 60%.
    var victimShareWeight = 3
    /// Issue 6, fairness and overhead.
    var fairness: WindowPlan
    var fairQPs: Int
    var overhead: WindowPlan
    var overheadRounds: Int

    static let quick = IsolationPlans(
        keys: WindowPlan(settleSeconds: 0.06, windowSeconds: 0.12),
        keyRegions: [1, 10, 1_000, 10_000], keySlots: 10_000, keyRounds: 2,
        shaping: WindowPlan(settleSeconds: 0.1, windowSeconds: 0.25),
        // Quick: every rate for WRITE; SEND and READ at the lowest rate,
        // the one most likely to be within reach of any machine.
        bandwidthPoints: [(.write, [1, 4, 16].map { $0 * 1_000_000_000 }), (.send, [1_000_000_000]), (.read, [1_000_000_000])],
        operationPoints: [(.write, [100_000, 1_000_000, 4_000_000]), (.send, [100_000]), (.read, [100_000])],
        shapingBurstSeconds: 0.01,
        victimLatency: LatencyPlan(warmup: 500, iterations: 20_000, maxSeconds: 0.3, maxWarmupSeconds: 0.1),
        victimStream: WindowPlan(settleSeconds: 0.1, windowSeconds: 0.3),
        noisySettleSeconds: 0.2, noisyQPs: 8, floodWindow: 1024, floodSignalEvery: 64, floodSleepMicros: 1000, noisyLimits: [1_000_000, 100_000],
        fairness: WindowPlan(settleSeconds: 0.3, windowSeconds: 1),
        fairQPs: 4,
        overhead: WindowPlan(settleSeconds: 0.06, windowSeconds: 0.15), overheadRounds: 3)

    static let full = IsolationPlans(
        keys: WindowPlan(settleSeconds: 0.3, windowSeconds: 1),
        keyRegions: [1, 10, 1_000, 10_000], keySlots: 10_000, keyRounds: 5,
        shaping: WindowPlan(settleSeconds: 0.5, windowSeconds: 2),
        bandwidthPoints: FlowOp.allCases.map { ($0, [1, 4, 16].map { $0 * 1_000_000_000 }) },
        operationPoints: FlowOp.allCases.map { ($0, [100_000, 1_000_000, 4_000_000]) },
        shapingBurstSeconds: 0.01,
        victimLatency: LatencyPlan(warmup: 5_000, iterations: 100_000, maxSeconds: 3, maxWarmupSeconds: 0.5),
        victimStream: WindowPlan(settleSeconds: 0.5, windowSeconds: 3),
        noisySettleSeconds: 0.5, noisyQPs: 8, floodWindow: 1024, floodSignalEvery: 64, floodSleepMicros: 1000, noisyLimits: [1_000_000, 100_000],
        fairness: WindowPlan(settleSeconds: 1, windowSeconds: 5),
        fairQPs: 4,
        overhead: WindowPlan(settleSeconds: 0.3, windowSeconds: 1), overheadRounds: 7)
}

/// The tables that need tenants with rate limits of their own: key
/// translation (issue 5), and shaping accuracy, isolation, fairness and the
/// overhead of limits (issue 6). They run against a router of their own,
/// started on a generated policy directory (`BenchPolicies`), and, when the
/// router has the benchmark-only flag, a second one with enforcement off.
final class IsolationSuite {
    static let noEnforcementFlag = "--bench-no-enforcement"

    let plans: IsolationPlans
    let router: RouterProcess
    /// The same policies, with enforcement off; nil when the router lacks the flag.
    let routerOff: RouterProcess?
    let policyDir: String
    let tenants: [String: BenchTenant]
    private(set) var figures: [Figure] = []
    private(set) var failures: [String] = []
    private var deadRouters: Set<String> = []
    private var workerCount = 0

    static let open = "open"
    static let high = "high"
    static let victim = "victim"
    static let victimShare = "victim-share"
    static let noisy = ["noisy-a", "noisy-b"]
    static func noisyLimited(_ limit: UInt64) -> [String] {
        let rate = BenchTenant.operations(limit).replacingOccurrences(of: "/s", with: "").lowercased()
        return noisy.map { "\($0)-\(rate)" }
    }
    static let fair = ["fair-a", "fair-b", "fair-c"]

    static func bandwidthTenant(_ bits: UInt64) -> String { "bw-\(BenchTenant.bandwidth(bits).replacingOccurrences(of: "bit/s", with: "").lowercased())" }
    static func operationsTenant(_ n: UInt64) -> String { "ops-\(BenchTenant.operations(n).replacingOccurrences(of: "/s", with: "").lowercased())" }

    /// Writes the policies and starts the router(s).
    init(executable: String, plans: IsolationPlans, spinMicros: UInt64?) throws {
        self.plans = plans
        var list = [BenchTenant(name: Self.open),
                    BenchTenant(name: Self.high, bitsPerSecond: 1_000_000_000_000, operationsPerSecond: 1_000_000_000),
                    BenchTenant(name: Self.victim),
                    BenchTenant(name: Self.victimShare, bitsPerSecond: plans.victimShareBits, weight: plans.victimShareWeight)
                        .withBurst(seconds: plans.shapingBurstSeconds)]
        list += Self.noisy.map { BenchTenant(name: $0) }
        for limit in plans.noisyLimits {
            list += Self.noisyLimited(limit).map { BenchTenant(name: $0, operationsPerSecond: limit) }
        }
        list += Self.fair.map { BenchTenant(name: $0) }
        let bits = Set(plans.bandwidthPoints.flatMap(\.1)).sorted()
        let ops = Set(plans.operationPoints.flatMap(\.1)).sorted()
        list += bits.map { BenchTenant(name: Self.bandwidthTenant($0), bitsPerSecond: $0).withBurst(seconds: plans.shapingBurstSeconds) }
        list += ops.map { BenchTenant(name: Self.operationsTenant($0), operationsPerSecond: $0).withBurst(seconds: plans.shapingBurstSeconds) }
        tenants = Dictionary(uniqueKeysWithValues: list.map { ($0.name, $0) })
        policyDir = try BenchPolicies.write(list)
        router = try RouterProcess(executable: executable, policies: policyDir, tenant: Self.open, spinMicros: spinMicros)
        if RouterProcess.helpText(of: executable).contains(Self.noEnforcementFlag) {
            do {
                routerOff = try RouterProcess(executable: executable, policies: policyDir, tenant: Self.open,
                                              spinMicros: spinMicros, extraArguments: [Self.noEnforcementFlag])
            } catch {
                _ = try? router.stop()
                throw error
            }
        } else {
            routerOff = nil
        }
    }

    /// Stops the routers; returns what went wrong (empty if nothing did).
    func stop() -> [String] {
        var problems: [String] = []
        for (r, what) in [(router, "sluice-router"), (routerOff, "sluice-router \(Self.noEnforcementFlag)")] {
            guard let r else { continue }
            do {
                if let how = try r.stop(), how != "exit status 0" {
                    problems.append("\(what) stopped with \(how)\n\(r.logTail())")
                }
            } catch {
                problems.append("\(error)")
            }
        }
        return problems
    }

    /// The runtime directories to keep after a failure, or remove after success.
    var runtimeDirs: [String] { [router.runtimeDir] + (routerOff.map { [$0.runtimeDir] } ?? []) }

    func removeScratch() {
        router.removeRuntimeDir()
        routerOff?.removeRuntimeDir()
        try? FileManager.default.removeItem(atPath: policyDir)
    }

    private func progress(_ what: String) {
        benchProgress(what)
    }

    /// Runs one measurement against `on`; a failure becomes a row that says why.
    private func measure<T>(_ label: String, on r: RouterProcess, _ body: () throws -> T) -> Result<T, Error> {
        measure(label, on: [r], body)
    }

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

    private func thread(_ r: RouterProcess, _ tenant: String, _ shape: FlowShape) throws -> ThreadFlow {
        try ThreadFlow(name: "\(tenant)'s \(shape.ops.map(\.label).joined(separator: "+")) flow", socket: r.socket(for: tenant), shape: shape)
    }

    private func worker(_ tenant: String, _ shape: FlowShape, nice: Int32 = 0) throws -> WorkerFlow {
        workerCount += 1
        return try WorkerFlow(name: "flood worker for \(tenant)", socket: router.socket(for: tenant), shape: shape,
                              controlPath: "\(router.runtimeDir)/flow-\(workerCount).ctl", nice: nice)
    }

    /// One flow in a thread of this process: set up, settle, count, stop.
    /// Returns its rate and how long set-up took.
    private func runFlow(_ r: RouterProcess, _ tenant: String, _ shape: FlowShape, _ plan: WindowPlan) throws -> (FlowRate, setupNanos: UInt64) {
        let t0 = monotonicNanos()
        let flow = try thread(r, tenant, shape)
        do {
            try flow.waitReady(timeoutSeconds: 120)
        } catch {
            try? Flows.finish([flow])
            throw error
        }
        let setup = monotonicNanos() &- t0
        return (try Flows.measure([flow], settle: plan.settleSeconds, window: plan.windowSeconds)[0], setup)
    }

    private static func firstLine(_ e: Error) -> String {
        String("\(e)".split(separator: "\n").first ?? "")
    }

    // MARK: key translation (issue 5)

    /// Sets up one flow per shape (in threads of this process, against
    /// `r`), then runs them in interleaved rounds. Returns, per shape, the
    /// rates of its rounds and how long its set-up took, or why it failed.
    private func interleaved(_ runs: [(router: RouterProcess, tenant: String, shape: FlowShape)], _ plan: WindowPlan,
                             rounds: Int, label: String) -> Result<[(rates: [FlowRate], setupNanos: UInt64)], Error> {
        var routers: [RouterProcess] = []
        for r in runs where !routers.contains(where: { $0 === r.router }) { routers.append(r.router) }
        return measure(label, on: routers) {
            var flows: [ThreadFlow] = []
            var setups: [UInt64] = []
            do {
                // One at a time, so each set-up time is its own.
                for run in runs {
                    let t0 = monotonicNanos()
                    let f = try thread(run.router, run.tenant, run.shape)
                    flows.append(f)
                    try f.waitReady(timeoutSeconds: 120)
                    setups.append(monotonicNanos() &- t0)
                }
            } catch {
                try? Flows.finish(flows)
                throw error
            }
            let rates = try Flows.rounds(flows, count: rounds, settle: plan.settleSeconds, window: plan.windowSeconds)
            return Array(zip(rates, setups))
        }
    }

    /// The median round's rate, and the spread of the rounds around it:
    /// (max - min) / median, in percent.
    private static func medianAndSpread(_ rates: [FlowRate]) -> (median: Double, spread: Double?) {
        let r = rates.map(\.operationsPerSecond)
        let m = Stats.median(r) ?? 0
        let spread = r.count > 1 ? Stats.ratio((r.max()! - r.min()!) * 100, m) : nil
        return (m, spread)
    }

    /// 8-byte WRITEs to random pages of the target, whose `keySlots` pages
    /// are covered by 1, 10 or 10,000 regions; each request carries the rkey
    /// of its page's region, so with many regions consecutive requests use
    /// different keys in random order. The same pages in the same order in
    /// every row: only the number of keys the router resolves changes.
    func keyTranslation() -> Table {
        let plan = plans.keys
        let slots = plans.keySlots
        var table = Table(title: "Key translation: 8 B RDMA WRITE, random pages and rkeys",
                          columns: ["ns/op", "ops/s", "vs 1 MR", "cost vs 10", "spread %", "setup ms"])
        func shape(_ regions: Int) -> FlowShape {
            var s = FlowShape(ops: [.write], messageBytes: 8, window: 64, signalEvery: 16)
            s.targetRegions = regions
            s.slots = slots
            s.slotStride = 4096
            s.randomSlots = true
            return s
        }
        // Every row is set up first, then all run in interleaved rounds,
        // both routers' rows alike.
        var rows: [(router: RouterProcess, regions: Int, label: String, system: String)] = []
        for regions in plans.keyRegions {
            rows.append((router, regions, "\(regions == 1 ? "1 MR" : "\(Format.grouped(regions)) MRs") at the target", "sluice-keys-\(regions)mr"))
        }
        if let off = routerOff {
            for regions in plans.keyRegions {
                rows.append((off, regions, "\(regions == 1 ? "1 MR" : "\(Format.grouped(regions)) MRs"), policy+shaping off",
                             "sluice-keys-no-enforcement-\(regions)mr"))
            }
        }
        let runs = interleaved(rows.map { ($0.router, Self.open, shape($0.regions)) }, plan, rounds: plans.keyRounds,
                               label: "key translation at \(plans.keyRegions.map { Format.grouped($0) }.joined(separator: ", ")) MRs")
        switch runs {
        case .success(let results):
            var base: [ObjectIdentifier: Double] = [:]
            var base10: [ObjectIdentifier: Double] = [:]
            for (row, result) in zip(rows, results) where row.regions == 1 {
                base[ObjectIdentifier(row.router)] = Self.medianAndSpread(result.rates).median
            }
            for (row, result) in zip(rows, results) where row.regions == 10 {
                base10[ObjectIdentifier(row.router)] = Self.medianAndSpread(result.rates).median
            }
            for (row, (rates, setup)) in zip(rows, results) {
                let (m, spread) = Self.medianAndSpread(rates)
                let ns = 1e9 / max(m, 1)
                let vs = base[ObjectIdentifier(row.router)].flatMap { Stats.ratio(m, $0) }
                // Per-request cost relative to 10 regions: issue 8's scale target reads it.
                let cost10 = base10[ObjectIdentifier(row.router)].flatMap { Stats.ratio($0, m) }
                table.add(row.label, [Format.nanos(ns), Format.count(m), Format.ratio(vs), Format.ratio(cost10),
                                      spread.map { String(format: "%.1f", $0) } ?? "-", Format.count(Double(setup) / 1e6)])
                figures += [
                    Figure(metric: "key_translation_ns", system: row.system, size: 8, value: ns, unit: "ns"),
                    Figure(metric: "key_translation_rate", system: row.system, size: 8, value: m, unit: "ops/s"),
                    Figure(metric: "key_translation_vs_1mr", system: row.system, size: 8, value: vs ?? .nan, unit: "ratio"),
                    Figure(metric: "key_translation_cost_vs_10mr", system: row.system, size: 8, value: cost10 ?? .nan, unit: "ratio"),
                    Figure(metric: "key_translation_spread", system: row.system, size: 8, value: spread ?? .nan, unit: "%"),
                    Figure(metric: "key_translation_setup", system: row.system, size: 8, value: Double(setup) / 1e6, unit: "ms"),
                ]
            }
        case .failure(let e):
            for row in rows { table.addFailure(row.label, Self.firstLine(e)) }
        }
        table.addNote("tenant \(Self.open) (no rateLimits), one QP pair per row, 64 in flight, 1 in 16 signaled; each WRITE to a random one of \(Format.grouped(slots)) pages (\((slots * 4096) >> 20) MiB), same order in every row")
        table.addNote("the pages are split into N equal regions and nothing else is registered at the target; a WRITE carries its page's region's rkey")
        table.addNote("a warm-up round, then \(plans.keyRounds) rounds, rows in turn within each (\(plan.windowSeconds) s counted after \(plan.settleSeconds) s); ops/s: the median round; spread: (max - min) / median of the rounds")
        table.addNote("vs 1 MR: ops/s / the 1-region row's (above 1 is faster); cost vs 10: ns/op / the 10-region row's (above 1 is slower), same router")
        table.addNote("setup ms: opening both sessions, connecting, and registering the N regions (one router round trip each)")
        if routerOff != nil {
            table.addNote("policy+shaping off: a second router with \(Self.noEnforcementFlag), which skips the policy check and shaping but still translates keys and checks bounds and access")
        }
        table.addNote("TODO: no rows without key translation: no router flag skips it (\(routerOff == nil ? "this sluice-router has no \(Self.noEnforcementFlag) at all" : "\(Self.noEnforcementFlag) keeps it"))")
        return table
    }

    // MARK: shaping accuracy (issue 6)

    /// A tenant limited to one rate, flooded with one operation; measured
    /// over a window that starts after the first burst. READs are charged
    /// the bytes they bring back.
    func shapingAccuracy() -> [Table] {
        let plan = plans.shaping
        var unshaped: [String: FlowRate] = [:]
        func shape(_ op: FlowOp, bandwidth: Bool) -> FlowShape {
            bandwidth ? FlowShape(ops: [op], messageBytes: 64 << 10, window: 16, signalEvery: 1)
                      : FlowShape(ops: [op], messageBytes: 8, window: 64, signalEvery: 16)
        }
        // The same floods without a limit (tenant open): what the router
        // reaches at all, so a rate above it reads as out of reach.
        for (op, bandwidth) in plans.bandwidthPoints.map({ ($0.0, true) }) + plans.operationPoints.map({ ($0.0, false) }) {
            let key = "\(op.rawValue)-\(bandwidth)"
            if unshaped[key] != nil { continue }
            if case .success(let (rate, _)) = measure("\(op.label) \(bandwidth ? "64 KiB" : "8 B") unshaped", on: router, {
                try runFlow(router, Self.open, shape(op, bandwidth: bandwidth), plan)
            }) {
                unshaped[key] = rate
                let size = bandwidth ? 64 << 10 : 8
                figures += [
                    Figure(metric: "unshaped_bandwidth", system: "sluice-\(op.rawValue)", size: size, value: rate.bitsPerSecond / 1e9, unit: "Gbit/s"),
                    Figure(metric: "unshaped_rate", system: "sluice-\(op.rawValue)", size: size, value: rate.operationsPerSecond, unit: "ops/s"),
                ]
            }
        }

        var bw = Table(title: "Shaping accuracy: tenant bandwidth, 64 KiB (Gbit/s)",
                       columns: ["configured", "measured", "error %", "msgs/s", "unshaped"])
        for (op, rates) in plans.bandwidthPoints {
            for bits in rates {
                let tenant = Self.bandwidthTenant(bits)
                let label = "\(op.label) at \(BenchTenant.bandwidth(bits)) (\(tenant))"
                let run = measure("shaping \(op.label) 64 KiB at \(BenchTenant.bandwidth(bits))", on: router) {
                    try runFlow(router, tenant, shape(op, bandwidth: true), plan)
                }
                switch run {
                case .success(let (rate, _)):
                    let configured = Double(bits) / 1e9, measured = rate.bitsPerSecond / 1e9
                    let err = Stats.percentError(measured: measured, configured: configured)
                    let ref = unshaped["\(op.rawValue)-true"].map { String(format: "%.2f", $0.bitsPerSecond / 1e9) } ?? "-"
                    bw.add(label, [String(format: "%.2f", configured), String(format: "%.3f", measured), Format.percent(err),
                                   Format.count(rate.operationsPerSecond), ref])
                    let system = "sluice-\(op.rawValue)-\(tenant)"
                    figures += [
                        Figure(metric: "shaping_configured", system: system, size: 64 << 10, value: configured, unit: "Gbit/s"),
                        Figure(metric: "shaping_measured", system: system, size: 64 << 10, value: measured, unit: "Gbit/s"),
                        Figure(metric: "shaping_error", system: system, size: 64 << 10, value: err ?? .nan, unit: "%"),
                    ]
                case .failure(let e):
                    bw.addFailure(label, Self.firstLine(e))
                }
            }
        }
        bw.addNote("spec.rateLimits.tenant.bandwidth, burstBytes = \(Int(plans.shapingBurstSeconds * 1000)) ms at the rate; one QP, 16 in flight, all signaled")
        bw.addNote("measured: bytes completed in a \(plan.windowSeconds) s window starting \(plan.settleSeconds) s after the flood began (READ: bytes read back)")
        bw.addNote("unshaped: the same flood by tenant \(Self.open), which has no rateLimits, in this run: a rate above it cannot be reached here")

        var ops = Table(title: "Shaping accuracy: tenant operations, 8 B (K ops/s)",
                        columns: ["configured", "measured", "error %", "unshaped"])
        for (op, rates) in plans.operationPoints {
            for n in rates {
                let tenant = Self.operationsTenant(n)
                let label = "\(op.label) at \(BenchTenant.operations(n)) (\(tenant))"
                let run = measure("shaping \(op.label) 8 B at \(BenchTenant.operations(n))", on: router) {
                    try runFlow(router, tenant, shape(op, bandwidth: false), plan)
                }
                switch run {
                case .success(let (rate, _)):
                    let configured = Double(n) / 1e3, measured = rate.operationsPerSecond / 1e3
                    let err = Stats.percentError(measured: measured, configured: configured)
                    let ref = unshaped["\(op.rawValue)-false"].map { String(format: "%.1f", $0.operationsPerSecond / 1e3) } ?? "-"
                    ops.add(label, [String(format: "%.0f", configured), String(format: "%.1f", measured), Format.percent(err), ref])
                    let system = "sluice-\(op.rawValue)-\(tenant)"
                    figures += [
                        Figure(metric: "shaping_configured", system: system, size: 8, value: Double(n), unit: "ops/s"),
                        Figure(metric: "shaping_measured", system: system, size: 8, value: rate.operationsPerSecond, unit: "ops/s"),
                        Figure(metric: "shaping_error", system: system, size: 8, value: err ?? .nan, unit: "%"),
                    ]
                case .failure(let e):
                    ops.addFailure(label, Self.firstLine(e))
                }
            }
        }
        ops.addNote("spec.rateLimits.tenant.operations, burstOperations = \(Int(plans.shapingBurstSeconds * 1000)) ms at the rate; one QP, 64 in flight, 1 in 16 signaled")
        ops.addNote("measured: requests completed in a \(plan.windowSeconds) s window starting \(plan.settleSeconds) s after the flood began")
        ops.addNote("unshaped: the same flood by tenant \(Self.open), which has no rateLimits, in this run")
        return [bw, ops]
    }

    // MARK: isolation (issue 6)

    private struct VictimRun {
        /// The round trip driven by one thread (the victim's own figure),
        /// and by two threads that yield when idle (ping and pong sharing
        /// a CPU here: that hand-off is in it).
        let latency: LatencySummary
        let latencyTwoThreads: LatencySummary
        let stream: FlowRate
        /// Each noisy tenant's rate while the victim ran; empty alone.
        let noisy: [FlowRate]
        /// The router's CPU time while the victim ran, in % of one core.
        let routerCPU: Double?
        /// The router's data-path time spent on the victim during its
        /// one-thread ping-pong, in % of that time: its demand alone, what
        /// it got beside the noise.
        let pingPongRouterShare: Double?
        /// The neighbours' CPU time (all of them) in % of one core, and
        /// each one's mean time on the CPU per wake-up (ns), while the
        /// victim ran; nil without neighbours or without schedstat.
        var neighbourCPU: Double? = nil
        var neighbourBursts: [UInt64] = []
    }

    private func victimRun(_ victim: String = IsolationSuite.victim, noisy: [FlowHandle] = []) throws -> VictimRun {
        let a = try Flows.sample(noisy)
        let cpu0 = ProcessCPU.nanos(pid: router.pid)
        let t0 = monotonicNanos()
        let r0 = routerSeconds(of: victim), w0 = monotonicNanos()
        let (latency, _) = try SluiceMeasurements.sendPingPong(socket: router.socket(for: victim), plan: plans.victimLatency,
                                                               yieldWhenIdle: false, oneThread: true)
        let r1 = routerSeconds(of: victim), w1 = monotonicNanos()
        let share = r0.flatMap { a in r1.flatMap { Stats.ratio(($0 - a) * 1e9 * 100, Double(w1 &- w0)) } }
        let (latency2, _) = try SluiceMeasurements.sendPingPong(socket: router.socket(for: victim), plan: plans.victimLatency,
                                                                yieldWhenIdle: true)
        let (stream, _) = try runFlow(router, victim, FlowShape(ops: [.write], messageBytes: 64 << 10, window: 16), plans.victimStream)
        let cpu1 = ProcessCPU.nanos(pid: router.pid)
        let t1 = monotonicNanos()
        let b = try Flows.sample(noisy)
        let cpu = cpu0.flatMap { c0 in cpu1.flatMap { Stats.ratio(Double($0 &- c0) * 100, Double(t1 &- t0)) } }
        return VictimRun(latency: latency, latencyTwoThreads: latency2, stream: stream, noisy: zip(a, b).map { FlowRate(from: $0, to: $1) },
                         routerCPU: cpu, pingPongRouterShare: share)
    }

    /// The router's data-path time spent on `tenant` so far (its status,
    /// `shaping.<tenant>.routerSeconds`: what the scheduler shares out).
    private func routerSeconds(of tenant: String) -> Double? {
        guard let bytes = try? OperatorClient.status(socketPath: router.runtimeDir + "/control.sock"),
              let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
              let shaping = json["shaping"] as? [String: Any] else { return nil }
        // A tenant with no session yet has no lane: nothing spent on it.
        guard let t = shaping[tenant] as? [String: Any] else { return 0 }
        return (t["routerSeconds"] as? NSNumber)?.doubleValue
    }

    private var noisyShape: FlowShape {
        var s = FlowShape(ops: [.write, .read], qpPairs: plans.noisyQPs, messageBytes: 8, window: plans.floodWindow,
                          signalEvery: plans.floodSignalEvery)
        s.idleSleepMicros = plans.floodSleepMicros
        return s
    }

    /// The victim beside neighbours: noisy tenants flooding (`noisyTenants`,
    /// each its own process), or, with `cpuBursts`, one process per entry
    /// that only runs on the CPU for that many ns per wake-up and sleeps
    /// like a flooder (no session with the router).
    private func victimBesideNoise(_ noisyTenants: [String], victim: String = IsolationSuite.victim, nice: Int32 = 0,
                                   cpuBursts: [UInt64] = []) throws -> VictimRun {
        var flows: [WorkerFlow] = []
        do {
            for t in noisyTenants { flows.append(try worker(t, noisyShape, nice: nice)) }
            for b in cpuBursts {
                var shape = noisyShape
                shape.cpuBurstNanos = Int(max(1, b))
                flows.append(try worker(Self.open, shape, nice: nice))
            }
            for f in flows { try f.waitReady(timeoutSeconds: 60) }
            Flows.go(flows)
            try Flows.sleep(plans.noisySettleSeconds, watching: flows)
            let cpu0 = flows.map { LimitsSuite.scheduledNanos(pid: $0.pid) }, t0 = monotonicNanos()
            var run = try victimRun(victim, noisy: flows)
            let cpu1 = flows.map { LimitsSuite.scheduledNanos(pid: $0.pid) }, t1 = monotonicNanos()
            try Flows.finish(flows)
            let used = zip(cpu0, cpu1).map { a, b in a.flatMap { a in b.map { $0 &- a } } }
            if !used.isEmpty, used.allSatisfy({ $0 != nil }) {
                let total = used.reduce(UInt64(0)) { $0 + $1! }
                run.neighbourCPU = Stats.ratio(Double(total) * 100, Double(t1 &- t0))
                run.neighbourBursts = zip(used, run.noisy).map { u, r in r.wakes > 0 ? u! / r.wakes : 0 }
            }
            return run
        } catch {
            try? Flows.finish(flows)
            throw error
        }
    }

    func isolation() -> Table {
        var table = Table(title: "Isolation: victim beside two noisy tenants",
                          columns: ["p50 µs", "p99 µs", "p99 x solo", "router %", "2T p50 µs", "2T p99 µs", "2T x solo", "GB/s", "GB/s x solo",
                                    "noisy Kops/s", "router CPU %", "neighbours CPU %"])
        // The router's poller on CPU 0, every tenant thread and process on
        // the others, as an operator would give the router a core: on 2
        // CPUs, where the kernel puts three busy threads otherwise decides
        // whether a round trip costs 3 µs or a sleep and wake-up (40 µs),
        // run by run.
        var pinned = false
        if Machine.onlineCPUs >= 2 {
            pinned = Affinity.pin(router.pid, to: [0]) && Affinity.pin(0, to: Array(Affinity.allCPUs.dropFirst()))
        }
        defer {
            Affinity.pin(router.pid, to: Affinity.allCPUs)
            Affinity.pin(0, to: Affinity.allCPUs)
        }
        let alone = measure("victim alone", on: router) { try victimRun() }
        var solo: VictimRun?
        switch alone {
        case .success(let v):
            solo = v
            table.add("victim alone", Self.victimCells(v, solo: nil))
            figures += victimFigures("sluice-victim-alone", v, solo: nil)
        case .failure(let e):
            table.addFailure("victim alone", Self.firstLine(e))
        }
        // Within its policy share: the same victim held by its own policy
        // to a rate its equal-weight share of the router covers.
        let share = BenchTenant.bandwidth(plans.victimShareBits)
        var shareSolo: VictimRun?
        switch measure("victim at \(share) alone", on: router, { try victimRun(Self.victimShare) }) {
        case .success(let v):
            shareSolo = v
            table.add("victim at \(share), alone", Self.victimCells(v, solo: nil))
            figures += victimFigures("sluice-victim-share-alone", v, solo: nil)
        case .failure(let e):
            table.addFailure("victim at \(share), alone", Self.firstLine(e))
        }
        let variants = [(Self.noisy, "no limits", "noisy-unlimited", Int32(0))]
            + plans.noisyLimits.map { (Self.noisyLimited($0), "\(BenchTenant.operations($0)) each", "noisy-\($0)ops", Int32(0)) }
            + [(Self.noisy, "no limits, nice 19", "noisy-unlimited-nice19", Int32(19))]
        let victims = [(Self.victim, "victim", "sluice-victim-", solo), (Self.victimShare, "victim at \(share)", "sluice-victim-share-", shareSolo)]
        for (victim, name, systemPrefix, solo) in victims {
            for (i, (tenants, what, system, nice)) in variants.enumerated() {
                let label = "\(name) + 2 noisy, \(what)"
                switch measure("\(name) beside 2 noisy tenants, \(what)", on: router,
                               { try victimBesideNoise(tenants, victim: victim, nice: nice) }) {
                case .success(let v):
                    table.add(label, Self.victimCells(v, solo: solo))
                    figures += victimFigures(systemPrefix + system, v, solo: solo)
                    // Right after the unlimited noise: neighbours with the
                    // same CPU bursts and no router work, to tell what the
                    // shared CPU does to the victim from what the router does.
                    if i == 0, v.neighbourBursts.count == tenants.count, v.neighbourBursts.allSatisfy({ $0 > 0 }) {
                        victimBesideCPUOnly(victim, name: name, systemPrefix: systemPrefix, solo: solo, bursts: v.neighbourBursts,
                                            into: &table)
                    }
                case .failure(let e):
                    table.addFailure(label, Self.firstLine(e))
                }
            }
        }
        table.addNote("victim at \(share): tenant \(Self.victimShare), rateLimits.tenant.bandwidth \(share) and weight \(plans.victimShareWeight) (the noisy tenants: weight 1): the victim within its policy share, \(plans.victimShareWeight * 100 / (plans.victimShareWeight + 2))% of the router beside both; its ping-pong alone keeps the router busy most of the time, so weight 1 (a third) is not its share; x solo compares with its own row alone")
        table.addNote("victim: 8 B SEND ping-pong round trip between two sessions, driven by one thread that busy-polls both CQs (p50, p99), then by two threads, ping and pong, that yield when idle (2T: on this machine they share one CPU, so the hand-off between them is in it), then a 64 KiB WRITE stream (16 in flight); tenant \(Self.victim): no rateLimits, weight 1")
        table.addNote("noisy: two tenants, each its own process flooding 8 B WRITEs and READs on \(plans.noisyQPs) QPs (half each), \(plans.floodWindow) in flight per QP, 1 in \(plans.floodSignalEvery) signaled; Kops/s: each one's rate while the victim ran")
        table.addNote("N/s each: both noisy tenants' policies set rateLimits.tenant.operations to N (burst: the default, 0.1 s)")
        table.addNote("router %: the router's data-path time spent on the victim (its status routerSeconds, what the scheduler shares out) during the one-thread ping-pong, % of that time: alone, what its ping-pong needs; beside noise, what it got")
        table.addNote("x solo: victim p99 under noise / p99 alone (2T x solo: the same for the two-thread round trip), and stream GB/s under noise / alone; router CPU %: of one core, while the victim ran")
        table.addNote(pinned ? "pinned: the router's poller on CPU 0, this process's threads and the noisy processes on CPU 1\(Machine.onlineCPUs > 2 ? "-\(Machine.onlineCPUs - 1)" : "") (an operator gives the router a core)" : "not pinned (sched_setaffinity refused, or 1 CPU): placement is the kernel's")
        table.addNote("\(Machine.onlineCPUs) CPUs: the router's poller, the victim's threads and both noisy processes share them; the noisy processes sleep \(plans.floodSleepMicros) µs whenever their queues are at least half full (the router stays saturated)")
        table.addNote("CPU-only: two processes with no session with the router that each run on the CPU, per wake-up, as long as each noisy process did per wake-up in the row above (its schedstat run time / its sleeps), and sleep \(plans.floodSleepMicros) µs: the victim's CPU shared as beside the noise, the router left to the victim. Noise p99 near the CPU-only p99 means the growth is the shared CPU's, not the router's")
        table.addNote("neighbours CPU %: the noisy (or CPU-only) processes' run time from /proc/<pid>/task/*/schedstat while the victim ran, summed, % of one core")
        table.addNote("nice 19: the noisy processes at the kernel's lowest CPU weight, as their containers' cgroups would hold them; then the victim's own threads are not kept off the CPU by the noisy ones, and what is left is the router's isolation. Sluice does not isolate tenants' CPU time: the kernel does")
        return table
    }

    private func victimBesideCPUOnly(_ victim: String, name: String, systemPrefix: String, solo: VictimRun?,
                                     bursts: [UInt64], into table: inout Table) {
        let us = bursts.map { String(format: "%.0f", Double($0) / 1e3) }.joined(separator: "+")
        let label = "\(name) + 2 CPU-only, \(us) µs bursts"
        switch measure("\(name) beside 2 CPU-only neighbours (\(us) µs per wake-up)", on: router,
                       { try victimBesideNoise([], victim: victim, cpuBursts: bursts) }) {
        case .success(let v):
            table.add(label, Self.victimCells(v, solo: solo))
            figures += victimFigures(systemPrefix + "cpu-only-neighbours", v, solo: solo)
        case .failure(let e):
            table.addFailure(label, Self.firstLine(e))
        }
    }

    /// A row of the isolation table; `solo` nil for a victim alone.
    private static func victimCells(_ v: VictimRun, solo: VictimRun?) -> [String] {
        func cpu(_ x: Double?) -> String { x.map { String(format: "%.0f", $0) } ?? "-" }
        func ratio(_ a: Double, _ b: Double?) -> String { solo == nil ? "1.00" : Format.ratio(b.flatMap { Stats.ratio(a, $0) }) }
        let noisy = v.noisy.isEmpty || v.noisy.allSatisfy({ $0.bytes == 0 }) ? "-"
            : v.noisy.map { String(format: "%.0f", $0.operationsPerSecond / 1e3) }.joined(separator: "+")
        return [Format.micros(v.latency.p50), Format.micros(v.latency.p99), ratio(v.latency.p99, solo?.latency.p99), cpu(v.pingPongRouterShare),
                Format.micros(v.latencyTwoThreads.p50), Format.micros(v.latencyTwoThreads.p99),
                ratio(v.latencyTwoThreads.p99, solo?.latencyTwoThreads.p99),
                Format.gbps(v.stream.gigabytesPerSecond), ratio(v.stream.gigabytesPerSecond, solo?.stream.gigabytesPerSecond),
                noisy, cpu(v.routerCPU), cpu(v.neighbourCPU)]
    }

    private func victimFigures(_ system: String, _ v: VictimRun, solo: VictimRun?) -> [Figure] {
        let (l, s, noisy, routerCPU) = (v.latency, v.stream, v.noisy.filter { $0.bytes > 0 }, v.routerCPU)
        var f = [
            Figure(metric: "victim_rtt_2threads_p99", system: system, size: 8, value: v.latencyTwoThreads.p99, unit: "us"),
            Figure(metric: "victim_router_cpu", system: system, size: 8, value: routerCPU ?? .nan, unit: "% of a core"),
            Figure(metric: "victim_rtt_p50", system: system, size: 8, value: l.p50, unit: "us"),
            Figure(metric: "victim_rtt_p99", system: system, size: 8, value: l.p99, unit: "us"),
            Figure(metric: "victim_stream", system: system, size: 64 << 10, value: s.gigabytesPerSecond, unit: "GB/s"),
        ]
        if let solo {
            f.append(Figure(metric: "victim_p99_growth", system: system, size: 8, value: Stats.ratio(l.p99, solo.latency.p99) ?? .nan, unit: "ratio"))
            f.append(Figure(metric: "victim_stream_vs_solo", system: system, size: 64 << 10,
                            value: Stats.ratio(s.gigabytesPerSecond, solo.stream.gigabytesPerSecond) ?? .nan, unit: "ratio"))
        }
        for (i, n) in noisy.enumerated() {
            f.append(Figure(metric: "noisy_rate", system: "\(system)-noisy\(i + 1)", size: 8, value: n.operationsPerSecond, unit: "ops/s"))
        }
        return f
    }

    // MARK: fairness (issue 6)

    /// Flows' rates and CPU use over one window: each worker's CPU time
    /// and the router's, as a percentage of one core.
    private struct Window {
        let rates: [FlowRate]
        let cpuPercent: [Double?]
        let routerCPUPercent: Double?
    }

    private func window(_ flows: [WorkerFlow], settle: Double, seconds: Double) throws -> Window {
        do {
            Flows.go(flows)
            try Flows.sleep(settle, watching: flows)
            let cpu0 = flows.map { $0.cpuNanos() }, r0 = ProcessCPU.nanos(pid: router.pid)
            let a = try Flows.sample(flows)
            try Flows.sleep(seconds, watching: flows)
            let b = try Flows.sample(flows)
            let cpu1 = flows.map { $0.cpuNanos() }, r1 = ProcessCPU.nanos(pid: router.pid)
            try Flows.finish(flows)
            let rates = zip(a, b).map { FlowRate(from: $0, to: $1) }
            func percent(_ x: UInt64?, _ y: UInt64?, _ nanos: UInt64) -> Double? {
                guard let x, let y else { return nil }
                return Stats.ratio(Double(y &- x) * 100, Double(nanos))
            }
            let nanos = rates.first?.nanos ?? 1
            return Window(rates: rates, cpuPercent: zip(cpu0, cpu1).map { percent($0, $1, nanos) },
                          routerCPUPercent: percent(r0, r1, nanos))
        } catch {
            try? Flows.finish(flows)
            throw error
        }
    }

    func fairness() -> Table {
        let plan = plans.fairness
        var table = Table(title: "Fairness: three equal tenants saturating the router", columns: ["ops/s", "share %", "CPU %", "ops"])
        var shape = FlowShape(ops: [.write], qpPairs: plans.fairQPs, messageBytes: 8, window: plans.floodWindow,
                              signalEvery: plans.floodSignalEvery)
        shape.idleSleepMicros = plans.floodSleepMicros
        let run = measure("fairness, 3 tenants", on: router) { () -> Window in
            var flows: [WorkerFlow] = []
            do {
                for t in Self.fair { flows.append(try worker(t, shape)) }
                for f in flows { try f.waitReady(timeoutSeconds: 60) }
            } catch {
                try? Flows.finish(flows)
                throw error
            }
            return try window(flows, settle: plan.settleSeconds, seconds: plan.windowSeconds)
        }
        func cpu(_ v: Double?) -> String { v.map { String(format: "%.0f", $0) } ?? "-" }
        switch run {
        case .success(let w):
            let shares = w.rates.map(\.operationsPerSecond)
            let total = shares.reduce(0, +)
            for (i, (t, r)) in zip(Self.fair, w.rates).enumerated() {
                let share = Stats.ratio(r.operationsPerSecond, total).map { $0 * 100 }
                table.add(t, [Format.count(r.operationsPerSecond), share.map { String(format: "%.1f", $0) } ?? "-",
                              cpu(w.cpuPercent[i]), Format.count(Double(r.operations))])
                figures.append(Figure(metric: "fair_rate", system: "sluice-\(t)", size: 8, value: r.operationsPerSecond, unit: "ops/s"))
                figures.append(Figure(metric: "fair_cpu", system: "sluice-\(t)", size: 8, value: w.cpuPercent[i] ?? .nan, unit: "% of a core"))
            }
            table.add("all three", [Format.count(total), "100.0", "-", Format.count(Double(w.rates.reduce(0) { $0 + $1.operations }))])
            table.add("router", ["-", "-", cpu(w.routerCPUPercent), "-"])
            let jain = Stats.jainIndex(shares)
            table.add("Jain's index (Σx)²/(n·Σx²)", [jain.map { String(format: "%.4f", $0) } ?? "-", "-", "-", "-"])
            figures.append(Figure(metric: "fair_jain", system: "sluice-3-tenants", size: 8, value: jain ?? .nan, unit: "index"))
            figures.append(Figure(metric: "fair_router_cpu", system: "sluice-3-tenants", size: 8, value: w.routerCPUPercent ?? .nan, unit: "% of a core"))
        case .failure(let e):
            table.addFailure("three tenants", Self.firstLine(e))
        }
        table.addNote("each tenant its own process: 8 B WRITEs on \(plans.fairQPs) QPs, \(plans.floodWindow) in flight per QP, 1 in \(plans.floodSignalEvery) signaled, no rateLimits (weight 1); counted over \(plan.windowSeconds) s after \(plan.settleSeconds) s")
        table.addNote("CPU %: of one core, user + system, over the same window (/proc/<pid>/stat)")
        table.addNote("\(Machine.onlineCPUs) CPUs: the router's poller and three flooding processes share them; a flooder whose queues are at least half full sleeps \(plans.floodSleepMicros) µs, its queues holding the router's work meanwhile")
        return table
    }

    // MARK: overhead of limits (issue 6)

    func overhead() -> Table {
        let plan = plans.overhead
        var table = Table(title: "Overhead of rate limits: 8 B RDMA WRITE, one QP pair",
                          columns: ["ns/op", "ops/s", "vs no limits", "spread %"])
        let shape = FlowShape(ops: [.write], messageBytes: 8, window: 64, signalEvery: 16)
        var rows: [(router: RouterProcess, tenant: String, label: String, system: String)] = [
            (router, Self.open, "no rateLimits (tenant \(Self.open))", "sluice-no-ratelimits"),
            (router, Self.high, "limits far above reach (\(tenants[Self.high]!.rateDescription))", "sluice-ratelimits-unreached"),
        ]
        if let off = routerOff {
            rows.append((off, Self.open, "policy+shaping off (\(Self.noEnforcementFlag))", "sluice-no-enforcement"))
        }
        let labels = rows.map(\.label), systems = rows.map(\.system)
        let results: [Result<[FlowRate], Error>]
        switch interleaved(rows.map { ($0.router, $0.tenant, shape) }, plan, rounds: plans.overheadRounds, label: "overhead of rate limits") {
        case .success(let r): results = r.map { .success($0.rates) }
        case .failure(let e): results = rows.map { _ in .failure(e) }
        }
        let base = (try? results[0].get()).map { Self.medianAndSpread($0).median }
        for (i, r) in results.enumerated() {
            switch r {
            case .success(let rates):
                let (m, spread) = Self.medianAndSpread(rates)
                let vs = base.flatMap { Stats.ratio(m, $0) }
                table.add(labels[i], [Format.nanos(1e9 / max(m, 1)), Format.count(m), Format.ratio(vs),
                                      spread.map { String(format: "%.1f", $0) } ?? "-"])
                figures += [
                    Figure(metric: "overhead_rate", system: systems[i], size: 8, value: m, unit: "ops/s"),
                    Figure(metric: "overhead_vs_no_limits", system: systems[i], size: 8, value: vs ?? .nan, unit: "ratio"),
                    Figure(metric: "overhead_spread", system: systems[i], size: 8, value: spread ?? .nan, unit: "%"),
                ]
            case .failure(let e):
                table.addFailure(labels[i], Self.firstLine(e))
            }
        }
        table.addNote("64 in flight, 1 in 16 signaled; a warm-up round, then \(plans.overheadRounds) rounds, rows in turn within each (\(plan.windowSeconds) s counted after \(plan.settleSeconds) s); ops/s: the median round; spread: (max - min) / median")
        if routerOff == nil {
            table.addNote("TODO: no enforcement-off row: this sluice-router has no \(Self.noEnforcementFlag) flag")
        } else {
            table.addNote("policy+shaping off: tenant \(Self.open) on a second router started with \(Self.noEnforcementFlag) (no policy check, no shaping; keys, bounds and access still checked), in the same rounds")
        }
        return table
    }

    // MARK: enforcement overhead on bandwidth (issue 8)

    /// 64 KiB WRITE bandwidth of tenant open with enforcement on and off
    /// (the second router), in interleaved rounds as for the message rate.
    func enforcementBandwidth() -> Table {
        let plan = plans.overhead
        var table = Table(title: "Enforcement overhead: 64 KiB RDMA WRITE, one QP pair", columns: ["GB/s", "msgs/s", "vs on", "spread %"])
        guard let off = routerOff else {
            table.addFailure("enforcement off", "this sluice-router has no \(Self.noEnforcementFlag) flag")
            return table
        }
        let shape = FlowShape(ops: [.write], messageBytes: 64 << 10, window: 16, signalEvery: 4)
        let rows: [(RouterProcess, String, String)] = [
            (router, "enforcement on (tenant \(Self.open))", "sluice-64k-write-enforced"),
            (off, "policy+shaping off (\(Self.noEnforcementFlag))", "sluice-64k-write-no-enforcement"),
        ]
        switch interleaved(rows.map { ($0.0, Self.open, shape) }, plan, rounds: plans.overheadRounds, label: "64 KiB WRITE, enforcement on and off") {
        case .success(let results):
            let medians = results.map { Stats.median($0.rates.map(\.gigabytesPerSecond)) ?? 0 }
            for (i, (row, result)) in zip(rows, results).enumerated() {
                let g = result.rates.map(\.gigabytesPerSecond)
                let m = medians[i]
                let vs = Stats.ratio(m, medians[0])
                let spread = g.count > 1 ? Stats.ratio((g.max()! - g.min()!) * 100, m) : nil
                let msgs = Stats.median(result.rates.map(\.operationsPerSecond)) ?? 0
                table.add(row.1, [Format.gbps(m), Format.count(msgs), Format.ratio(vs), spread.map { String(format: "%.1f", $0) } ?? "-"])
                figures += [
                    Figure(metric: "overhead_bandwidth", system: row.2, size: 64 << 10, value: m, unit: "GB/s"),
                    Figure(metric: "overhead_bandwidth_vs_on", system: row.2, size: 64 << 10, value: vs ?? .nan, unit: "ratio"),
                ]
            }
        case .failure(let e):
            for row in rows { table.addFailure(row.1, Self.firstLine(e)) }
        }
        table.addNote("16 in flight, 1 in 4 signaled; \(plans.overheadRounds) interleaved rounds after a warm-up round (\(plan.windowSeconds) s after \(plan.settleSeconds) s); GB/s: the median round")
        table.addNote("off: the same tenant on the second router, started with \(Self.noEnforcementFlag) (no policy check, no shaping; keys, bounds and access still checked)")
        return table
    }
}
