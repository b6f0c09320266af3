#if canImport(Glibc)
import Glibc
#endif

/// The files of one log. The writer appends to the active file (`audit.log`);
/// when it grows past the rotation size it is renamed to the next free number
/// (`audit.log.1`, `audit.log.2`, …) and a new active file starts. A rotated
/// file is never renamed again, so the chain runs `audit.log.1`,
/// `audit.log.2`, …, `audit.log`: oldest first, by number.
public enum AuditLogFiles {
    /// The rotated files of `path`, oldest first.
    public static func rotated(of path: String) throws -> [String] {
        try numbered(path).map(\.path)
    }

    /// Every file of the log that exists, in chain order: rotated files
    /// oldest first, then the active file.
    public static func chainOrder(of path: String) throws -> [String] {
        var files = try rotated(of: path)
        if try AuditSys.status(of: path) != nil { files.append(path) }
        return files
    }

    static func numbered(_ path: String) throws -> [(number: Int, path: String)] {
        let dir = AuditSys.directory(of: path)
        let prefix = AuditSys.baseName(of: path) + "."
        let names: [String]
        do {
            names = try AuditSys.listDirectory(dir)
        } catch {
            return []
        }
        var found = [(Int, String)]()
        for name in names where name.hasPrefix(prefix) {
            let suffix = name.dropFirst(prefix.count)
            guard !suffix.isEmpty, suffix.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), suffix.first != "0",
                  let n = Int(suffix) else { continue }
            found.append((n, dir == "." && !path.hasPrefix("./") ? name : dir + "/" + name))
        }
        return found.sorted { $0.0 < $1.0 }
    }
}

/// One line of a log file.
struct LogLine {
    var bytes: [UInt8]
    /// 1-based.
    var number: Int
    /// Byte offset of the line's first byte.
    var offset: Int64
    /// False for a last line with no newline after it: a torn write.
    var terminated: Bool
}

/// Reads a file line by line in 1 MiB chunks, whatever its size.
final class LineReader {
    let path: String
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var bufferOffset: Int64 = 0
    private var lineNumber = 0
    private var eof = false

    init(path: String) throws {
        self.path = path
        fd = try AuditSys.open(path, O_RDONLY)
    }

    deinit { AuditSys.close(fd) }

    func next() throws -> LogLine? {
        while true {
            if let nl = buffer[start...].firstIndex(of: 0x0a) {
                lineNumber += 1
                let line = LogLine(bytes: Array(buffer[start..<nl]), number: lineNumber,
                                   offset: bufferOffset + Int64(start), terminated: true)
                start = nl + 1
                return line
            }
            if eof {
                guard start < buffer.count else { return nil }
                lineNumber += 1
                let line = LogLine(bytes: Array(buffer[start...]), number: lineNumber,
                                   offset: bufferOffset + Int64(start), terminated: false)
                start = buffer.count
                return line
            }
            bufferOffset += Int64(start)
            buffer.removeFirst(start)
            start = 0
            let chunk = try AuditSys.pread(fd, count: 1 << 20, offset: bufferOffset + Int64(buffer.count), path: path)
            if chunk.isEmpty { eof = true } else { buffer.append(contentsOf: chunk) }
        }
    }
}

/// The end of a file, read backwards: its last complete lines and any torn
/// bytes after the last newline.
struct FileTail {
    /// Up to the number of lines asked for, oldest first, with their offsets.
    var lines: [(offset: Int64, bytes: [UInt8])]
    /// Where the bytes after the last newline begin (the file size if none).
    var tornOffset: Int64
    var torn: [UInt8]

    static func read(fd: Int32, path: String, size: Int64, lines wanted: Int) throws -> FileTail {
        var buf = [UInt8]()
        var bufStart = size
        while bufStart > 0 {
            if buf.reduce(0, { $0 + ($1 == 0x0a ? 1 : 0) }) > wanted { break }
            let n = Int(min(Int64(64 << 10), bufStart))
            bufStart -= Int64(n)
            let chunk = try AuditSys.pread(fd, count: n, offset: bufStart, path: path)
            guard chunk.count == n else { throw AuditError("\(path) shrank while it was being read") }
            buf = chunk + buf
        }
        var lastNL = buf.lastIndex(of: 0x0a)
        let torn = Array(buf[(lastNL.map { $0 + 1 } ?? 0)...])
        let tornOffset = bufStart + Int64(lastNL.map { $0 + 1 } ?? 0)
        var lines = [(Int64, [UInt8])]()
        while let end = lastNL, lines.count < wanted {
            let prev = end > 0 ? buf[..<end].lastIndex(of: 0x0a) : nil
            if prev == nil && bufStart > 0 { break }
            let from = prev.map { $0 + 1 } ?? 0
            lines.append((bufStart + Int64(from), Array(buf[from..<end])))
            lastNL = prev
        }
        return FileTail(lines: lines.reversed(), tornOffset: tornOffset, torn: torn)
    }
}
