import Foundation

/// The router's seccomp allowlist as its data file describes it: groups of
/// syscalls, each with the reason it is needed, optional argument rules, and
/// a list of syscalls named as forbidden so the tests probe them. Parsing is
/// strict: an unknown key, a missing comment, an unknown constant or feature,
/// a syscall listed twice or both allowed and forbidden is an error naming
/// its place in the file.
public struct SeccompPolicy: Sendable {
    /// What a matching rule does.
    public enum Action: Sendable, Equatable {
        case allow
        /// Fail the call with this errno (`clone3` → ENOSYS, so glibc falls back to `clone`).
        case errno(Int32, name: String)
    }

    /// A comparison the kernel makes on one argument register.
    public enum Operation: String, Sendable, CaseIterable {
        case eq, maskedEq, ne, lt, le, gt, ge
    }

    /// One value in a rule: a number, a spelling from the file (constants
    /// or'ed together, or an octal or hex literal), or the router's own pid
    /// (known only when the filter is loaded).
    public enum Value: Sendable, Equatable, CustomStringConvertible {
        case number(UInt64)
        case spelled(String, UInt64)
        case ownPID

        func resolved(ownPID pid: Int32) -> UInt64 {
            switch self {
            case .number(let n), .spelled(_, let n): return n
            case .ownPID: return UInt64(UInt32(bitPattern: pid))
            }
        }

        public var description: String {
            func show(_ n: UInt64) -> String { n > 9 ? "0x" + String(n, radix: 16) : String(n) }
            switch self {
            case .number(let n): return show(n)
            case .spelled(let s, let n): return s.hasPrefix("0x") ? s : "\(s) (\(show(n)))"
            case .ownPID: return "the router's own pid"
            }
        }
    }

    /// A condition on one argument. With several `values` it holds when any does.
    public struct ArgumentCondition: Sendable {
        public var index: Int
        /// 32 for int arguments (the kernel ignores the high bits), 64 for longs and pointers.
        public var width: Int
        public var operation: Operation
        public var mask: Value?
        public var values: [Value]
        public var comment: String
    }

    /// One way a call may be allowed: every condition holds.
    public struct Rule: Sendable {
        public var comment: String
        /// Only in force when this feature is on.
        public var feature: String?
        public var conditions: [ArgumentCondition]
    }

    public struct Syscall: Sendable {
        public var name: String
        public var group: String
        public var comment: String
        public var action: Action
        /// Empty: allowed whatever the arguments. Otherwise allowed when any rule in force matches.
        public var rules: [Rule]
    }

    public struct Forbidden: Sendable {
        public var name: String
        public var comment: String
    }

    public struct Group: Sendable {
        public var name: String
        public var comment: String
    }

    public var source: String
    public var comment: String
    public var features: [String: String]
    public var groups: [Group]
    public var syscalls: [Syscall]
    public var forbidden: [Forbidden]

    /// The allowlist compiled into the router (`router.seccomp.json`).
    public static func embedded() throws -> SeccompPolicy {
        try SeccompPolicy(json: PackageResources.router_seccomp_json, source: "router.seccomp.json")
    }

    public func syscall(named name: String) -> Syscall? { syscalls.first { $0.name == name } }
}

/// A mistake in the seccomp data file, with the JSON path where it is.
public struct SeccompPolicyError: Error, CustomStringConvertible, Equatable {
    public var source: String
    public var path: String
    public var message: String
    public var description: String { "\(source): \(path.isEmpty ? "" : path + ": ")\(message)" }
}

// MARK: parsing

extension SeccompPolicy {
    public init(json: [UInt8], source: String) throws {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: Data(json))
        } catch {
            throw SeccompPolicyError(source: source, path: "", message: "not valid JSON: \(error.localizedDescription)")
        }
        var reader = PolicyReader(source: source)
        self = try reader.policy(root)
    }
}

private struct PolicyReader {
    let source: String

    func fail(_ path: String, _ message: String) -> SeccompPolicyError {
        SeccompPolicyError(source: source, path: path, message: message)
    }

    func object(_ any: Any, _ path: String, allowed: Set<String>, required: Set<String>) throws -> [String: Any] {
        guard let obj = any as? [String: Any] else { throw fail(path, "expected an object") }
        for key in obj.keys.sorted() where !allowed.contains(key) {
            throw fail(path.isEmpty ? key : "\(path).\(key)", "unknown key; expected one of \(allowed.sorted().joined(separator: ", "))")
        }
        for key in required.sorted() where obj[key] == nil {
            throw fail(path, "missing \"\(key)\"")
        }
        return obj
    }

    func string(_ any: Any?, _ path: String) throws -> String {
        guard let s = any as? String else { throw fail(path, "expected a string") }
        return s
    }

