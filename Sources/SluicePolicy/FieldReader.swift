import Yams

/// Walks a composed document field by field, collecting every error with its
/// place instead of stopping at the first. Each accessor returns nil when the
/// value is unusable; the error is already recorded.
final class FieldReader {
    let doc: YAMLDocument
    private(set) var errors: [PolicyError] = []

    init(_ doc: YAMLDocument) {
        self.doc = doc
    }

    // MARK: errors

    func fail(_ node: Node, _ field: String, _ message: String) {
        guard let at = Position(node.mark) else {
            errors.append(PolicyError(file: doc.file, field: field, message: message))
            return
        }
        errors.append(YAMLDocument.error(doc.file, doc.lines, at, field, message, tokenLength: tokenLength(node)))
    }

    /// A mapping with the keys it may hold; reports a wrong type, keys that
    /// are not strings, unknown keys and repeated keys.
    func mapping(_ node: Node, _ path: String, allowed: [String]) -> Fields? {
        guard let m = node.mapping else {
            fail(node, path, "Invalid type: expected a mapping, got \(kind(node))")
            return nil
        }
        var fields = Fields(node: node, path: path)
        var seen: [String: Node] = [:]
        for (keyNode, value) in m {
            guard case .scalar = keyNode, let key = keyName(keyNode) else {
                fail(keyNode, path, "Invalid key: keys must be strings")
                continue
            }
            let field = join(path, key)
            if let first = seen[key] {
                let line = first.mark.map { " at line \($0.line)" } ?? ""
                fail(keyNode, field, "Duplicate value: \"\(key)\": already set\(line)")
                continue
            }
            seen[key] = keyNode
            guard allowed.contains(key) else {
                fail(keyNode, field, "Unknown field: supported fields here: \(allowed.sorted().joined(separator: ", "))")
                continue
            }
            fields.entries[key] = (keyNode, value)
        }
        return fields
    }

    struct Fields {
        let node: Node
        let path: String
        var entries: [String: (key: Node, value: Node)] = [:]

        subscript(_ key: String) -> Node? { entries[key]?.value }
    }

    func required(_ fields: Fields, _ key: String) -> Node? {
        if let v = fields[key] { return v }
        fail(fields.node, join(fields.path, key), "Required value")
        return nil
    }

    func sequence(_ node: Node, _ path: String, of what: String) -> [Node]? {
        guard let s = node.sequence else {
            fail(node, path, "Invalid type: expected a list of \(what), got \(kind(node))")
            return nil
        }
        return Array(s)
    }

    // MARK: scalars

    /// A non-empty string, plain or quoted. A plain scalar YAML would read as
    /// a number, a boolean or null is refused: quote it if you mean a string.
    func string(_ node: Node, _ path: String) -> String? {
        guard let s = node.scalar, kind(node) == "a string", !s.string.isEmpty else {
            fail(node, path, "Invalid type: expected a string, got \(kind(node))")
            return nil
        }
        return s.string
    }

    /// `true` or `false`, plain. YAML 1.1's other spellings (`yes`, `on`)
    /// are refused: a policy should say exactly what it means.
    func boolean(_ node: Node, _ path: String) -> Bool? {
        guard let s = node.scalar, s.style == .plain, s.string == "true" || s.string == "false" else {
            fail(node, path, "Invalid type: expected true or false, got \(kind(node) == "a boolean" ? "\"\(node.scalar?.string ?? "")\"" : kind(node))")
            return nil
        }
        return s.string == "true"
    }

