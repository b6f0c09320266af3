#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceAudit

/// How many records an audit writing run offers.
struct AuditPlan {
    var records: Int
}

/// One run of records offered to a log as fast as the caller can.
struct AuditRun {
    /// Records the caller offered.
    let offered: Int
    /// Time spent in the caller's `record(...)` calls, all of them.
    let callerNanos: UInt64
    /// From the first record offered until the last one was written and fsynced.
    let totalNanos: UInt64
    let written: UInt64
    let dropped: UInt64
    let syncs: UInt64
    /// Bytes of the log file, over every record in it (the writer's own too).
    let bytesPerRecord: Double

    var recordsPerSecond: Double { Double(written) * 1e9 / Double(max(totalNanos, 1)) }
    var megabytesPerSecond: Double { Double(written) * bytesPerRecord * 1e3 / Double(max(totalNanos, 1)) }
    var callerNanosPerRecord: Double { Double(callerNanos) / Double(max(offered, 1)) }
}

/// The audit writer's throughput, measured directly: a temporary log in a
/// private directory, the records the router writes when it refuses a
/// request, offered from one thread as fast as `record(...)` returns.
enum AuditThroughput {
    /// What the router records when a tenant's ALLOC_PD goes over quota
    /// (the denial the flood below provokes), session and pid varying.
    static func routerLikeRecord(_ writer: AuditWriter, _ i: Int, pid: Int32) -> Bool {
        writer.record(event: "control", tenant: "beta",
                      subject: AuditSubject(session: UInt64(1 + i & 63), pid: pid, uid: 0),
                      verb: "alloc_pd", decision: .deny, rule: "quotas.protectionDomains",
                      reason: "beta already holds 2 protection domains, the most quotas.protectionDomains allows (2)")
    }

    /// Offers `plan.records` records. `paced`: between chunks of 1024 the
    /// caller waits while the queue is more than half full, so nothing is
    /// dropped and the figure is what the writer sustains; otherwise it never
    /// waits, as the router never does, and what the queue cannot hold is
    /// dropped (and counted in the log).
    static func writer(fsyncMillis: Int, paced: Bool, plan: AuditPlan, directory: String) throws -> AuditRun {
        let path = directory + "/audit-\(fsyncMillis)ms-\(paced ? "paced" : "flood").log"
        var config = AuditConfiguration(path: path)
        config.fsyncInterval = .milliseconds(fsyncMillis)
        let writer: AuditWriter
        do {
            writer = try AuditWriter(config)
        } catch {
            throw BenchFailure("cannot open an audit log at \(path): \(error)")
        }
        let pid = getpid()
        let halfFull = UInt64(config.queueCapacity / 2)
        var caller: UInt64 = 0
        let start = monotonicNanos()
        // Timed in chunks: a clock read per record would cost about as much
        // as what is being measured.
        var i = 0
        while i < plan.records {
            let end = min(i + 1024, plan.records)
            let t0 = monotonicNanos()
            while i < end {
                _ = routerLikeRecord(writer, i, pid: pid)
                i += 1
            }
            caller &+= monotonicNanos() &- t0
            while paced {
                let st = writer.statistics
                if st.accepted &- st.written <= halfFull { break }
                usleep(200)
            }
        }
        writer.flush()
        let total = monotonicNanos() &- start
        let stats = writer.statistics
        writer.close()
        let final = writer.statistics
        if final.writeErrors > 0 {
            throw BenchFailure("the audit writer failed \(final.writeErrors) writes or fsyncs: \(final.lastError ?? "no reason given")")
        }
        let lines = try countLines(path)
        return AuditRun(offered: plan.records, callerNanos: caller, totalNanos: total, written: stats.written,
                        dropped: stats.dropped, syncs: stats.syncs,
                        bytesPerRecord: Double(try fileSize(path)) / Double(max(lines, 1)))
    }