    /// A comment must say something: a reviewer reads it to judge the rule.
    func comment(_ any: Any?, _ path: String) throws -> String {
        if let lines = any as? [String] { return try comment(lines.joined(separator: " "), path) }
        let s = try string(any, path).trimmingCharacters(in: .whitespaces)
        guard !s.isEmpty else { throw fail(path, "the comment is empty; say why") }
        return s
    }

    func array(_ any: Any?, _ path: String) throws -> [Any] {
        guard let a = any as? [Any] else { throw fail(path, "expected an array") }
        return a
    }

    func integer(_ any: Any?, _ path: String) throws -> Int {
        // JSONSerialization gives NSNumbers; a boolean's type is "c", a fraction's "d".
        guard let n = any as? NSNumber, ["s", "i", "l", "q", "S", "I", "L", "Q"].contains(String(cString: n.objCType)) else {
            throw fail(path, "expected an integer")
        }
        return n.intValue
    }

    mutating func policy(_ root: Any) throws -> SeccompPolicy {
        let obj = try object(root, "", allowed: ["comment", "format", "features", "groups", "forbidden"],
                             required: ["comment", "format", "groups", "forbidden"])
        let format = try string(obj["format"], "format")
        guard format == "sluice-seccomp/1" else { throw fail("format", "unsupported format \"\(format)\"; expected \"sluice-seccomp/1\"") }
        var features: [String: String] = [:]
        if let f = obj["features"] {
            guard let dict = f as? [String: Any] else { throw fail("features", "expected an object of feature: comment") }
            for (name, c) in dict { features[name] = try comment(c, "features.\(name)") }
        }
        var groups: [SeccompPolicy.Group] = []
        var syscalls: [SeccompPolicy.Syscall] = []
        var seen: [String: String] = [:]
        for (g, groupAny) in try array(obj["groups"], "groups").enumerated() {
            let gpath = "groups[\(g)]"
            let group = try object(groupAny, gpath, allowed: ["name", "comment", "syscalls"], required: ["name", "comment", "syscalls"])
            let groupName = try string(group["name"], "\(gpath).name")
            groups.append(.init(name: groupName, comment: try comment(group["comment"], "\(gpath).comment")))
            for (s, syscallAny) in try array(group["syscalls"], "\(gpath).syscalls").enumerated() {
                let spath = "\(gpath).syscalls[\(s)]"
                let sc = try syscall(syscallAny, spath, group: groupName, features: features)
                if let first = seen[sc.name] { throw fail("\(spath).name", "\(sc.name) is already listed at \(first)") }
                seen[sc.name] = spath
                syscalls.append(sc)
            }
        }
        var forbidden: [SeccompPolicy.Forbidden] = []
        for (i, any) in try array(obj["forbidden"], "forbidden").enumerated() {
            let fpath = "forbidden[\(i)]"
            let f = try object(any, fpath, allowed: ["name", "comment"], required: ["name", "comment"])
            let name = try string(f["name"], "\(fpath).name")
            if let first = seen[name] { throw fail("\(fpath).name", "\(name) is both forbidden and listed at \(first)") }
            seen[name] = fpath
            forbidden.append(.init(name: name, comment: try comment(f["comment"], "\(fpath).comment")))
        }
        return SeccompPolicy(source: source, comment: try comment(obj["comment"], "comment"), features: features,
                             groups: groups, syscalls: syscalls, forbidden: forbidden)
    }

    func syscall(_ any: Any, _ path: String, group: String, features: [String: String]) throws -> SeccompPolicy.Syscall {
        let obj = try object(any, path, allowed: ["name", "comment", "rules", "action"], required: ["name", "comment"])
        let name = try string(obj["name"], "\(path).name")
        var action = SeccompPolicy.Action.allow
        if let a = obj["action"] {
            let act = try object(a, "\(path).action", allowed: ["errno"], required: ["errno"])
            let errnoName = try string(act["errno"], "\(path).action.errno")
            guard let e = SeccompConstants.errnos[errnoName] else {
                throw fail("\(path).action.errno", "unknown errno \"\(errnoName)\"; expected one of \(SeccompConstants.errnos.keys.sorted().joined(separator: ", "))")
            }
            action = .errno(e, name: errnoName)
        }
        var rules: [SeccompPolicy.Rule] = []
        if let r = obj["rules"] {
            let list = try array(r, "\(path).rules")
            guard !list.isEmpty else { throw fail("\(path).rules", "an empty rule list would allow nothing; list the syscall under \"forbidden\" instead") }
            for (i, ruleAny) in list.enumerated() {
                rules.append(try rule(ruleAny, "\(path).rules[\(i)]", features: features))
            }
        }
        return .init(name: name, group: group, comment: try comment(obj["comment"], "\(path).comment"),
                     action: action, rules: rules)
    }

