extension SeccompPolicy {
    /// The effective filter as people read it: every allowed syscall with its
    /// argument rules and reason, grouped as in the data file, then the
    /// forbidden list. Rules of features that are off are shown, marked off.
    public func render(mode: SandboxMode, features on: Set<String>) -> String {
        var out: [String] = []
        let defaultAction: String
        switch mode {
        case .enforce: defaultAction = "trap: report the call on stderr, then die by SIGSYS"
        case .log: defaultAction = "log to the kernel audit log, then allow"
        case .off: defaultAction = "none: --sandbox off loads no filter"
        }
        out.append("seccomp filter from \(source) (\(syscalls.count) syscalls listed)")
        out.append("mode: \(mode.rawValue); any other syscall: \(defaultAction)")
        out.append("other ABIs (i386, x32): as any other syscall")
        if !features.isEmpty {
            out.append("features: " + features.keys.sorted().map { "\($0) \(on.contains($0) ? "on" : "off")" }.joined(separator: ", "))
        }
        let width = max(16, (syscalls.map(\.name.count).max() ?? 0) + 2)
        func pad(_ s: String) -> String { s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count) }
        let indent = String(repeating: " ", count: width + 2)
        for group in groups {
            out.append("")
            out.append("[\(group.name)] \(group.comment)")
            for sc in syscalls where sc.group == group.name {
                let action: String
                switch sc.action {
                case .allow: action = "allow"
                case .errno(let e, let name): action = "fail with \(name) (\(e))"
                }
                out.append("  " + pad(sc.name) + action + (sc.rules.isEmpty ? "" : " when") + ": " + sc.comment)
                for rule in sc.rules {
                    let state = rule.feature.map { on.contains($0) ? "[\($0)] " : "[\($0), off] " } ?? ""
                    let conditions = rule.conditions.map(Self.describe).joined(separator: " and ")
                    out.append(indent + "- " + state + conditions + "  (\(rule.comment))")
                }
            }
        }
        out.append("")
        out.append("[forbidden] named so the tests probe them; everything not listed above is refused too")
        for f in forbidden {
            out.append("  " + pad(f.name) + f.comment)
        }
        return out.joined(separator: "\n") + "\n"
    }

    static func describe(_ c: ArgumentCondition) -> String {
        let arg = "arg\(c.index) (\(c.comment))"
        let values = c.values.count == 1 ? c.values[0].description
                                         : "one of " + c.values.map(\.description).joined(separator: ", ")
        switch c.operation {
        case .eq: return "\(arg) == \(values)"
        case .maskedEq: return "\(arg) & \(c.mask!) == \(values)"
        case .ne: return "\(arg) != \(values)"
        case .lt: return "\(arg) < \(values)"
        case .le: return "\(arg) <= \(values)"
        case .gt: return "\(arg) > \(values)"
        case .ge: return "\(arg) >= \(values)"
        }
    }
}
