#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceBenchStats

/// A hand-written SVG of the size sweep: bandwidth and round-trip latency
/// against message size, both axes logarithmic. No dependency: lines,
/// polylines and text.
enum Plot {
    struct Series {
        let name: String
        let color: String
        let dashed: Bool
        let points: [(x: Double, y: Double)]
    }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]

    static func series(_ figures: [Figure], metric: String, systems: [(String, String, Bool)]) -> [Series] {
        systems.enumerated().compactMap { i, s in
            let pts = figures.filter { $0.metric == metric && $0.system == s.0 && $0.value.isFinite && $0.value > 0 }
                .map { (x: Double($0.size), y: $0.value) }.sorted { $0.x < $1.x }
            return pts.isEmpty ? nil : Series(name: s.1, color: palette[i % palette.count], dashed: s.2, points: pts)
        }
    }

    /// The SVG text, or nil when the sweep produced no figures.
    static func svg(_ figures: [Figure], title: String) -> String? {
        let bw = series(figures, metric: "sweep_bandwidth", systems: [
            ("sluice-write-1qp", "WRITE, 1 QP", false), ("sluice-write-8qp", "WRITE, 8 QPs", true),
            ("sluice-read-1qp", "READ, 1 QP", false), ("sluice-read-8qp", "READ, 8 QPs", true),
            ("sluice-send-1qp", "SEND, 1 QP", false), ("sluice-send-8qp", "SEND, 8 QPs", true),
            ("memcpy", "memcpy, one core", false),
        ])
        let lat = series(figures, metric: "sweep_rtt_p50", systems: [("sluice-send", "Sluice SEND p50", false), ("tcp-loopback", "TCP loopback p50", false)])
            + series(figures, metric: "sweep_rtt_p99", systems: [("sluice-send", "Sluice SEND p99", true), ("tcp-loopback", "TCP loopback p99", true)])
        guard !bw.isEmpty || !lat.isEmpty else { return nil }
        let width = 1100.0, height = 540.0
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>

            """
        out += panel(bw, x: 70, y: 50, w: 420, h: 340, xLabel: "message size (bytes)", yLabel: "bandwidth (GB/s)")
        out += panel(lat, x: 620, y: 50, w: 420, h: 340, xLabel: "message size (bytes)", yLabel: "round trip (µs)")
        out += "</svg>\n"
        return out
    }

    private static func panel(_ series: [Series], x: Double, y: Double, w: Double, h: Double, xLabel: String, yLabel: String) -> String {
        var s = "<g>\n"
        s += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(w))\" height=\"\(f(h))\" fill=\"none\" stroke=\"#333\"/>\n"
        guard !series.isEmpty else {
            return s + "<text x=\"\(f(x + w / 2))\" y=\"\(f(y + h / 2))\" text-anchor=\"middle\">not measured</text>\n</g>\n"
        }
        let xa = LogAxis(covering: series.flatMap { $0.points.map(\.x) })
        let ya = LogAxis(covering: series.flatMap { $0.points.map(\.y) })
        func px(_ v: Double) -> Double { x + xa.fraction(v) * w }
        func py(_ v: Double) -> Double { y + h - ya.fraction(v) * h }
        for d in xa.decades {
            s += "<line x1=\"\(f(px(d)))\" y1=\"\(f(y))\" x2=\"\(f(px(d)))\" y2=\"\(f(y + h))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(f(px(d)))\" y=\"\(f(y + h + 16))\" text-anchor=\"middle\">\(escape(bytesLabel(d)))</text>\n"
        }
        for d in ya.decades {
            s += "<line x1=\"\(f(x))\" y1=\"\(f(py(d)))\" x2=\"\(f(x + w))\" y2=\"\(f(py(d)))\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(f(x - 6))\" y=\"\(f(py(d) + 4))\" text-anchor=\"end\">\(escape(numberLabel(d)))</text>\n"
        }
        s += "<text x=\"\(f(x + w / 2))\" y=\"\(f(y + h + 36))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text x=\"\(f(x - 52))\" y=\"\(f(y + h / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 \(f(x - 52)) \(f(y + h / 2)))\">\(escape(yLabel))</text>\n"
        for (i, se) in series.enumerated() {
            let pts = se.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            let dash = se.dashed ? " stroke-dasharray=\"6 4\"" : ""
            s += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(se.color)\" stroke-width=\"2\"\(dash)/>\n"
            for p in se.points { s += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"2.5\" fill=\"\(se.color)\"/>\n" }
            let ly = y + h + 52 + Double(i / 2) * 16, lx = x + Double(i % 2) * (w / 2)
            s += "<line x1=\"\(f(lx))\" y1=\"\(f(ly - 4))\" x2=\"\(f(lx + 24))\" y2=\"\(f(ly - 4))\" stroke=\"\(se.color)\" stroke-width=\"2\"\(dash)/>\n"
            s += "<text x=\"\(f(lx + 30))\" y=\"\(f(ly))\">\(escape(se.name))</text>\n"
        }
        return s + "</g>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    static func bytesLabel(_ v: Double) -> String {
        if v >= 1e9 { return "\(Int(v / 1e9)) GB" }
        if v >= 1e6 { return "\(Int(v / 1e6)) MB" }
        if v >= 1e3 { return "\(Int(v / 1e3)) kB" }
        return v >= 1 ? "\(Int(v)) B" : String(format: "%g B", v)
    }

    static func numberLabel(_ v: Double) -> String { v >= 1 ? String(format: "%.0f", v) : String(format: "%g", v) }

    static func write(_ figures: [Figure], title: String, to path: String) throws -> Bool {
        guard let text = svg(figures, title: title) else { return false }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw BenchFailure("cannot write \(path): \(error.localizedDescription)")
        }
        return true
    }
}
