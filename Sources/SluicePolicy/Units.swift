/// Sizes, bandwidths and operation rates as people write them in a policy:
/// `256Mi`, `10Gbit/s`, `2M/s`. Parsing is overflow-safe: a value that does
/// not fit in 64 bits is an error, never a wrapped number.
public enum Units {
    /// Why a value was refused. The loader turns it into a field error.
    public enum ParseError: Error, Equatable, Sendable {
        /// Not one of the accepted forms.
        case malformed
        /// The forms are right but the value does not fit in 64 bits.
        case tooLarge
        /// A rate in bits that is not a whole number of bytes per second.
        case fractionalBytes
    }

    /// The accepted size forms, for error messages.
    public static let sizeForms =
        "a whole number of bytes, optionally with a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal one (K, M, G, T, P, E), e.g. 4096, 256Mi, 4Gi"
    /// The accepted bandwidth forms, for error messages.
    public static let bandwidthForms =
        "a whole number with an optional K, M, G, T (decimal) or Ki, Mi, Gi, Ti (binary) prefix and a unit of bit/s or B/s, e.g. 10Gbit/s, 100Mbit/s, 1GB/s, 512MiB/s"
    /// The accepted operation-rate forms, for error messages.
    public static let operationRateForms =
        "a whole number of operations with an optional K, M or G (decimal) prefix and /s, e.g. 1000/s, 500K/s, 2M/s"

    private static let binaryPrefixes: [(String, UInt64)] = [
        ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50), ("Ei", 1 << 60),
    ]
    private static let decimalPrefixes: [(String, UInt64)] = [
        ("k", 1_000), ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000), ("E", 1_000_000_000_000_000_000),
    ]

    /// `4096`, `4Ki`, `256Mi`, `4Gi`, `1Ti` (binary), `4K`, `4M`, `4G` (decimal) → bytes.
    public static func parseSize(_ text: String) -> Result<UInt64, ParseError> {
        guard let (digits, suffix) = splitNumber(text) else { return .failure(.malformed) }
        guard let multiplier = prefixMultiplier(suffix, allowBinary: true, allowDecimal: true) else {
            return .failure(.malformed)
        }
        return scaled(digits, by: multiplier)
    }

    /// `10Gbit/s`, `100Mbit/s`, `1GB/s`, `512MiB/s` → bytes per second. A rate
    /// in bits must be a whole number of bytes (a multiple of 8 bits).
    public static func parseBandwidth(_ text: String) -> Result<UInt64, ParseError> {
        guard let (digits, rest) = splitNumber(text) else { return .failure(.malformed) }
        let inBits: Bool
        let prefix: Substring
        if rest.hasSuffix("bit/s") {
            inBits = true
            prefix = rest.dropLast(5)
        } else if rest.hasSuffix("B/s") {
            inBits = false
            prefix = rest.dropLast(3)
        } else {
            return .failure(.malformed)
        }
        guard let multiplier = prefixMultiplier(prefix, allowBinary: true, allowDecimal: true),
              prefix != "P", prefix != "E", prefix != "Pi", prefix != "Ei" else {
            return .failure(.malformed)
        }
        switch scaled(digits, by: multiplier) {
        case .failure(let e): return .failure(e)
        case .success(let amount):
            guard inBits else { return .success(amount) }
            guard amount % 8 == 0 else { return .failure(.fractionalBytes) }
            return .success(amount / 8)
        }
    }

    /// `1000/s`, `500K/s`, `2M/s` → operations per second (decimal prefixes only).
    public static func parseOperationRate(_ text: String) -> Result<UInt64, ParseError> {
        guard let (digits, rest) = splitNumber(text), rest.hasSuffix("/s") else { return .failure(.malformed) }
        let prefix = rest.dropLast(2)
        guard prefix.isEmpty || ["k", "K", "M", "G"].contains(prefix),
              let multiplier = prefixMultiplier(prefix, allowBinary: false, allowDecimal: true) else {
            return .failure(.malformed)
        }
        return scaled(digits, by: multiplier)
    }

    /// A byte count for people: in the binary or decimal unit that divides
    /// it exactly and gives the smaller number (`256 MiB`, `4 GB`), otherwise
    /// in bytes (`1500 bytes`).
    public static func formatSize(_ bytes: UInt64) -> String {
        if bytes == 1 { return "1 byte" }
        func largest(_ units: [(String, UInt64)]) -> (UInt64, String)? {
            units.first { bytes % $0.1 == 0 }.map { (bytes / $0.1, $0.0) }
        }
        let binary = largest([("EiB", 1 << 60), ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20),
                              ("KiB", 1 << 10)])
        let decimal = largest([("EB", 1_000_000_000_000_000_000), ("PB", 1_000_000_000_000_000), ("TB", 1_000_000_000_000),
                               ("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)])
        guard bytes != 0, let best = [binary, decimal].compactMap({ $0 }).min(by: { $0.0 < $1.0 }) else {
            return "\(bytes) bytes"
        }
        return "\(best.0) \(best.1)"
    }

    // MARK: pieces

    /// Leading ASCII digits and the rest; nil when there are no digits.
    private static func splitNumber(_ text: String) -> (Substring, Substring)? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else { return nil }
        return (digits, text[digits.endIndex...])
    }

    private static func prefixMultiplier(_ prefix: Substring, allowBinary: Bool, allowDecimal: Bool) -> UInt64? {
        if prefix.isEmpty { return 1 }
        if allowBinary, let m = binaryPrefixes.first(where: { $0.0 == prefix }) { return m.1 }
        if allowDecimal, let m = decimalPrefixes.first(where: { $0.0 == prefix }) { return m.1 }
        return nil
    }

    private static func scaled(_ digits: Substring, by multiplier: UInt64) -> Result<UInt64, ParseError> {
        var value: UInt64 = 0
        for d in digits.utf8 {
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(d - UInt8(ascii: "0")))
            if o1 || o2 { return .failure(.tooLarge) }
            value = sum
        }
        let (total, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? .failure(.tooLarge) : .success(total)
    }
}
