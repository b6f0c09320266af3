import CSeccomp

/// One libseccomp rule: a syscall, an action, and comparisons that must all hold.
struct CompiledRule: Equatable {
    struct Comparison: Equatable {
        var index: UInt32
        var operation: scmp_compare
        var datumA: UInt64
        var datumB: UInt64 = 0
    }

    var syscall: String
    var action: SeccompPolicy.Action
    var comparisons: [Comparison]
}

extension SeccompPolicy {
    /// The rules in force with `features` on, ready for libseccomp. A
    /// condition with several values becomes one rule per value (libseccomp
    /// ORs the rules of a syscall and ANDs the comparisons of a rule); a
    /// 32-bit `eq` compares the low 32 bits only, as the kernel reads them.
    func compile(features: Set<String>, ownPID: Int32) throws -> [CompiledRule] {
        for f in features.sorted() where self.features[f] == nil {
            throw SeccompPolicyError(source: source, path: "features", message: "unknown feature \"\(f)\"; the file declares \(self.features.keys.sorted().joined(separator: ", "))")
        }
        var out: [CompiledRule] = []
        for sc in syscalls {
            if sc.rules.isEmpty {
                out.append(CompiledRule(syscall: sc.name, action: sc.action, comparisons: []))
                continue
            }
            for rule in sc.rules where rule.feature.map(features.contains) ?? true {
                var alternatives: [[CompiledRule.Comparison]] = [[]]
                for c in rule.conditions {
                    let options = try c.values.map { try comparison(c, value: $0, ownPID: ownPID, syscall: sc.name) }
                    alternatives = alternatives.flatMap { prefix in options.map { prefix + [$0] } }
                }
                out += alternatives.map { CompiledRule(syscall: sc.name, action: sc.action, comparisons: $0) }
            }
        }
        return out
    }

    private func comparison(_ c: ArgumentCondition, value: Value, ownPID: Int32, syscall: String) throws -> CompiledRule.Comparison {
        let v = value.resolved(ownPID: ownPID)
        let low32: UInt64 = 0xffff_ffff
        let index = UInt32(c.index)
        switch c.operation {
        case .eq:
            return c.width == 32 ? .init(index: index, operation: SCMP_CMP_MASKED_EQ, datumA: low32, datumB: v & low32)
                                 : .init(index: index, operation: SCMP_CMP_EQ, datumA: v)
        case .maskedEq:
            var mask = c.mask!.resolved(ownPID: ownPID)
            if c.width == 32 { mask &= low32 }
            guard v & ~mask == 0 else {
                throw SeccompPolicyError(source: source, path: syscall, message: "value \(value) has bits outside mask \(c.mask!) and would never match")
            }
            return .init(index: index, operation: SCMP_CMP_MASKED_EQ, datumA: mask, datumB: v)
        case .ne: return .init(index: index, operation: SCMP_CMP_NE, datumA: v)
        case .lt: return .init(index: index, operation: SCMP_CMP_LT, datumA: v)
        case .le: return .init(index: index, operation: SCMP_CMP_LE, datumA: v)
        case .gt: return .init(index: index, operation: SCMP_CMP_GT, datumA: v)
        case .ge: return .init(index: index, operation: SCMP_CMP_GE, datumA: v)
        }
    }
}

/// The action the filter takes on a call no rule allows.
enum DefaultAction: Equatable {
    /// SIGSYS to the calling thread: the violation report names the call, then the process dies by SIGSYS.
    case trap
    /// The kernel's audit log records the call, which then runs.
    case log
    /// The call fails with this errno (tests: a distinctive one proves the filter refused it).
    case errno(Int32)
    /// The kernel kills the process at once, with no report.
    case killProcess

    var libseccompAction: UInt32 {
        switch self {
        case .trap: return SCMP_ACT_TRAP
        case .log: return SCMP_ACT_LOG
        case .errno(let e): return 0x0005_0000 | (UInt32(e) & 0xffff) // SCMP_ACT_ERRNO(e)
        case .killProcess: return SCMP_ACT_KILL_PROCESS
        }
    }
}

extension SeccompPolicy.Action {
    var libseccompAction: UInt32 {
        switch self {
        case .allow: return SCMP_ACT_ALLOW
        case .errno(let e, _): return DefaultAction.errno(e).libseccompAction
        }
    }
}

/// Builds the filter with libseccomp and loads it on every thread.
enum SeccompFilter {
    /// Every syscall named by `rules` must exist on this architecture: a
    /// misspelt name in the data file is an error, not a silent hole.
    static func resolve(_ rules: [CompiledRule], system: SandboxSystem) throws -> [String: Int32] {
        var numbers: [String: Int32] = [:]
        for name in Set(rules.map(\.syscall)).sorted() {
            guard let n = system.resolveSyscallName(name) else {
                throw SandboxError(step: .filter, message: "libseccomp does not know the syscall \"\(name)\" on this architecture")
            }
            numbers[name] = n
        }
        return numbers
    }

    /// Loads `rules` over `defaultAction`, synchronized to all threads
    /// (`SECCOMP_FILTER_FLAG_TSYNC`). Returns the number of rules loaded.
    @discardableResult
    static func load(_ rules: [CompiledRule], numbers: [String: Int32], defaultAction: DefaultAction,
                     system: SandboxSystem) throws -> Int {
        guard let ctx = system.seccompInit(defaultAction.libseccompAction) else {
            throw SandboxError(step: .filter, message: "seccomp_init failed (does the kernel support the default action \(defaultAction)?)")
        }
        defer { system.seccompRelease(ctx) }
        func attr(_ a: scmp_filter_attr, _ value: UInt32, _ what: String) throws {
            let e = system.seccompAttrSet(ctx, a, value)
            if e != 0 { throw SandboxError(step: .filter, call: "seccomp_attr_set(\(what))", errno: e) }
        }
        // A call from another ABI (i386 int 0x80, x32) gets the default action too.
        try attr(SCMP_FLTATR_ACT_BADARCH, defaultAction.libseccompAction, "SCMP_FLTATR_ACT_BADARCH")
        try attr(SCMP_FLTATR_CTL_TSYNC, 1, "SCMP_FLTATR_CTL_TSYNC")
        // The kernel's own errno from seccomp(2) (not ECANCELED), for a message that says what went wrong.
        _ = system.seccompAttrSet(ctx, SCMP_FLTATR_API_SYSRAWRC, 1)
        for rule in rules {
            let args = rule.comparisons.map {
                scmp_arg_cmp(arg: $0.index, op: $0.operation, datum_a: $0.datumA, datum_b: $0.datumB)
            }
            let e = system.seccompRuleAdd(ctx, rule.action.libseccompAction, numbers[rule.syscall]!, args)
            if e != 0 { throw SandboxError(step: .filter, call: "seccomp_rule_add_array(\(rule.syscall))", errno: e) }
        }
        let e = system.seccompLoad(ctx)
        if e != 0 { throw SandboxError(step: .filter, call: "seccomp_load", errno: e) }
        return rules.count
    }
}
