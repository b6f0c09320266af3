#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceBenchStats

/// One figure, as the CSV carries it.
struct Figure {
    let metric: String
    let system: String
    let size: Int
    let value: Double
    let unit: String
}

/// A table of one metric: Sluice rows beside baseline rows. A row whose
/// measurement failed shows why instead of figures.
struct Table {
    let title: String
    let columns: [String]
    private(set) var rows: [(label: String, cells: [String]?, note: String?)] = []
    /// Lines printed under the rows: what a reader needs to read the figures.
    private(set) var notes: [String] = []

    init(title: String, columns: [String]) {
        self.title = title
        self.columns = columns
    }

    mutating func add(_ label: String, _ cells: [String]) { rows.append((label, cells, nil)) }
    mutating func addFailure(_ label: String, _ reason: String) { rows.append((label, nil, reason)) }
    mutating func addNote(_ line: String) { notes.append(line) }

    func render() -> String {
        let labelWidth = max(title.count, rows.map { $0.label.count + 2 }.max() ?? 0) + 2
        let cellWidth = max(9, columns.map { $0.count + 2 }.max() ?? 0)
        func pad(_ s: String, _ w: Int) -> String { s.count >= w ? s : s + String(repeating: " ", count: w - s.count) }
        func lpad(_ s: String, _ w: Int) -> String { s.count >= w ? " " + s : String(repeating: " ", count: w - s.count) + s }
        var out = pad(title, labelWidth) + columns.map { lpad($0, cellWidth) }.joined() + "\n"
        for r in rows {
            out += pad("  " + r.label, labelWidth)
            if let cells = r.cells {
                out += cells.map { lpad($0, cellWidth) }.joined()
            } else {
                out += "   failed: " + (r.note ?? "")
            }
            out += "\n"
        }
        for n in notes { out += "  note: " + n + "\n" }
        return out
    }
}

enum Format {
    static func micros(_ v: Double) -> String { String(format: v < 100 ? "%.2f" : "%.1f", v) }
    static func gbps(_ v: Double) -> String { String(format: "%.2f", v) }
    /// Three significant digits: for figures spanning decades (0.00412, 6.55, 43.8).
    static func sig3(_ v: Double) -> String { String(format: "%.3g", v) }
    static func count(_ v: Double) -> String { String(format: "%.0f", v) }
    static func nanos(_ v: Double) -> String { String(format: v < 10 ? "%.2f" : v < 100 ? "%.1f" : "%.0f", v) }
    /// A ratio to two decimals, "-" when it could not be formed.
    static func ratio(_ v: Double?) -> String { v.map { String(format: "%.2f", $0) } ?? "-" }
    /// A signed percentage to one decimal, "-" when it could not be formed.
    static func percent(_ v: Double?) -> String { v.map { String(format: "%+.1f", $0) } ?? "-" }
    /// 10000 as "10,000".
    static func grouped(_ n: Int) -> String {
        let digits = Array(String(n))
        var out = ""
        for (i, d) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(d)
        }
        return out
    }
}

enum CSV {
    /// Writes `metric,system,size,value,unit` rows, RFC 4180 quoting.
    static func write(_ figures: [Figure], to path: String) throws {
        var text = CSVText.row(["metric", "system", "size", "value", "unit"])
        for f in figures {
            text += CSVText.row([f.metric, f.system, String(f.size), String(format: "%.6g", f.value), f.unit])
        }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw BenchFailure("cannot write \(path): \(error.localizedDescription)")
        }
    }
}

/// What the figures were measured on.
enum Machine {
    static var onlineCPUs: Int { sysconf(Int32(_SC_NPROCESSORS_ONLN)) }

    static var cpuModel: String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown CPU" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return "unknown CPU"
    }

    static var kernel: String {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        return "Linux \(release)"
    }

    static var buildMode: String {
        #if DEBUG
        return "debug"
        #else
        return "release"
        #endif
    }

    /// SwiftPM puts products in .build/<triple>/<debug|release>/.
    static func buildMode(ofExecutable path: String) -> String {
        let parts = path.split(separator: "/")
        if parts.contains("release") { return "release build" }
        if parts.contains("debug") { return "debug build" }
        return "build mode unknown"
    }
}

/// CPU affinity of a thread (pid 0: the calling thread; threads and
/// processes it starts afterwards inherit it).
enum Affinity {
    /// Restricts `pid` to `cpus`; false (errno set) when the kernel refuses.
    @discardableResult
    static func pin(_ pid: pid_t, to cpus: [Int]) -> Bool {
        // A cpu_set_t of 1024 CPUs (glibc's size), built by hand: Swift's
        // Glibc module shows neither the type nor its macros.
        var words = [UInt64](repeating: 0, count: 16)
        for c in cpus where c >= 0 && c < 1024 { words[c / 64] |= UInt64(1) << UInt64(c % 64) }
        return words.withUnsafeBytes { sluiceSchedSetaffinity(pid, $0.count, $0.baseAddress!) } == 0
    }

    static var allCPUs: [Int] { Array(0..<max(1, Machine.onlineCPUs)) }
}

/// glibc's sched_setaffinity(2) wrapper, declared here because Swift's Glibc
/// module hides it (it is a _GNU_SOURCE function).
@_silgen_name("sched_setaffinity")
private func sluiceSchedSetaffinity(_ pid: pid_t, _ size: Int, _ mask: UnsafeRawPointer) -> Int32
