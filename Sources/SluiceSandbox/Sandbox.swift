#if canImport(Glibc)
import Glibc
#endif
import CCap

/// How the router is confined once it has started.
public enum SandboxMode: String, CaseIterable, Sendable {
    /// The default: a syscall outside the allowlist is reported and kills the router (SIGSYS).
    case enforce
    /// A syscall outside the allowlist is recorded by the kernel's audit log and allowed.
    /// Capabilities are dropped as in `enforce`. For finding what a new code path needs.
    case log
    /// Nothing is confined. For development only; a warning says so.
    case off
}

/// What `Sandbox.apply` did, for the router's log and `sluice status`.
public struct SandboxReport: CustomStringConvertible, Sendable {
    public var mode: SandboxMode
    /// Syscalls the filter allows (0 when off).
    public var syscallsAllowed = 0
    /// libseccomp rules loaded (argument alternatives counted separately).
    public var rulesLoaded = 0
    public var features: [String] = []
    public var capabilitiesKept: [String] = []
    public var user: String?
    /// Threads other than the caller whose capabilities had to be dropped by signal.
    public var threadsDropped = 0
    /// Things an operator should know (the bounding set left as is, the mode is off).
    public var notes: [String] = []
    /// This process's state read back from /proc/self/status after applying.
    public var status: ProcessSandboxStatus?

    public var description: String {
        switch mode {
        case .off:
            return "sandbox off"
        case .enforce, .log:
            var s = "sandbox \(mode.rawValue): \(syscallsAllowed) syscalls allowed (\(rulesLoaded) rules)"
            if !features.isEmpty { s += ", features \(features.joined(separator: ","))" }
            s += ", capabilities kept: \(capabilitiesKept.isEmpty ? "none" : capabilitiesKept.joined(separator: ","))"
            if let user { s += ", user \(user)" }
            if let st = status { s += "; Seccomp \(st.seccomp), NoNewPrivs \(st.noNewPrivileges ? 1 : 0), CapEff \(ProcessSandboxStatus.hex(st.capEff))" }
            return s
        }
    }
}

/// The router's sandbox: no_new_privs, capabilities, an optional user
/// switch, and the seccomp allowlist, in that order, once, after start-up.
public enum Sandbox {
    public struct Options {
        public var mode: SandboxMode = .enforce
        /// Capabilities to keep, by libcap name (`cap_net_raw`). The software fabric needs none.
        public var keepCapabilities: [String] = []
        /// Switch to this user (its primary group, no supplementary groups).
        public var user: String?
        /// Features of the data file to turn on (`multiHost`).
        public var features: Set<String> = []
        /// The violation report also goes to this fd (stderr always gets it).
        public var violationReportFD: Int32?
        /// Names the process in the report and warnings.
        public var programName = "sluice-router"
        /// Overrides the mode's action for forbidden calls. Tests use `.errno`
        /// with a distinctive errno so a child survives a refusal and the
        /// errno proves the filter refused.
        var defaultActionOverride: DefaultAction?
        /// How long threads started before the sandbox get to drop their capabilities.
        var threadDropTimeoutMicros: UInt32 = 5_000_000

        public init(mode: SandboxMode = .enforce, keepCapabilities: [String] = [], user: String? = nil,
                    features: Set<String> = [], violationReportFD: Int32? = nil, programName: String = "sluice-router") {
            self.mode = mode
            self.keepCapabilities = keepCapabilities
            self.user = user
            self.features = features
            self.violationReportFD = violationReportFD
            self.programName = programName
        }
    }

    /// Applies the sandbox to this process. Call it once, after everything
    /// that needs privilege is open. Throws `SandboxError` when any step
    /// fails in `enforce` or `log` mode: the caller must then refuse to serve.
    @discardableResult
    public static func apply(mode: SandboxMode = .enforce, keepCapabilities: [String] = [],
                             user: String? = nil) throws -> SandboxReport {
        try apply(Options(mode: mode, keepCapabilities: keepCapabilities, user: user))
    }

    @discardableResult
    public static func apply(_ options: Options) throws -> SandboxReport {
        let report = try apply(options, policy: SeccompPolicy.embedded(), system: .live)
        applied = report
        return report
    }

    /// What `apply` did to this process, once it has succeeded (for status).
    public nonisolated(unsafe) private(set) static var applied: SandboxReport?

