/// `--backend software|verbs|auto`: which engine performs the verbs the
/// router has checked. Policy, key translation, bounds and shaping sit above
/// the backend and are the same for both.
public enum BackendRequest: String, CaseIterable, Sendable {
    case software, verbs, auto
}

/// What the router runs on, and why (logged at start-up and audited).
public enum BackendSelection {
    case software(reason: String)
    case verbs(VerbsDevice, reason: String)

    public var name: String {
        switch self {
        case .software: return "software"
        case .verbs: return "verbs"
        }
    }

    public var reason: String {
        switch self {
        case .software(let r), .verbs(_, let r): return r
        }
    }

    /// The seccomp data file's features this backend needs on top of the
    /// software fabric's allowlist: the uverbs ioctl for a NIC, or what
    /// libsluice-verbs uses when the device is Sluice's own (nesting).
    public var sandboxFeatures: Set<String> {
        switch self {
        case .software: return []
        case .verbs(let d, _): return d.isSluiceDevice ? ["nestedVerbs"] : ["verbsDevice"]
        }
    }

    /// The start-up log line: `backend: <which> (<why>)`.
    public var logLine: String {
        switch self {
        case .software(let r): return "backend: software fabric (\(r))"
        case .verbs(let d, let r): return "backend: verbs on \(d.name) (\(r))"
        }
    }

    /// Chooses the backend. `verbs` insists on a usable device (an error
    /// otherwise); `auto` uses one if there is one and else falls back to
    /// the software fabric, saying why; `software` opens no device.
    public static func select(_ request: BackendRequest, device: String?,
                              probe: (String?) -> VerbsDevice.Probe = VerbsDevice.probe(named:)) -> Result<BackendSelection, BackendError> {
        switch request {
        case .software:
            if let device { return .failure(BackendError("--device \(device) needs --backend verbs or auto")) }
            return .success(.software(reason: "--backend software"))
        case .verbs:
            switch probe(device) {
            case .usable(let d): return .success(.verbs(d, reason: "--backend verbs: \(d.summary)"))
            case .unusable(let why): return .failure(BackendError("cannot use the verbs backend: \(why)"))
            }
        case .auto:
            switch probe(device) {
            case .usable(let d): return .success(.verbs(d, reason: "auto: \(d.summary)"))
            case .unusable(let why):
                // A device asked for by name and not found is most likely a
                // typo or a missing driver: say so, not only "no device".
                if let device {
                    return .success(.software(reason: "auto: --device \(device) is not usable, so the software fabric: \(why)"))
                }
                return .success(.software(reason: "auto: \(why)"))
            }
        }
    }
}

public struct BackendError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