    func rule(_ any: Any, _ path: String, features: [String: String]) throws -> SeccompPolicy.Rule {
        let obj = try object(any, path, allowed: ["comment", "when", "args"], required: ["comment", "args"])
        var feature: String?
        if let w = obj["when"] {
            let name = try string(w, "\(path).when")
            guard features[name] != nil else {
                throw fail("\(path).when", "unknown feature \"\(name)\"; declare it under \"features\"")
            }
            feature = name
        }
        let list = try array(obj["args"], "\(path).args")
        guard !list.isEmpty else { throw fail("\(path).args", "a rule without argument conditions allows everything; drop \"rules\" instead") }
        var conditions: [SeccompPolicy.ArgumentCondition] = []
        for (i, condAny) in list.enumerated() {
            let c = try condition(condAny, "\(path).args[\(i)]")
            if conditions.contains(where: { $0.index == c.index }) {
                // libseccomp cannot combine two comparisons of one argument in one rule.
                throw fail("\(path).args[\(i)].index", "argument \(c.index) is already compared in this rule")
            }
            conditions.append(c)
        }
        return .init(comment: try comment(obj["comment"], "\(path).comment"), feature: feature, conditions: conditions)
    }

    func condition(_ any: Any, _ path: String) throws -> SeccompPolicy.ArgumentCondition {
        let obj = try object(any, path, allowed: ["index", "width", "op", "mask", "value", "values", "comment"],
                             required: ["index", "op", "comment"])
        let index = try integer(obj["index"], "\(path).index")
        guard (0...5).contains(index) else { throw fail("\(path).index", "argument index \(index) is not within 0...5") }
        let width = obj["width"] == nil ? 32 : try integer(obj["width"], "\(path).width")
        guard width == 32 || width == 64 else { throw fail("\(path).width", "width \(width) is neither 32 nor 64") }
        let opName = try string(obj["op"], "\(path).op")
        guard let op = SeccompPolicy.Operation(rawValue: opName) else {
            throw fail("\(path).op", "unknown op \"\(opName)\"; expected one of \(SeccompPolicy.Operation.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        if width == 32 && op != .eq && op != .maskedEq {
            throw fail("\(path).op", "\"\(opName)\" on a 32-bit argument could be passed by setting the high bits the kernel ignores; use eq or maskedEq (or width 64 for a long or pointer)")
        }
        var mask: SeccompPolicy.Value?
        if op == .maskedEq {
            guard let m = obj["mask"] else { throw fail(path, "maskedEq needs a \"mask\"") }
            mask = try value(m, "\(path).mask", width: width)
        } else if obj["mask"] != nil {
            throw fail("\(path).mask", "only maskedEq takes a mask")
        }
        var values: [SeccompPolicy.Value]
        switch (obj["value"], obj["values"]) {
        case (let v?, nil):
            values = [try value(v, "\(path).value", width: width)]
        case (nil, let vs?):
            let list = try array(vs, "\(path).values")
            guard !list.isEmpty else { throw fail("\(path).values", "an empty list matches nothing") }
            values = try list.enumerated().map { try value($1, "\(path).values[\($0)]", width: width) }
        default:
            throw fail(path, "give exactly one of \"value\" and \"values\"")
        }
        if op != .eq && op != .maskedEq && values.count > 1 {
            throw fail("\(path).values", "several values are alternatives; only eq and maskedEq take them")
        }
        return .init(index: index, width: width, operation: op, mask: mask, values: values,
                     comment: try comment(obj["comment"], "\(path).comment"))
    }

    /// A number, "0o…"/"0x…", "self", or constants joined by "|".
    func value(_ any: Any, _ path: String, width: Int) throws -> SeccompPolicy.Value {
        let limit: UInt64 = width == 32 ? UInt64(UInt32.max) : UInt64.max
        if let s = any as? String {
            if s == "self" { return .ownPID }
            if s.hasPrefix("0o"), let n = UInt64(s.dropFirst(2), radix: 8) { return try checked(.spelled(s, n), n, limit, path) }
            if s.hasPrefix("0x"), let n = UInt64(s.dropFirst(2), radix: 16) { return try checked(.spelled(s, n), n, limit, path) }
            var total: UInt64 = 0
            for part in s.split(separator: "|", omittingEmptySubsequences: false) {
                let name = part.trimmingCharacters(in: .whitespaces)
                guard let v = SeccompConstants.values[name] else {
                    throw fail(path, "unknown constant \"\(name)\"; add it to SeccompConstants with its header")
                }
                total |= v
            }
            return try checked(.spelled(s, total), total, limit, path)
        }
        let n = try integer(any, path)
        guard n >= 0 else { throw fail(path, "negative values are ambiguous; write the bit pattern in hex") }
        return try checked(.number(UInt64(n)), UInt64(n), limit, path)
    }

    func checked(_ v: SeccompPolicy.Value, _ n: UInt64, _ limit: UInt64, _ path: String) throws -> SeccompPolicy.Value {
        guard n <= limit else { throw fail(path, "0x\(String(n, radix: 16)) does not fit a 32-bit argument") }
        return v
    }
}
