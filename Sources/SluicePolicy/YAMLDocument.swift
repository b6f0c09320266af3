import Yams

/// A place in a file: 1-based line and column (Unicode scalars).
struct Position: Hashable, Comparable {
    let line: Int
    let column: Int

    init(_ line: Int, _ column: Int) {
        self.line = line
        self.column = column
    }

    init?(_ mark: Mark?) {
        guard let mark else { return nil }
        self.init(mark.line, mark.column)
    }

    static func < (a: Position, b: Position) -> Bool {
        (a.line, a.column) < (b.line, b.column)
    }
}

/// One policy file composed into Yams' node tree, with what the walker needs
/// to point at the source.
struct YAMLDocument {
    let file: String
    let root: Node
    let lines: [String]
    /// Keys that repeat in their mapping. Yams refuses such a document as a
    /// whole and names only the first occurrence, without its field path; so
    /// we rename that occurrence (one scalar for another: columns stay put),
    /// compose again, and let the walker report each repetition where it is.
    /// Position of a renamed key → the key as written.
    let renamedKeys: [Position: String]

    /// Stand in for the first character of renamed keys: private-use
    /// scalars no policy key contains, a different one for each rename so
    /// that two renamed keys never collide.
    static let renameMarkers: ClosedRange<UInt32> = 0xE000...0xF8FF

    static func compose(_ text: String, file: String) -> Result<YAMLDocument, PolicyError> {
        let lines = splitLines(text)
        var current = text
        var renamed: [Position: String] = [:]
        while true {
            do {
                guard let root = try Yams.compose(yaml: current) else {
                    return .failure(PolicyError(file: file, message: "Required value: the file holds no YAML document; expected a TenantPolicy"))
                }
                return .success(YAMLDocument(file: file, root: root, lines: lines, renamedKeys: renamed))
            } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
                let at = Position(context.mark.line, context.mark.column)
                let key = duplicates.first ?? ""
                let marker = Unicode.Scalar(renameMarkers.lowerBound + UInt32(renamed.count))
                guard renamed[at] == nil, let marker, renameMarkers.contains(marker.value),
                      let edited = renameKey(in: current, at: at, to: marker) else {
                    // Not a key we can rename (an anchored or complex one):
                    // report Yams' own finding.
                    // Yams spells a key it cannot print "<uncovertable>".
                    let what = key.hasPrefix("<") ? "a key" : "\"\(key)\": the key"
                    return .failure(error(file, lines, at, "", "Duplicate value: \(what) appears more than once in its mapping"))
                }
                renamed[at] = key
                current = edited
            } catch let e as YamlError {
                return .failure(syntaxError(e, file: file, lines: lines))
            } catch {
                return .failure(PolicyError(file: file, message: "Invalid YAML: \(error)"))
            }
        }
    }

    /// Lines as libyaml counts them for our purposes (`\n`, with a `\r`
    /// before it dropped).
    static func splitLines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
    }

    private static func renameKey(in text: String, at p: Position, to marker: Unicode.Scalar) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { Array(String($0).unicodeScalars) }
        guard p.line >= 1, p.line <= lines.count else { return nil }
        var line = lines[p.line - 1]
        var i = p.column - 1
        guard i >= 0, i < line.count else { return nil }
        if line[i] == "\"" || line[i] == "'" {
            i += 1
            guard i < line.count, line[i] != line[i - 1], line[i] != "\\" else { return nil }
        } else if "[{&*!|>?".unicodeScalars.contains(line[i]) {
            return nil
        }
        line[i] = marker
        lines[p.line - 1] = line
        return lines.map { String(String.UnicodeScalarView($0)) }.joined(separator: "\n")
    }

    private static func syntaxError(_ e: YamlError, file: String, lines: [String]) -> PolicyError {
        switch e {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let what = context.map { "\($0.text), \(problem)" } ?? problem
            return error(file, lines, Position(mark.line, mark.column), "", "Invalid YAML: \(what)")
        case .reader(let problem, let offset, _, let yaml):
            guard let offset else { return PolicyError(file: file, message: "Invalid YAML: \(problem)") }
            let before = yaml.prefix(offset)
            let line = before.reduce(1) { $0 + ($1 == "\n" ? 1 : 0) }
            let column = before.split(separator: "\n", omittingEmptySubsequences: false).last.map { $0.unicodeScalars.count + 1 } ?? 1
            return error(file, lines, Position(line, column), "", "Invalid YAML: \(problem)")
        default:
            return PolicyError(file: file, message: "Invalid YAML: \(e)")
        }
    }

    static func error(_ file: String, _ lines: [String], _ p: Position, _ field: String, _ message: String,
                      tokenLength: Int = 1) -> PolicyError {
        let source = p.line >= 1 && p.line <= lines.count ? lines[p.line - 1] : nil
        return PolicyError(file: file, line: p.line, column: p.column, field: field, message: message,
                           sourceLine: source, tokenLength: tokenLength)
    }
}
