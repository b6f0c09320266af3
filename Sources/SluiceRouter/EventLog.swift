#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The router's event log: one JSON object per line, appended. Every control
/// decision and every data-path denial lands here. (The tamper-evident chain
/// is a later layer; this writer is where it will hook in.)
public final class EventLog {
    public enum Decision: String { case allow, deny }

    private let fd: Int32
    private var sequence: UInt64 = 0
    /// Data-path allows are counted, not logged.
    public private(set) var countedAllows: UInt64 = 0

    public init(path: String) throws {
        fd = try Sys.retrying("open(\(path))") { Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640) }
    }

    deinit { Sys.close(fd) }

    public struct Subject {
        public var tenant: String
        public var session: UInt64
        public var pid: Int32
        public var uid: UInt32
    }

    public func record(event: String, subject: Subject? = nil, verb: String? = nil, object: String? = nil,
                       decision: Decision? = nil, rule: String? = nil, reason: String? = nil, fields: [String: String] = [:]) {
        sequence += 1
        var obj: [String: Any] = ["seq": sequence, "time": EventLog.timestamp(), "event": event]
        if let s = subject {
            obj["tenant"] = s.tenant
            obj["subject"] = ["session": s.session, "pid": s.pid, "uid": s.uid]
        }
        if let verb { obj["verb"] = verb }
        if let object { obj["object"] = object }
        if let decision { obj["decision"] = decision.rawValue }
        if let rule { obj["rule"] = rule }
        if let reason, !reason.isEmpty { obj["reason"] = reason }
        for (k, v) in fields { obj[k] = v }
        guard var data = try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        data.append(0x0a)
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if Glibc.errno == EINTR { continue }
                    FileHandle.standardError.write("sluice-router: cannot write the event log: \(String(cString: strerror(Glibc.errno)))\n".data(using: .utf8)!)
                    return
                }
                off += n
            }
        }
    }

    public func countAllow() { countedAllows += 1 }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday,
                      tmv.tm_hour, tmv.tm_min, tmv.tm_sec, ts.tv_nsec)
    }
}