    /// The floor under the writer: the same number of lines of the same
    /// size, already serialized, written 1024 per `write(2)` with an fsync
    /// every 100 ms: no queue, no JSON, no hashing.
    static func plainWrites(plan: AuditPlan, lineBytes: Int, directory: String) throws -> AuditRun {
        let path = directory + "/plain-writes.log"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SystemCallError("open(\(path))", errno) }
        defer { close(fd) }
        let perWrite = 1024
        var chunk = [UInt8](repeating: UInt8(ascii: "x"), count: lineBytes * perWrite)
        for k in 1...perWrite { chunk[k * lineBytes - 1] = UInt8(ascii: "\n") }
        var syncs: UInt64 = 0
        let interval: UInt64 = 100_000_000
        let start = monotonicNanos()
        var lastSync = start
        var done = 0
        while done < plan.records {
            let n = min(perWrite, plan.records - done)
            try chunk.withUnsafeBytes { try TCPLoopback.writeFully(fd, $0.baseAddress!, n * lineBytes) }
            done += n
            if monotonicNanos() &- lastSync >= interval {
                if fsync(fd) != 0 { throw SystemCallError("fsync(\(path))", errno) }
                syncs += 1
                lastSync = monotonicNanos()
            }
        }
        if fsync(fd) != 0 { throw SystemCallError("fsync(\(path))", errno) }
        syncs += 1
        let total = monotonicNanos() &- start
        return AuditRun(offered: plan.records, callerNanos: total, totalNanos: total, written: UInt64(done),
                        dropped: 0, syncs: syncs, bytesPerRecord: Double(lineBytes))
    }

    static func fileSize(_ path: String) throws -> Int {
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemCallError("stat(\(path))", errno) }
        return Int(st.st_size)
    }

    static func countLines(_ path: String) throws -> Int {
        var tally = AuditLogTally(path: path)
        return try tally.scan().lines
    }

    /// A private directory next to where the router's runtime directory
    /// goes, and what file system it is on (fsync costs depend on it).
    static func makeDirectory() throws -> String {
        var template = Array("/tmp/sluice-bench-audit.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemCallError("mkdtemp", errno) }
        return String(cString: template)
    }

    /// The type of the file system `path` is on, from the longest mount
    /// point in /proc/self/mounts that contains it.
    static func fileSystem(of path: String) -> String {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return "unknown file system" }
        var best = (point: "", type: "unknown file system")
        for line in mounts.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count >= 3 else { continue }
            let point = String(f[1])
            let inside = point == "/" || path == point || path.hasPrefix(point + "/")
            if inside && point.count > best.point.count { best = (point, String(f[2])) }
        }
        return best.type
    }
}

/// Counts records in an audit log as it grows: each `scan` reads what was
/// appended since the last one, up to its last complete line.
struct AuditLogTally {
    let path: String
    private var offset: Int = 0

    struct Counts {
        var lines = 0
        var denials = 0
        /// From `audit.loss` records: denials the writer's queue had no room for.
        var lostDenials = 0
    }

    init(path: String) {
        self.path = path
    }

    // Keys are sorted in a record's canonical bytes (docs/audit.md), so a
    // decision comes first, and a record without one starts with its event.
    private static let deny = Array(#"{"decision":"deny","#.utf8)
    private static let loss = Array(#"{"event":"audit.loss","#.utf8)
    private static let lostDenials = Array(#""lostDenials":""#.utf8)

    mutating func scan() throws -> Counts {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemCallError("open(\(path))", errno) }
        defer { close(fd) }
        var counts = Counts()
        let capacity = 1 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = retryingEINTR { pread(fd, buf, capacity, off_t(offset)) }
            if n < 0 { throw SystemCallError("pread(\(path))", errno) }
            if n == 0 { break }
            var lineStart = 0
            while lineStart < n, let nl = memchr(buf + lineStart, 0x0a, n - lineStart) {
                let lineEnd = buf.distance(to: nl)
                let line = UnsafeRawBufferPointer(start: buf + lineStart, count: lineEnd - lineStart)
                counts.lines += 1
                if Self.starts(line, with: Self.deny) { counts.denials += 1 }
                if Self.starts(line, with: Self.loss) { counts.lostDenials += Self.number(after: Self.lostDenials, in: line) }
                lineStart = lineEnd + 1
            }
            // A line still being written stays for the next scan.
            if lineStart == 0 { break }
            offset += lineStart
            if n < capacity { break }
        }
        return counts
    }

    private static func starts(_ line: UnsafeRawBufferPointer, with prefix: [UInt8]) -> Bool {
        line.count >= prefix.count && prefix.withUnsafeBytes { memcmp(line.baseAddress!, $0.baseAddress!, prefix.count) == 0 }
    }

    /// The decimal digits right after `key` in `line`; 0 without `key`.
    private static func number(after key: [UInt8], in line: UnsafeRawBufferPointer) -> Int {
        guard line.count >= key.count else { return 0 }
        for start in 0...(line.count - key.count) where line[start] == key[0] {
            guard line[start..<(start + key.count)].elementsEqual(key) else { continue }
            var value = 0
            var i = start + key.count
            while i < line.count, line[i] >= 0x30, line[i] <= 0x39 {
                value = value * 10 + Int(line[i] - 0x30)
                i += 1
            }
            return value
        }
        return 0
    }
}
