/// The one JSON dialect the audit log speaks, in both directions.
///
/// Writing: objects with keys sorted by their UTF-8 bytes, no whitespace,
/// strings escaped minimally (see `appendString`), integers in plain decimal.
/// Reading: a strict RFC 8259 parser that keeps numbers as their text (so no
/// precision is lost and non-canonical spellings can be told apart) and
/// rejects duplicate keys, invalid UTF-8 and lone surrogates.
public enum JSONValue: Equatable, Sendable {
    case string(String)
    /// The number exactly as written.
    case number(String)
    case object([String: JSONValue])
    case array([JSONValue])
    case bool(Bool)
    case null

    var kindName: String {
        switch self {
        case .string: return "a string"
        case .number: return "a number"
        case .object: return "an object"
        case .array: return "an array"
        case .bool: return "a boolean"
        case .null: return "null"
        }
    }
}

public struct JSONSyntaxError: Error, CustomStringConvertible, Equatable {
    /// Byte offset in the line where parsing stopped.
    public var offset: Int
    public var message: String
    public var description: String { "\(message) at byte \(offset + 1)" }
}

enum CanonicalJSON {
    /// Appends `s` as a JSON string: `"` and `\` are escaped, control
    /// characters U+0000–U+001F become `\b \t \n \f \r` or `\u00xx`
    /// (lowercase hex); everything else, `/` and non-ASCII included, is
    /// written as its UTF-8 bytes.
    static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        var s = s
        s.withUTF8 { utf8 in
            var runStart = 0
            for i in 0..<utf8.count {
                let b = utf8[i]
                guard b < 0x20 || b == 0x22 || b == 0x5c else { continue }
                if runStart < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart..<i])) }
                runStart = i + 1
                switch b {
                case 0x22: out.append(contentsOf: [0x5c, 0x22])
                case 0x5c: out.append(contentsOf: [0x5c, 0x5c])
                case 0x08: out.append(contentsOf: [0x5c, 0x62])
                case 0x09: out.append(contentsOf: [0x5c, 0x74])
                case 0x0a: out.append(contentsOf: [0x5c, 0x6e])
                case 0x0c: out.append(contentsOf: [0x5c, 0x66])
                case 0x0d: out.append(contentsOf: [0x5c, 0x72])
                default:
                    out.append(contentsOf: [0x5c, 0x75, 0x30, 0x30, hexDigits[Int(b >> 4)], hexDigits[Int(b & 0xf)]])
                }
            }
            if runStart < utf8.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[runStart...])) }
        }
        out.append(0x22)
    }

    static func appendKey(_ key: String, to out: inout [UInt8]) {
        appendString(key, to: &out)
        out.append(0x3a)
    }

    static func appendInteger<T: BinaryInteger>(_ v: T, to out: inout [UInt8]) {
        out.append(contentsOf: String(v).utf8)
    }

    /// A string-to-string object with keys in UTF-8 byte order.
    static func appendStringObject(_ dict: [String: String], to out: inout [UInt8]) {
        out.append(0x7b)
        var first = true
        for key in sortedKeys(dict) {
            if !first { out.append(0x2c) }
            first = false
            appendKey(key, to: &out)
            appendString(dict[key]!, to: &out)
        }
        out.append(0x7d)
    }

    /// Keys ordered by their UTF-8 bytes (Swift's `<` on String is not byte
    /// order for every string).
    static func sortedKeys<V>(_ dict: [String: V]) -> [String] {
        dict.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(hexDigits[Int(b >> 4)])
            out.append(hexDigits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isLowerHex(_ s: String, count: Int) -> Bool {
        var n = 0
        for b in s.utf8 {
            guard (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66) else { return false }
            n += 1
        }
        return n == count
    }

    // MARK: parsing

    static func parse<C: Collection>(_ bytes: C) throws -> JSONValue where C.Element == UInt8 {
        let array = Array(bytes)
        return try array.withUnsafeBufferPointer { buf in
            var p = Parser(bytes: buf)
            p.skipWhitespace()
            let v = try p.value(depth: 0)
            p.skipWhitespace()
            guard p.i == buf.count else { throw p.error("unexpected bytes after the JSON value") }
            return v
        }
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        func error(_ message: String) -> JSONSyntaxError { JSONSyntaxError(offset: i, message: message) }

        mutating func skipWhitespace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0a || bytes[i] == 0x0d { i += 1 }
        }

        mutating func expect(_ literal: String) throws {
            for b in literal.utf8 {
                guard i < bytes.count, bytes[i] == b else { throw error("invalid literal") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 32 else { throw error("nested too deeply") }
            guard i < bytes.count else { throw error("unexpected end of line") }
            switch bytes[i] {
            case 0x7b: return try object(depth: depth)
            case 0x5b: return try array(depth: depth)
            case 0x22: return .string(try string())
            case 0x74: try expect("true"); return .bool(true)
            case 0x66: try expect("false"); return .bool(false)
            case 0x6e: try expect("null"); return .null
            case 0x2d, 0x30...0x39: return .number(try number())
            default: throw error("unexpected character")
            }
        }

        mutating func object(depth: Int) throws -> JSONValue {
            i += 1
            var dict = [String: JSONValue]()
            skipWhitespace()
            if i < bytes.count, bytes[i] == 0x7d {
                i += 1
                return .object(dict)
            }
            while true {
                skipWhitespace()
                guard i < bytes.count, bytes[i] == 0x22 else { throw error("expected a key") }
                let keyStart = i
                let key = try string()
                guard dict[key] == nil else { throw JSONSyntaxError(offset: keyStart, message: "duplicate key \"\(key)\"") }
                skipWhitespace()
                guard i < bytes.count, bytes[i] == 0x3a else { throw error("expected ':'") }
                i += 1
                skipWhitespace()
                dict[key] = try value(depth: depth + 1)
                skipWhitespace()
                guard i < bytes.count else { throw error("unexpected end of line") }
                if bytes[i] == 0x2c { i += 1; continue }
                if bytes[i] == 0x7d { i += 1; return .object(dict) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            i += 1
            var items = [JSONValue]()
            skipWhitespace()
            if i < bytes.count, bytes[i] == 0x5d {
                i += 1
                return .array(items)
            }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard i < bytes.count else { throw error("unexpected end of line") }
                if bytes[i] == 0x2c { i += 1; continue }
                if bytes[i] == 0x5d { i += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func number() throws -> String {
            let start = i
            if bytes[i] == 0x2d { i += 1 }
            guard i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 else { throw error("invalid number") }
            if bytes[i] == 0x30 {
                i += 1
            } else {
                while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            }
            if i < bytes.count, bytes[i] == 0x2e {
                i += 1
                guard i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 else { throw error("invalid number") }
                while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            }
            if i < bytes.count, bytes[i] == 0x65 || bytes[i] == 0x45 {
                i += 1
                if i < bytes.count, bytes[i] == 0x2b || bytes[i] == 0x2d { i += 1 }
                guard i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 else { throw error("invalid number") }
                while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { i += 1 }
            }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[i]
                let d: UInt8
                switch b {
                case 0x30...0x39: d = b - 0x30
                case 0x61...0x66: d = b - 0x61 + 10
                case 0x41...0x46: d = b - 0x41 + 10
                default: throw error("invalid \\u escape")
                }
                v = v << 4 | UInt32(d)
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1
            var out = [UInt8]()
            var runStart = i
            while true {
                guard i < bytes.count else { throw error("unterminated string") }
                let b = bytes[i]
                if b == 0x22 {
                    out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                    i += 1
                    break
                }
                if b < 0x20 { throw error("control character in a string") }
                if b != 0x5c {
                    i += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                i += 1
                guard i < bytes.count else { throw error("unterminated escape") }
                let e = bytes[i]
                i += 1
                switch e {
                case 0x22: out.append(0x22)
                case 0x5c: out.append(0x5c)
                case 0x2f: out.append(0x2f)
                case 0x62: out.append(0x08)
                case 0x66: out.append(0x0c)
                case 0x6e: out.append(0x0a)
                case 0x72: out.append(0x0d)
                case 0x74: out.append(0x09)
                case 0x75:
                    var scalar = try hex4()
                    if scalar >= 0xd800 && scalar < 0xdc00 {
                        guard i + 2 <= bytes.count, bytes[i] == 0x5c, bytes[i + 1] == 0x75 else { throw error("lone surrogate") }
                        i += 2
                        let low = try hex4()
                        guard low >= 0xdc00 && low < 0xe000 else { throw error("lone surrogate") }
                        scalar = 0x10000 + ((scalar - 0xd800) << 10) + (low - 0xdc00)
                    } else if scalar >= 0xdc00 && scalar < 0xe000 {
                        throw error("lone surrogate")
                    }
                    out.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
                default:
                    throw error("invalid escape")
                }
                runStart = i
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw error("invalid UTF-8 in a string") }
            return s
        }
    }
}
