#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats

/// Issue 8's six targets, each read off the figures of this run.
enum Targets {
    /// The newest figure with this metric and system (and size, if given).
    static func value(_ figures: [Figure], _ metric: String, _ system: String, size: Int? = nil) -> Double? {
        figures.last(where: { $0.metric == metric && $0.system == system && (size == nil || $0.size == size!) && $0.value.isFinite })?.value
    }

    static func ratio(_ a: Double?, _ b: Double?) -> Double? {
        guard let a, let b else { return nil }
        return Stats.ratio(a, b)
    }

    struct Row {
        let label: String
        let check: TargetCheck
        let target: String
        let source: String
        let format: (Double) -> String
    }

    static func rows(_ f: [Figure]) -> [Row] {
        let two: (Double) -> String = { String(format: "%.2f", $0) }
        let bw = ratio(value(f, "bandwidth", "sluice-rdma-write-rc", size: 65_536), value(f, "bandwidth", "memcpy", size: 65_536))
            ?? ratio(value(f, "sweep_bandwidth", "sluice-write-1qp", size: 65_536), value(f, "sweep_bandwidth", "memcpy", size: 65_536))
        let lat = ratio(value(f, "pingpong_rtt_p50", "sluice-send-rc"), value(f, "pingpong_rtt_p50", "tcp-loopback"))
        let latYield = ratio(value(f, "pingpong_rtt_p50", "sluice-send-rc-yield"), value(f, "pingpong_rtt_p50", "tcp-loopback"))
        let rate = (value(f, "message_rate", "sluice-write-8b-signal16") ?? value(f, "message_rate", "sluice-rdma-write-rc-unsignaled")).map { $0 / 1e6 }
        let bwOn = ratio(value(f, "overhead_bandwidth", "sluice-64k-write-enforced"), value(f, "overhead_bandwidth", "sluice-64k-write-no-enforcement"))
        let rateOn = ratio(value(f, "overhead_rate", "sluice-no-ratelimits"), value(f, "overhead_rate", "sluice-no-enforcement"))
        let scale = value(f, "scale_cost_vs_base", "sluice-scale-10000mr-1000qp")
        let idle = value(f, "router_cpu_sched", "sluice-router-idle-pair") ?? value(f, "router_cpu_stat", "sluice-router-idle-pair")
        let wake = value(f, "wake_p99", "sluice-router-asleep")
        return [
            Row(label: "1. 64 KiB WRITE bandwidth / memcpy", check: TargetCheck(bw, .atLeast(0.8)), target: ">= 0.80",
                source: "64 KiB bandwidth table (else the sweep)", format: two),
            Row(label: "2. 8 B ping-pong p50 / TCP p50, busy-poll", check: TargetCheck(lat, .atMost(0.1)), target: "<= 0.10",
                source: "ping-pong table, busy-polling row", format: two),
            Row(label: "2. the same, pollers yield when idle", check: TargetCheck(latYield, .atMost(0.1)), target: "<= 0.10",
                source: "ping-pong table, yielding row", format: two),
            Row(label: "3. 8 B WRITE rate, one QP pair (M ops/s)", check: TargetCheck(rate, .atLeast(2)), target: ">= 2.00",
                source: "message-rate table, 1 in 16 signaled", format: two),
            Row(label: "4. bandwidth, enforcement on / off", check: TargetCheck(bwOn, .atLeast(0.95)), target: ">= 0.95",
                source: "enforcement overhead, 64 KiB WRITE", format: two),
            Row(label: "4. message rate, enforcement on / off", check: TargetCheck(rateOn, .atLeast(0.95)), target: ">= 0.95",
                source: "overhead of rate limits, open vs off", format: two),
            Row(label: "5. per-WR cost, 10k MRs+1k QPs / 10 MRs", check: TargetCheck(scale, .atMost(1.1)), target: "<= 1.10",
                source: "scale table", format: two),
            Row(label: "6. idle router CPU (% of a core)", check: TargetCheck(idle, .atMost(1)), target: "< 1",
                source: "router CPU, idle with a QP pair", format: { String(format: "%.3f", $0) }),
            Row(label: "6. wake-up after idle, p99 (µs)", check: TargetCheck(wake, .atMost(50)), target: "<= 50",
                source: "wake-up table, router asleep", format: { String(format: "%.1f", $0) }),
        ]
    }

    static func table(_ figures: [Figure]) -> (Table, [Figure]) {
        var table = Table(title: "Targets (issue 8), from this run", columns: ["measured", "target", "result"])
        var out: [Figure] = []
        for (i, r) in rows(figures).enumerated() {
            let result: String
            switch r.check.met {
            case .some(true): result = "met"
            case .some(false): result = r.check.shortfall.map { String(format: $0 < 10 ? "missed x%.2f" : "missed x%.0f", $0) } ?? "missed"
            case .none: result = "no figure"
            }
            table.add(r.label, [r.check.value.map(r.format) ?? "-", r.target, result])
            let system = "target-\(i + 1)"
            out.append(Figure(metric: "target_value", system: system, size: 0, value: r.check.value ?? .nan, unit: r.label))
            out.append(Figure(metric: "target_met", system: system, size: 0, value: r.check.met.map { $0 ? 1 : 0 } ?? .nan, unit: "1 met, 0 missed"))
        }
        table.addNote("each figure is a ratio of two rows of this run (or, for 3 and 6, a figure against the issue's absolute bound); \"missed xN\": N times away from the target")
        table.addNote("sources: " + rows(figures).map { "\($0.label.prefix(2)) \($0.source)" }.joined(separator: "; "))
        table.addNote("2. is shown for both Sluice ping-pong rows: with fewer than 3 CPUs, busy-polling ping, pong and router contend for cores")
        table.addNote("no figure: the table it comes from was not selected (--only), failed, or completed nothing to divide by; on \(Machine.onlineCPUs) CPUs shared with other work, figures are noisy")
        return (table, out)
    }
}
