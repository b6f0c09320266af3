import Glibc

/// What the policy says about one request. `rule` is the field that decided,
/// as a path in the requesting tenant's policy (`quotas.memoryRegions`,
/// `memoryAccess`, `peers.beta`); when another tenant's policy decided, the
/// path is prefixed with that tenant's name and a colon (`beta:peers.alpha`).
public enum Decision: Equatable, Sendable, CustomStringConvertible {
    case allow(rule: String)
    /// `errno` is what the verb returns to the tenant, with libibverbs'
    /// meaning: `ENOMEM` over a count or byte quota, `EINVAL` for a depth,
    /// SGE count or inline size above its quota, `EACCES` for an access flag,
    /// operation or peer the policy does not allow (and for an unknown tenant).
    case deny(rule: String, reason: String, errno: Int32)

    public var isAllowed: Bool {
        if case .allow = self { return true }
        return false
    }

    public var rule: String {
        switch self {
        case .allow(let rule), .deny(let rule, _, _): return rule
        }
    }

    /// `allow (rule: quotas.queuePairs)` or
    /// `deny (rule: quotas.queuePairs): alpha already holds ... (ENOMEM)`.
    public var description: String {
        switch self {
        case .allow(let rule):
            return "allow (rule: \(rule))"
        case .deny(let rule, let reason, let errno):
            return "deny (rule: \(rule)): \(reason) (\(Decision.errnoName(errno)))"
        }
    }

    /// The symbolic name of the errnos decisions use.
    public static func errnoName(_ e: Int32) -> String {
        switch e {
        case ENOMEM: return "ENOMEM"
        case EACCES: return "EACCES"
        case EINVAL: return "EINVAL"
        case EPERM: return "EPERM"
        default: return "errno \(e)"
        }
    }
}
