/// One thing wrong with a policy file, at a place in it:
///
///     policies/beta.yaml:14:17: spec.quotas.queuePairs: Invalid value: -1: must be >= 0
///         queuePairs: -1
///                     ^^
///
/// The message is in the Kubernetes field-error style (`Invalid value`,
/// `Unsupported value`, `Required value`, `Duplicate value`, `Unknown field`,
/// `Invalid type`); the rendering follows minijail's policy parser.
public struct PolicyError: Error, Equatable, Sendable, CustomStringConvertible {
    public let file: String
    /// 1-based; 0 when the error is about the file as a whole.
    public let line: Int
    /// 1-based, in Unicode scalars (as libyaml counts).
    public let column: Int
    /// The field path, `spec.quotas.queuePairs`; empty for YAML syntax errors
    /// and whole-file errors.
    public let field: String
    public let message: String
    /// The source line the error points into, without its line break.
    public let sourceLine: String?
    /// How many carets to draw under the token (at least 1).
    public let tokenLength: Int

    public init(file: String, line: Int = 0, column: Int = 0, field: String = "", message: String,
                sourceLine: String? = nil, tokenLength: Int = 1) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
        self.sourceLine = sourceLine
        self.tokenLength = max(1, tokenLength)
    }

    /// `file:line:col: field: message`, the first line of `description`.
    public var headline: String {
        let place = line > 0 ? "\(file):\(line):\(column)" : file
        return field.isEmpty ? "\(place): \(message)" : "\(place): \(field): \(message)"
    }

    /// The headline, then the source line and a caret under the token, each
    /// indented by four spaces.
    public var description: String {
        guard let source = sourceLine, line > 0, column > 0 else { return headline }
        // Keep tabs so the caret lines up with what the terminal shows.
        let lead = source.unicodeScalars.prefix(column - 1).map { $0 == "\t" ? "\t" : " " }.joined()
        let room = max(1, source.unicodeScalars.count - (column - 1))
        return headline + "\n    " + source + "\n    " + lead + String(repeating: "^", count: min(tokenLength, room))
    }
}

/// Every error found while loading a file or a directory. Loading reports
/// them all at once, sorted by file and place, and loads nothing.
public struct PolicyLoadError: Error, Equatable, Sendable, CustomStringConvertible {
    public let errors: [PolicyError]

    public init(_ errors: [PolicyError]) {
        self.errors = errors
    }

    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }
}
