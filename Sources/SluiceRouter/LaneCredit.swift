#if canImport(Glibc)
import Glibc
#endif
import CSluiceSys

/// The router's own time, read from `sluice_cycles()` (the TSC on x86-64),
/// with the counter's rate measured once against CLOCK_MONOTONIC. The
/// data-path scheduler charges tenants in these units: what a request costs
/// is the time the router spent on it, not a model of it.
struct CycleClock: Sendable {
    /// Counter ticks per microsecond, at least 1.
    let perMicrosecond: UInt64

    /// Spins for about `nanos` reading both clocks. Done once per process.
    static func calibrate(nanos: UInt64 = 2_000_000) -> CycleClock {
        let n0 = Sys.monotonicNanos()
        let c0 = sluice_cycles()
        var n1 = n0
        var c1 = c0
        while n1 &- n0 < nanos {
            n1 = Sys.monotonicNanos()
            c1 = sluice_cycles()
        }
        let ticks = c1 >= c0 ? c1 - c0 : 0
        let micros = max(1, (n1 &- n0) / 1_000)
        return CycleClock(perMicrosecond: max(1, ticks / micros))
    }

    static let shared = CycleClock.calibrate()

    /// The counter now.
    @inline(__always) static func now() -> UInt64 { sluice_cycles() }

    /// `nanos` nanoseconds in counter ticks, saturating.
    func ticks(nanos: UInt64) -> Int64 {
        let wide = nanos.multipliedFullWidth(by: perMicrosecond)
        guard wide.high == 0 else { return .max }
        return Int64(clamping: wide.low / 1_000)
    }

    /// Counter ticks in nanoseconds, saturating.
    func nanos(ticks: UInt64) -> UInt64 {
        let wide = ticks.multipliedFullWidth(by: 1_000)
        guard wide.high < perMicrosecond else { return .max }
        return perMicrosecond.dividingFullWidth(wide).quotient
    }
}

/// A tenant's deficit-round-robin credit, in counter ticks of the router's
/// time. Each pass refills it by the tenant's quantum; unused credit is
/// banked up to a bank of a few microseconds (or one quantum, if that is
/// more), so a light tenant (a ping-pong that needs two requests in a row,
/// then nothing) is served at once rather than waiting a pass for its
/// second request, while an idle tenant can save up no more than that
/// burst, whatever its weight. Each charge takes
/// off the time since the previous charge, so what the router does for a
/// lane — executing its requests, checking them, completing them — is paid
/// for by that lane. A request that overruns the credit leaves a
/// debt, which later passes repay before the lane is served again.
struct LaneCredit {
    private(set) var deficit: Int64 = 0
    /// The counter at the last charge.
    private(set) var mark: UInt64 = 0
    /// Everything charged (status: the router's time spent on the tenant).
    private(set) var charged: UInt64 = 0

    var exhausted: Bool { deficit <= 0 }

    /// Adds `quantum`; the credit then holds at most `bank` or one
    /// quantum, whichever is more (debt is kept).
    mutating func refill(quantum: Int64, bank: Int64 = 0) {
        let most = max(quantum, bank)
        deficit = quantum > Int64.max - max(deficit, 0) ? most : min(deficit + quantum, most)
    }

    /// Starts timing at `now` without charging.
    mutating func start(_ now: UInt64) { mark = now }

    /// Charges the time from the mark to `now`, at most `cap` ticks, and
    /// moves the mark. The cap bounds what one preemption of the router
    /// (the kernel running something else mid-request) can cost a tenant; a
    /// counter that went backwards (a migration between unsynchronized
    /// CPUs) charges nothing.
    @discardableResult
    mutating func charge(_ now: UInt64, cap: Int64) -> Int64 {
        let elapsed = now >= mark ? now - mark : 0
        let c = Int64(clamping: min(elapsed, UInt64(max(cap, 0))))
        deficit = deficit < Int64.min + c ? Int64.min : deficit - c
        charged &+= UInt64(c)
        mark = now
        return c
    }
}