    /// The sandbox state for a status answer: the mode applied ("none"
    /// before `apply`), this pid, and the kernel's fields from /proc/self/status.
    public static func statusObject() -> [String: Any] {
        var obj: [String: Any] = ["mode": applied?.mode.rawValue ?? "none", "pid": Int(getpid())]
        if let st = try? ProcessSandboxStatus.read() {
            obj.merge(st.jsonObject) { _, new in new }
        }
        return obj
    }

    /// The effective filter as text, for `sluice-router --print-seccomp`.
    public static func describeFilter(mode: SandboxMode = .enforce, features: Set<String> = []) throws -> String {
        let policy = try SeccompPolicy.embedded()
        _ = try policy.compile(features: features, ownPID: getpid()) // unknown features are errors here too
        return policy.render(mode: mode, features: features)
    }

    static func apply(_ options: Options, policy: SeccompPolicy, system: SandboxSystem) throws -> SandboxReport {
        var report = SandboxReport(mode: options.mode)
        report.features = options.features.sorted()
        if options.mode == .off {
            report.notes.append("--sandbox off: no seccomp filter and no capabilities dropped; for development only")
            warn(options, report.notes[0])
            report.status = system.processStatus().flatMap { try? ProcessSandboxStatus(statusText: $0) }
            return report
        }

        // 1. Everything that can fail without changing the process comes first:
        // the filter is compiled and every syscall resolved, the capabilities
        // and the user looked up. A broken data file leaves the process as it was.
        let rules: [CompiledRule]
        let numbers: [String: Int32]
        do {
            rules = try policy.compile(features: options.features, ownPID: system.processID())
            numbers = try SeccompFilter.resolve(rules, system: system)
        } catch let e as SeccompPolicyError {
            throw SandboxError(step: .policy, message: e.description)
        }
        report.syscallsAllowed = Set(rules.filter { $0.action == .allow }.map(\.syscall)).count
        var keep: UInt64 = 0
        for name in options.keepCapabilities {
            guard let cap = system.capabilityNumber(name), cap >= 0, cap < 64 else {
                throw SandboxError(step: .capabilities, message: "unknown capability \"\(name)\" (libcap names, such as cap_net_raw)")
            }
            keep |= 1 << UInt64(cap)
        }
        report.capabilitiesKept = options.keepCapabilities
        var account: (uid: uid_t, gid: gid_t)?
        if let user = options.user {
            guard let a = system.lookUpUser(user) else { throw SandboxError(step: .user, message: "no user named \"\(user)\"") }
            account = a
            report.user = user
        }
        if options.mode == .enforce && options.defaultActionOverride == nil {
            try ViolationReport.install(program: options.programName, extraFD: options.violationReportFD, system: system)
            // Swift's crash handler answers a trap by spawning swift-backtrace,
            // which the filter forbids: the crash would end as SIGSYS (blocked
            // in that handler, so with no report). With the default actions a
            // crash kills by its own signal, after the runtime's "Fatal error" line.
            for sig in crashSignals {
                let e = system.defaultSignalAction(sig)
                if e != 0 { throw SandboxError(step: .violationReport, call: "sigaction(\(sig), SIG_DFL)", errno: e) }
            }
        }

        // 2. no_new_privs: nothing this process runs can gain privilege again.
        var e = system.prctl(PR_SET_NO_NEW_PRIVS, 1)
        if e != 0 { throw SandboxError(step: .noNewPrivileges, call: "prctl(PR_SET_NO_NEW_PRIVS)", errno: e) }

        // 3. Capabilities: ambient and bounding first (dropping the bounding set
        // needs CAP_SETPCAP), then everything but what is kept, plus what the
        // user switch needs until it is done.
        report.notes += try dropCapabilities(keep: keep, switchingUser: account != nil, system: system)

        // 4. The user, on every thread (glibc's setxid); setuid clears the
        // capabilities unless PR_SET_KEEPCAPS keeps the permitted ones.
        if let account {
            if keep != 0 {
                e = system.prctl(PR_SET_KEEPCAPS, 1)
                if e != 0 { throw SandboxError(step: .user, call: "prctl(PR_SET_KEEPCAPS)", errno: e) }
            }
            e = system.setGroups([])
            if e != 0 { throw SandboxError(step: .user, call: "setgroups([])", errno: e) }
            e = system.setGID(account.gid)
            if e != 0 { throw SandboxError(step: .user, call: "setgid(\(account.gid))", errno: e) }
            e = system.setUID(account.uid)
            if e != 0 { throw SandboxError(step: .user, call: "setuid(\(account.uid))", errno: e) }
            e = system.setCapabilities(CapabilitySets(effective: keep, permitted: keep, inheritable: 0))
            if e != 0 { throw SandboxError(step: .capabilities, call: "cap_set_proc", errno: e) }
            if keep != 0 { _ = system.prctl(PR_SET_KEEPCAPS, 0) }
        }
        guard let now = system.capabilities(), now == CapabilitySets(effective: keep, permitted: keep, inheritable: 0) else {
            throw SandboxError(step: .capabilities, message: "this thread's capabilities are not exactly the ones kept after dropping them")
        }
        let others = ThreadCapabilities.excess(keep: keep, system: system).count
        try ThreadCapabilities.dropInOtherThreads(keep: keep, timeoutMicros: options.threadDropTimeoutMicros, system: system)
        report.threadsDropped = others

        // 5. The filter, on every thread (TSYNC also sets no_new_privs on them).
        let defaultAction = options.defaultActionOverride ?? (options.mode == .enforce ? .trap : .log)
        report.rulesLoaded = try SeccompFilter.load(rules, numbers: numbers, defaultAction: defaultAction, system: system)

        // 6. Read back what the kernel says, for every thread.
        report.status = try verify(keep: keep, system: system)
        return report
    }

