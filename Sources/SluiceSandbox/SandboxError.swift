#if canImport(Glibc)
import Glibc
#endif

/// Why the sandbox could not be put in place. In `enforce` mode the router
/// refuses to serve when `Sandbox.apply` throws one of these.
public struct SandboxError: Error, CustomStringConvertible, Equatable {
    public enum Step: String, Sendable {
        case policy = "the seccomp data file"
        case noNewPrivileges = "no_new_privs"
        case capabilities = "capabilities"
        case user = "switching user"
        case violationReport = "the violation report"
        case filter = "the seccomp filter"
        case verification = "verifying the sandbox"
    }

    public var step: Step
    public var message: String

    public init(step: Step, message: String) {
        self.step = step
        self.message = message
    }

    init(step: Step, call: String, errno e: Int32) {
        self.init(step: step, message: "\(call): \(String(cString: strerror(e)))")
    }

    public var description: String { "cannot sandbox (\(step.rawValue)): \(message)" }
}
