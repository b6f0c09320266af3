/// The statistics `sluice-bench` prints, kept pure (no clock, no I/O) so
/// that a unit test can check them on known inputs.
///
/// Percentiles use the nearest-rank rule: the p-th percentile of n sorted
/// samples is the sample of 1-based rank ⌈p·n⌉, clamped to 1...n. It is
/// always one of the samples (never an interpolation), p50 of an even count
/// is the lower middle sample, and p99 of fewer than 100 samples is the
/// largest.
public enum Stats {
    /// The nearest-rank percentile of already sorted samples; `p` in 0...1.
    /// nil for no samples.
    public static func nearestRank<T>(sorted: [T], _ p: Double) -> T? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((p * Double(sorted.count)).rounded(.up))
        return sorted[max(1, min(sorted.count, rank)) - 1]
    }

    /// The arithmetic mean; nil for no values.
    public static func mean(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        return values.reduce(0, +) / Double(values.count)
    }

    /// The median by the same nearest-rank rule as the percentiles.
    public static func median(_ values: [Double]) -> Double? {
        nearestRank(sorted: values.sorted(), 0.5)
    }

    /// `numerator / denominator`, or nil when the denominator is zero (or
    /// either is not finite): a ratio that cannot be formed is shown as
    /// such, never as infinity.
    public static func ratio(_ numerator: Double, _ denominator: Double) -> Double? {
        guard denominator != 0, numerator.isFinite, denominator.isFinite else { return nil }
        return numerator / denominator
    }

    /// How far a measured figure is from the configured one, in percent of
    /// the configured one: +2 means 2% above. nil if nothing was configured.
    public static func percentError(measured: Double, configured: Double) -> Double? {
        ratio(measured - configured, configured).map { $0 * 100 }
    }

    /// Jain's fairness index, (Σx)² / (n·Σx²): 1 when every share is equal,
    /// 1/n when one party gets everything. nil for no shares or all zero.
    public static func jainIndex(_ shares: [Double]) -> Double? {
        guard !shares.isEmpty else { return nil }
        let sum = shares.reduce(0, +)
        let squares = shares.reduce(0) { $0 + $1 * $1 }
        return ratio(sum * sum, Double(shares.count) * squares)
    }

    /// Events per second from a count over an interval in nanoseconds (an
    /// interval of 0 counts as 1 ns, so the figure stays finite).
    public static func perSecond(_ count: Double, nanos: UInt64) -> Double {
        count * 1e9 / Double(max(nanos, 1))
    }
}

/// Percentiles (nearest rank, see `Stats`) and mean of round-trip samples,
/// in µs, from samples in ns.
public struct LatencySummary: Sendable {
    public let samples: Int
    public let p50: Double
    public let p99: Double
    public let mean: Double

    public init(nanos: [UInt64]) {
        precondition(!nanos.isEmpty, "a latency run produced no samples")
        let sorted = nanos.sorted()
        samples = sorted.count
        p50 = Double(Stats.nearestRank(sorted: sorted, 0.50)!) / 1000
        p99 = Double(Stats.nearestRank(sorted: sorted, 0.99)!) / 1000
        // Summed in UInt64 ns: exact, where a Double sum of many samples is not.
        mean = Double(sorted.reduce(0, &+)) / Double(sorted.count) / 1000
    }
}