    /// The signals Swift's crash handler takes over at start-up.
    static let crashSignals = [SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV]

    static func dropCapabilities(keep: UInt64, switchingUser: Bool, system: SandboxSystem) throws -> [String] {
        var notes: [String] = []
        guard let current = system.capabilities() else {
            throw SandboxError(step: .capabilities, message: "cap_get_proc failed: cannot read this thread's capabilities")
        }
        if keep & ~current.permitted != 0 {
            throw SandboxError(step: .capabilities, message: "cannot keep \(ProcessSandboxStatus.capabilityNames(keep & ~current.permitted)): the router does not hold it")
        }
        var e = system.resetAmbientCapabilities()
        if e != 0 { throw SandboxError(step: .capabilities, call: "cap_reset_ambient", errno: e) }
        let setpcap = UInt64(1) << UInt64(CAP_SETPCAP)
        if current.effective & setpcap != 0 {
            for cap in 0..<min(system.capabilityCount(), 64) where keep & (1 << UInt64(cap)) == 0 {
                guard system.capabilityInBoundingSet(cap) == 1 else { continue }
                e = system.dropBoundingCapability(cap)
                if e != 0 { throw SandboxError(step: .capabilities, call: "cap_drop_bound(\(system.capabilityName(cap)))", errno: e) }
            }
        } else {
            notes.append("the bounding set is left as it is: dropping it needs CAP_SETPCAP, which the router does not hold (harmless: no_new_privs is set and execve is forbidden)")
        }
        var interim = keep
        if switchingUser {
            interim |= current.permitted & ((1 << UInt64(CAP_SETUID)) | (1 << UInt64(CAP_SETGID)))
        }
        e = system.setCapabilities(CapabilitySets(effective: interim, permitted: interim, inheritable: 0))
        if e != 0 { throw SandboxError(step: .capabilities, call: "cap_set_proc", errno: e) }
        return notes
    }

    /// Every thread must show the filter, no_new_privs, and no capability beyond `keep`.
    static func verify(keep: UInt64, system: SandboxSystem) throws -> ProcessSandboxStatus? {
        for tid in system.threadIDs() {
            guard let text = system.threadStatus(tid), let st = try? ProcessSandboxStatus(statusText: text) else { continue }
            guard st.seccomp == 2, st.noNewPrivileges else {
                throw SandboxError(step: .verification, message: "thread \(tid) (\(st.name)) shows Seccomp \(st.seccomp), NoNewPrivs \(st.noNewPrivileges ? 1 : 0)")
            }
            let held = (st.capEff | st.capPrm | st.capInh | st.capAmb) & ~keep
            guard held == 0 else {
                throw SandboxError(step: .verification, message: "thread \(tid) (\(st.name)) still holds \(ProcessSandboxStatus.capabilityNames(held))")
            }
        }
        return system.processStatus().flatMap { try? ProcessSandboxStatus(statusText: $0, source: "/proc/self/status") }
    }

    static func warn(_ options: Options, _ message: String) {
        let line = Array("\(options.programName): warning: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
