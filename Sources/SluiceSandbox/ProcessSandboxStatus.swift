/// The sandbox state of a process (or one of its threads) as the kernel
/// reports it in `/proc/<pid>/status`: seccomp mode, no_new_privs, the
/// capability sets and the ids. What `sluice status` shows and the tests assert.
public struct ProcessSandboxStatus: Equatable, Sendable {
    /// 0: no seccomp; 1: strict; 2: filter.
    public var seccomp: Int
    /// How many filters are attached (kernels since 5.9 report it).
    public var seccompFilters: Int?
    public var noNewPrivileges: Bool
    public var capEff: UInt64
    public var capPrm: UInt64
    public var capInh: UInt64
    public var capBnd: UInt64
    public var capAmb: UInt64
    /// Real, effective, saved and filesystem uid.
    public var uids: [UInt32]
    public var gids: [UInt32]
    public var name: String

    /// Parses the text of a status file; throws naming the first field that is missing or malformed.
    public init(statusText: String, source: String = "status") throws {
        var fields: [Substring: Substring] = [:]
        for line in statusText.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].drop(while: { $0 == " " || $0 == "\t" })
        }
        func text(_ key: Substring) throws -> Substring {
            guard let v = fields[key] else { throw StatusError(source: source, message: "no \(key) field") }
            return v
        }
        func int(_ key: Substring) throws -> Int {
            guard let n = Int(try text(key)) else { throw StatusError(source: source, message: "\(key) is not a number") }
            return n
        }
        func mask(_ key: Substring) throws -> UInt64 {
            guard let n = UInt64(try text(key), radix: 16) else { throw StatusError(source: source, message: "\(key) is not a hex mask") }
            return n
        }
        func ids(_ key: Substring) throws -> [UInt32] {
            let list = try text(key).split(whereSeparator: { $0 == " " || $0 == "\t" }).map { UInt32($0) }
            guard list.count == 4, !list.contains(nil) else { throw StatusError(source: source, message: "\(key) is not four ids") }
            return list.map { $0! }
        }
        name = String(fields["Name"] ?? "")
        seccomp = try int("Seccomp")
        seccompFilters = fields["Seccomp_filters"].flatMap { Int($0) }
        noNewPrivileges = try int("NoNewPrivs") != 0
        capEff = try mask("CapEff")
        capPrm = try mask("CapPrm")
        capInh = try mask("CapInh")
        capBnd = try mask("CapBnd")
        capAmb = try mask("CapAmb")
        uids = try ids("Uid")
        gids = try ids("Gid")
    }

    /// Reads `/proc/<pid>/status` (`/proc/self/status` when pid is nil).
    public static func read(pid: Int32? = nil) throws -> ProcessSandboxStatus {
        let path = "/proc/\(pid.map(String.init) ?? "self")/status"
        guard let text = ProcFile.read(path) else { throw StatusError(source: path, message: "cannot be read") }
        return try ProcessSandboxStatus(statusText: text, source: path)
    }

    public var seccompDescription: String {
        switch seccomp {
        case 0: return "off"
        case 1: return "strict"
        case 2: return "filter" + (seccompFilters.map { $0 == 1 ? " (1 filter)" : " (\($0) filters)" } ?? "")
        default: return "mode \(seccomp)"
        }
    }

    /// The fields as the router's status JSON carries them (masks as 16 hex digits, like the kernel).
    public var jsonObject: [String: Any] {
        var obj: [String: Any] = [
            "seccomp": seccomp, "noNewPrivs": noNewPrivileges ? 1 : 0,
            "capEff": Self.hex(capEff), "capPrm": Self.hex(capPrm), "capInh": Self.hex(capInh),
            "capBnd": Self.hex(capBnd), "capAmb": Self.hex(capAmb),
            "uid": Int(uids[1]), "gid": Int(gids[1]),
        ]
        if let seccompFilters { obj["seccompFilters"] = seccompFilters }
        return obj
    }

    /// A capability mask as the kernel prints it: 16 hex digits.
    public static func hex(_ mask: UInt64) -> String {
        let digits = String(mask, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    /// Capability names in a mask ("none" for 0), for people.
    public static func capabilityNames(_ mask: UInt64) -> String {
        if mask == 0 { return "none" }
        return (0..<64).filter { mask & (1 << UInt64($0)) != 0 }
            .map { SandboxSystem.live.capabilityName(Int32($0)) }.joined(separator: ",")
    }
}

public struct StatusError: Error, CustomStringConvertible, Equatable {
    public var source: String
    public var message: String
    public var description: String { "\(source): \(message)" }
}
