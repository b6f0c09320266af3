#if canImport(Glibc)
import Glibc
#endif

/// A point in time with nanosecond precision, UTC. Records carry it as
/// RFC 3339 with exactly nine fraction digits: `2025-03-01T12:00:00.000000042Z`.
public struct AuditTimestamp: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since 1970-01-01T00:00:00Z (covers 1677 to 2262).
    public var nanosecondsSinceEpoch: Int64

    public init(nanosecondsSinceEpoch: Int64) { self.nanosecondsSinceEpoch = nanosecondsSinceEpoch }

    public static func < (a: Self, b: Self) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }

    public var description: String { rfc3339 }

    public var rfc3339: String {
        let (secs, nanos) = nanosecondsSinceEpoch.quotientAndRemainder(dividingBy: 1_000_000_000)
        let (s, n) = nanos < 0 ? (secs - 1, nanos + 1_000_000_000) : (secs, nanos)
        let (days, sod) = s.quotientAndRemainder(dividingBy: 86_400)
        let (d, t) = sod < 0 ? (days - 1, sod + 86_400) : (days, sod)
        let (y, m, dd) = Self.civil(fromDays: d)
        func pad(_ v: Int64, _ w: Int) -> String {
            let s = String(v)
            return s.count >= w ? s : String(repeating: "0", count: w - s.count) + s
        }
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(dd, 2))T\(pad(t / 3600, 2)):\(pad(t / 60 % 60, 2)):\(pad(t % 60, 2)).\(pad(n, 9))Z"
    }

    /// Parses RFC 3339: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; `t` and
    /// `z` in either case; up to nine fraction digits.
    public init?(rfc3339 text: String) {
        let b = Array(text.utf8)
        var i = 0
        func digits(_ n: Int) -> Int64? {
            guard i + n <= b.count else { return nil }
            var v: Int64 = 0
            for k in 0..<n {
                let c = b[i + k]
                guard c >= 0x30, c <= 0x39 else { return nil }
                v = v * 10 + Int64(c - 0x30)
            }
            i += n
            return v
        }
        func lit(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = digits(4), lit(0x2d), let mo = digits(2), lit(0x2d), let d = digits(2) else { return nil }
        guard i < b.count, b[i] == 0x54 || b[i] == 0x74 else { return nil }
        i += 1
        guard let h = digits(2), lit(0x3a), let mi = digits(2), lit(0x3a), let s = digits(2) else { return nil }
        var nanos: Int64 = 0
        if lit(0x2e) {
            var n = 0
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 {
                guard n < 9 else { return nil }
                nanos = nanos * 10 + Int64(b[i] - 0x30)
                n += 1
                i += 1
            }
            guard n > 0 else { return nil }
            for _ in n..<9 { nanos *= 10 }
        }
        var offset: Int64 = 0
        if i < b.count, b[i] == 0x5a || b[i] == 0x7a {
            i += 1
        } else if i < b.count, b[i] == 0x2b || b[i] == 0x2d {
            let sign: Int64 = b[i] == 0x2d ? -1 : 1
            i += 1
            guard let oh = digits(2), lit(0x3a), let om = digits(2), oh < 24, om < 60 else { return nil }
            offset = sign * (oh * 3600 + om * 60)
        } else {
            return nil
        }
        guard i == b.count, (1...12).contains(mo), d >= 1, d <= Self.daysIn(month: mo, year: y),
              h < 24, mi < 60, s < 61 else { return nil }
        let secs = Self.days(fromCivil: y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset
        // Four-digit years reach past what Int64 nanoseconds hold (1677–2262).
        let (scaled, o1) = secs.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, o2) = scaled.addingReportingOverflow(nanos)
        guard !o1, !o2 else { return nil }
        nanosecondsSinceEpoch = total
    }

    /// Saturating: operator input must not be able to trap.
    public static func + (t: Self, nanos: Int64) -> Self {
        let (v, o) = t.nanosecondsSinceEpoch.addingReportingOverflow(nanos)
        return Self(nanosecondsSinceEpoch: o ? (nanos > 0 ? .max : .min) : v)
    }

    public static func - (t: Self, nanos: Int64) -> Self {
        let (v, o) = t.nanosecondsSinceEpoch.subtractingReportingOverflow(nanos)
        return Self(nanosecondsSinceEpoch: o ? (nanos > 0 ? .min : .max) : v)
    }

    /// A time as an operator types it, ausearch style: an RFC 3339 time
    /// (`2025-03-01T12:00:00Z`), a date (`2025-03-01`, midnight UTC), a
    /// duration before `now` (`90s`, `30m`, `1h`, `2d`, `1w`), or one of
    /// `now`, `recent` (10 minutes ago), `today`, `yesterday` (midnight UTC).
    public static func parse(operatorInput text: String, now: AuditTimestamp) -> AuditTimestamp? {
        let t = text.trimmingSpaces
        let day: Int64 = 86_400_000_000_000
        let midnight = AuditTimestamp(nanosecondsSinceEpoch: floorDiv(now.nanosecondsSinceEpoch, day) * day)
        switch t.lowercased() {
        case "now": return now
        case "recent": return now - 600_000_000_000
        case "today": return midnight
        case "yesterday": return midnight - day
        default: break
        }
        if let ts = AuditTimestamp(rfc3339: t) { return ts }
        if t.utf8.count == 10, let ts = AuditTimestamp(rfc3339: t + "T00:00:00Z") { return ts }
        if let d = parseDuration(t) { return now - d }
        return nil
    }

    /// `90s`, `30m`, `1h`, `2d`, `1w`, or a sum such as `1h30m`. Nanoseconds.
    public static func parseDuration(_ text: String) -> Int64? {
        var total: Int64 = 0
        var value: Int64 = 0
        var haveDigits = false
        var any = false
        for c in text.lowercased().utf8 {
            if c >= 0x30, c <= 0x39 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (v, o2) = m.addingReportingOverflow(Int64(c - 0x30))
                guard !o1, !o2 else { return nil }
                value = v
                haveDigits = true
                continue
            }
            let unit: Int64
            switch c {
            case 0x73: unit = 1_000_000_000
            case 0x6d: unit = 60_000_000_000
            case 0x68: unit = 3_600_000_000_000
            case 0x64: unit = 86_400_000_000_000
            case 0x77: unit = 604_800_000_000_000
            default: return nil
            }
            guard haveDigits else { return nil }
            let (p, o1) = value.multipliedReportingOverflow(by: unit)
            let (s, o2) = total.addingReportingOverflow(p)
            guard !o1, !o2 else { return nil }
            total = s
            value = 0
            haveDigits = false
            any = true
        }
        return any && !haveDigits ? total : nil
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let (q, r) = a.quotientAndRemainder(dividingBy: b)
        return r < 0 ? q - 1 : q
    }

    private static func daysIn(month m: Int64, year y: Int64) -> Int64 {
        switch m {
        case 2: return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    // Howard Hinnant's days_from_civil / civil_from_days.
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}

/// Where the writer gets time. Records are stamped with `now()`; fsync and
/// checkpoint intervals run on `monotonicNanos()`, so a wall-clock step
/// neither stalls nor floods them. Tests inject `ManualAuditClock`.
public protocol AuditClock: AnyObject, Sendable {
    func now() -> AuditTimestamp
    func monotonicNanos() -> UInt64
}

/// `clock_gettime(CLOCK_REALTIME)` and `clock_gettime(CLOCK_MONOTONIC)`:
/// both are vDSO calls, no system call on the caller's thread.
public final class SystemAuditClock: AuditClock {
    public init() {}

    public func now() -> AuditTimestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return AuditTimestamp(nanosecondsSinceEpoch: Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec))
    }

    public func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// A clock that moves only when told to. Both readings advance together.
public final class ManualAuditClock: AuditClock, @unchecked Sendable {
    private let lock = AuditMutex()
    private var wall: Int64
    private var mono: UInt64 = 1_000_000_000

    public init(start: AuditTimestamp = AuditTimestamp(rfc3339: "2025-01-01T00:00:00Z")!) {
        wall = start.nanosecondsSinceEpoch
    }

    public func advance(nanoseconds: UInt64) {
        lock.withLock {
            wall += Int64(nanoseconds)
            mono += nanoseconds
        }
    }

    public func advance(seconds: Double) { advance(nanoseconds: UInt64(seconds * 1e9)) }

    public func now() -> AuditTimestamp { lock.withLock { AuditTimestamp(nanosecondsSinceEpoch: wall) } }
    public func monotonicNanos() -> UInt64 { lock.withLock { mono } }
}