    /// A plain decimal integer within `range`.
    func integer(_ node: Node, _ path: String, _ range: ClosedRange<Int>) -> Int? {
        let k = kind(node)
        guard let s = node.scalar, k == "an integer" || k == "a number" || k == "a string", s.style == .plain else {
            fail(node, path, "Invalid type: expected an integer, got \(k)")
            return nil
        }
        let text = s.string
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            fail(node, path, "Invalid value: \"\(text)\": must be an integer")
            return nil
        }
        guard let v = Int(text) else {
            fail(node, path, "Invalid value: \(text): must be \(text.hasPrefix("-") ? ">= \(range.lowerBound)" : "<= \(range.upperBound)")")
            return nil
        }
        if v < range.lowerBound { fail(node, path, "Invalid value: \(text): must be >= \(range.lowerBound)"); return nil }
        if v > range.upperBound { fail(node, path, "Invalid value: \(text): must be <= \(range.upperBound)"); return nil }
        return v
    }

    /// A size (`4096`, `256Mi`, `4G`) of at most `max` bytes.
    func size(_ node: Node, _ path: String, max: UInt64 = .max) -> UInt64? {
        guard let text = unitText(node, path, expected: "a size") else { return nil }
        switch Units.parseSize(text) {
        case .success(let v) where v <= max:
            return v
        case .success:
            fail(node, path, "Invalid value: \(quotedUnlessNumber(text)): must be <= \(max) bytes")
        case .failure(.tooLarge):
            fail(node, path, "Invalid value: \(quotedUnlessNumber(text)): must be <= \(max) bytes")
        case .failure:
            fail(node, path, "Invalid value: \(quotedUnlessNumber(text)): must be a size: \(Units.sizeForms)")
        }
        return nil
    }

    /// A bandwidth (`10Gbit/s`, `1GB/s`) in bytes per second, above zero.
    func bandwidth(_ node: Node, _ path: String) -> UInt64? {
        guard let text = unitText(node, path, expected: "a bandwidth") else { return nil }
        switch Units.parseBandwidth(text) {
        case .success(0):
            fail(node, path, "Invalid value: \"\(text)\": must be > 0; omit the field for no limit")
        case .success(let v):
            return v
        case .failure(.tooLarge):
            fail(node, path, "Invalid value: \"\(text)\": too large: must be < 2^64 bytes per second")
        case .failure(.fractionalBytes):
            fail(node, path, "Invalid value: \"\(text)\": must be a whole number of bytes per second (a multiple of 8 bits)")
        case .failure(.malformed):
            fail(node, path, "Invalid value: \(quotedUnlessNumber(text)): must be a bandwidth: \(Units.bandwidthForms)")
        }
        return nil
    }

    /// An operation rate (`2M/s`, `1000/s`), above zero.
    func operationRate(_ node: Node, _ path: String) -> UInt64? {
        guard let text = unitText(node, path, expected: "an operation rate") else { return nil }
        switch Units.parseOperationRate(text) {
        case .success(0):
            fail(node, path, "Invalid value: \"\(text)\": must be > 0; omit the field for no limit")
        case .success(let v):
            return v
        case .failure(.tooLarge):
            fail(node, path, "Invalid value: \"\(text)\": too large: must be < 2^64 operations per second")
        case .failure:
            fail(node, path, "Invalid value: \(quotedUnlessNumber(text)): must be an operation rate: \(Units.operationRateForms)")
        }
        return nil
    }

    /// The text of a scalar holding a number with a unit (plain or quoted).
    private func unitText(_ node: Node, _ path: String, expected: String) -> String? {
        guard let s = node.scalar, !s.string.isEmpty, s.style != .literal, s.style != .folded else {
            fail(node, path, "Invalid type: expected \(expected), got \(kind(node))")
            return nil
        }
        if s.string.hasPrefix("-"), s.string.dropFirst().first?.isNumber == true {
            fail(node, path, "Invalid value: \(quotedUnlessNumber(s.string)): must be >= 0")
            return nil
        }
        return s.string
    }

    // MARK: helpers

    /// Where a later, set-level check can point.
    func anchor(_ node: Node) -> ErrorAnchor? {
        guard let at = Position(node.mark) else { return nil }
        let source = at.line >= 1 && at.line <= doc.lines.count ? doc.lines[at.line - 1] : nil
        return ErrorAnchor(file: doc.file, position: at, sourceLine: source, tokenLength: tokenLength(node))
    }

    func join(_ path: String, _ key: String) -> String {
        path.isEmpty ? key : "\(path).\(key)"
    }

    /// The key as written, undoing `YAMLDocument`'s renaming of repeated keys.
    private func keyName(_ node: Node) -> String? {
        if let at = Position(node.mark), let original = doc.renamedKeys[at] { return original }
        return node.scalar?.string
    }

    /// Kubernetes prints numbers bare and everything else quoted.
    func quotedUnlessNumber(_ text: String) -> String {
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        return !digits.isEmpty && digits.allSatisfy({ $0.isASCII && $0.isNumber }) ? text : "\"\(text)\""
    }

    /// What a node is, for `Invalid type` messages, by YAML 1.1's reading of
    /// plain scalars (the one a person who wrote `yes` might expect).
    func kind(_ node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let s):
            guard s.style == .plain else { return "a string" }
            let t = s.string
            if ["", "~", "null", "Null", "NULL"].contains(t) { return "null" }
            if ["true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "no", "No", "NO",
                "on", "On", "ON", "off", "Off", "OFF"].contains(t) { return "a boolean" }
            let digits = t.hasPrefix("-") || t.hasPrefix("+") ? t.dropFirst() : Substring(t)
            if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) { return "an integer" }
            if Double(t) != nil, t.contains(where: { $0.isNumber }) { return "a number" }
            return "a string"
        }
    }

    /// How many scalars of the source line the node's token covers, for the
    /// caret: a quoted scalar through its closing quote, a plain one as long
    /// as its text, a flow collection through its closing bracket.
    func tokenLength(_ node: Node) -> Int {
        guard let at = Position(node.mark), at.line >= 1, at.line <= doc.lines.count else { return 1 }
        let line = Array(doc.lines[at.line - 1].unicodeScalars)
        let start = at.column - 1
        guard start >= 0, start < line.count else { return 1 }
        let first = line[start]
        if first == "\"" || first == "'" {
            var i = start + 1
            while i < line.count {
                if first == "\"" && line[i] == "\\" { i += 2; continue }
                if line[i] == first {
                    if first == "'" && i + 1 < line.count && line[i + 1] == "'" { i += 2; continue }
                    return i - start + 1
                }
                i += 1
            }
            return line.count - start
        }
        if first == "[" || first == "{" {
            var depth = 0
            for i in start..<line.count {
                if line[i] == "[" || line[i] == "{" { depth += 1 }
                if line[i] == "]" || line[i] == "}" {
                    depth -= 1
                    if depth == 0 { return i - start + 1 }
                }
            }
            return 1
        }
        if case .scalar(let s) = node, s.style == .plain {
            return min(max(1, s.string.unicodeScalars.count), line.count - start)
        }
        return 1
    }
}

/// A place in a file kept for checks that span files (duplicate names,
/// overlapping pools, unknown peers), which run after the walk.
struct ErrorAnchor: Sendable {
    let file: String
    let position: Position
    let sourceLine: String?
    let tokenLength: Int

    func error(_ field: String, _ message: String) -> PolicyError {
        PolicyError(file: file, line: position.line, column: position.column, field: field, message: message,
                    sourceLine: sourceLine, tokenLength: tokenLength)
    }
}
