#if canImport(Glibc)
import Glibc
#endif

/// The figures sluice-bench derives from the kernel's accounting files
/// (/proc/<pid>/stat, /proc/<pid>/status, /proc/<pid>/smaps_rollup) and
/// from them: CPU share and memory per object. Pure: the caller reads the
/// files and the clock, these only parse and compute.
public enum ProcFields {
    /// utime + stime, in clock ticks, from the text of /proc/<pid>/stat.
    /// The command name (field 2) sits in parentheses and may hold spaces
    /// and parentheses itself, so fields are counted from the last ')':
    /// utime and stime are fields 14 and 15 of the line.
    public static func cpuTicks(stat text: String) -> UInt64? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // fields[0] is field 3 (state), so field n is fields[n - 3].
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        return user + system
    }

    /// The first field of /proc/<pid>/task/<tid>/schedstat: the time the
    /// thread has run on a CPU, in ns (exact, where stat counts ticks).
    public static func schedstatNanos(_ text: String) -> UInt64? {
        guard let first = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first else { return nil }
        return UInt64(first)
    }

    /// The figure of a `Name:   1234 kB` line (as in /proc/<pid>/status
    /// and smaps_rollup), in KiB; nil if there is no such line.
    public static func kilobytes(_ name: String, in text: String) -> UInt64? {
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":"), line[..<colon] == Substring(name) else { continue }
            let rest = line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = rest.first, let v = UInt64(first) else { return nil }
            return v
        }
        return nil
    }
}

extension Stats {
    /// CPU time used over a wall-clock interval, in percent of one core
    /// (200 = two cores busy). nil for an empty interval.
    public static func cpuPercent(cpuNanos: UInt64, wallNanos: UInt64) -> Double? {
        guard wallNanos > 0 else { return nil }
        return Double(cpuNanos) * 100 / Double(wallNanos)
    }

    /// Clock ticks (of `ticksPerSecond`, sysconf(_SC_CLK_TCK)) in ns.
    public static func ticksToNanos(_ ticks: UInt64, ticksPerSecond: UInt64) -> UInt64 {
        ticks * 1_000_000_000 / max(ticksPerSecond, 1)
    }

    /// Memory each of `count` objects added, from a process's size before
    /// and after creating them (KiB, as /proc gives it), in bytes. May be
    /// negative when the process freed more than the objects took; nil
    /// for no objects.
    public static func bytesPerObject(beforeKiB: UInt64, afterKiB: UInt64, count: Int) -> Double? {
        bytesPerObject(growthKiB: Double(afterKiB) - Double(beforeKiB), count: count)
    }

    /// The same from a growth already computed (negative if it shrank).
    public static func bytesPerObject(growthKiB: Double, count: Int) -> Double? {
        guard count > 0, growthKiB.isFinite else { return nil }
        return growthKiB * 1024 / Double(count)
    }
}

/// CSV as RFC 4180 writes it: a field holding a comma, a double quote, a
/// carriage return or a line feed is quoted, with its quotes doubled.
public enum CSVText {
    public static func field(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        var out = "\""
        for c in s {
            if c == "\"" { out.append("\"") }
            out.append(c)
        }
        return out + "\""
    }

    /// One record, CRLF-free: fields joined by commas, ending in "\n".
    public static func row(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",") + "\n"
    }
}

/// One of issue 8's targets: a figure from this run against a bound.
public struct TargetCheck: Sendable, Equatable {
    public enum Bound: Sendable, Equatable {
        /// met when the figure is at least this
        case atLeast(Double)
        /// met when the figure is at most this
        case atMost(Double)
    }

    public let bound: Bound
    /// The measured figure; nil when it was not measured in this run.
    public let value: Double?

    public init(_ value: Double?, _ bound: Bound) {
        self.value = value
        self.bound = bound
    }

    /// true met, false missed, nil not measured (or not a number).
    public var met: Bool? {
        guard let v = value, v.isFinite else { return nil }
        switch bound {
        case .atLeast(let b): return v >= b
        case .atMost(let b): return v <= b
        }
    }

    /// How far the figure is from the bound, as a factor: 1.25 means it
    /// must improve by 25% (1.25 times as much for atLeast, a 1.25th for
    /// atMost) to meet it; <= 1 when met. nil when not measured or the
    /// factor cannot be formed (a zero figure or bound).
    public var shortfall: Double? {
        guard let v = value, v.isFinite else { return nil }
        switch bound {
        case .atLeast(let b): return Stats.ratio(b, v)
        case .atMost(let b): return Stats.ratio(v, b)
        }
    }
}

/// A base-10 logarithmic axis: where a value falls between `low` and
/// `high` (both > 0), as a fraction 0...1 (outside when out of range).
public struct LogAxis: Sendable {
    public let low: Double
    public let high: Double

    /// The decades that cover `values` (positive ones only); 1...10 when
    /// there are none.
    public init(covering values: [Double]) {
        let positive = values.filter { $0 > 0 && $0.isFinite }
        guard let lo = positive.min(), let hi = positive.max() else {
            low = 1
            high = 10
            return
        }
        var l = Self.pow10(Self.floorLog10(lo))
        var h = Self.pow10(Self.floorLog10(hi))
        if h < hi { h *= 10 }
        if l == h { l /= 10 }
        low = l
        high = h
    }

    public init(low: Double, high: Double) {
        precondition(low > 0 && high > low)
        self.low = low
        self.high = high
    }

    public func fraction(_ v: Double) -> Double {
        (Self.log10(v) - Self.log10(low)) / (Self.log10(high) - Self.log10(low))
    }

    /// Powers of ten from low to high, inclusive.
    public var decades: [Double] {
        var out: [Double] = []
        var v = low
        while v <= high * 1.000001 {
            out.append(v)
            v *= 10
        }
        return out
    }

    static func floorLog10(_ v: Double) -> Int {
        var e = 0
        var x = v
        while x >= 10 { x /= 10; e += 1 }
        while x < 1 { x *= 10; e -= 1 }
        return e
    }

    static func pow10(_ e: Int) -> Double {
        var r = 1.0
        if e >= 0 { for _ in 0..<e { r *= 10 } } else { for _ in 0..<(-e) { r /= 10 } }
        return r
    }

    static func log10(_ v: Double) -> Double {
        #if canImport(Glibc)
        return Glibc.log10(v)
        #endif
    }
}
