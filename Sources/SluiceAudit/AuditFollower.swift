#if canImport(Glibc)
import Glibc
#endif

/// Follows the active file of a live log, like `tail -F`: it returns
/// complete lines as they are appended, and across a rotation it finishes
/// the renamed file before it moves on to the new one, so no record is
/// skipped. Poll it; it never blocks.
public final class AuditFollower {
    public struct Line: Sendable {
        /// The line without its newline.
        public var bytes: [UInt8]
        /// The file it was read from, under the name it had when opened.
        public var file: String
        /// False for the torn end of a file that was rotated away.
        public var terminated = true
    }

    /// Something the follower noticed that the operator should know.
    public enum Notice: Equatable, Sendable {
        case rotated
        /// The file got shorter than what was already read (a torn tail was
        /// cut by a restarted writer, or someone cut the file).
        case truncated(from: Int64, to: Int64)
    }

    public let path: String
    private var fd: Int32 = -1
    private var inode: UInt64 = 0
    private var offset: Int64 = 0
    private var partial: [UInt8] = []
    public private(set) var notices: [Notice] = []

    /// Opens `path` (if it exists yet) and starts after its last `lines`
    /// complete lines, which the first `poll()` returns.
    public init(path: String, startingWithLast lines: Int) throws {
        self.path = path
        guard try openCurrent() else { return }
        let size = Int64(try AuditSys.status(of: fd, path: path).st_size)
        let tail = try FileTail.read(fd: fd, path: path, size: size, lines: lines)
        offset = tail.lines.first?.offset ?? tail.tornOffset
    }

    deinit { if fd >= 0 { AuditSys.close(fd) } }

    /// Tests: runs just before the active file is opened after a
    /// rotation, to rotate again in between.
    var beforeOpeningActive: (() -> Void)?

    /// The name the open file is read under: a rotated file's, or nil for
    /// the active path.
    private var currentName: String?

    /// The lowest-numbered rotated file above `number`.
    private func nextRotated(after number: Int) throws -> (number: Int, path: String)? {
        try AuditLogFiles.numbered(path).first { $0.number > number }
    }

    /// Switches to a rotated file (false if it is gone).
    private func openFile(_ file: String) throws -> Bool {
        guard let nfd = try? AuditSys.open(file, O_RDONLY) else { return false }
        try follow(nfd, name: file)
        return true
    }

    /// Reads `newFD` from its start from now on, under `name` (nil: the
    /// active path).
    private func follow(_ newFD: Int32, name: String?) throws {
        if fd >= 0 { AuditSys.close(fd) }
        fd = newFD
        inode = UInt64(try AuditSys.status(of: fd, path: name ?? path).st_ino)
        offset = 0
        partial = []
        currentName = name
    }

    private func openCurrent() throws -> Bool {
        let newFD: Int32
        do {
            newFD = try AuditSys.open(path, O_RDONLY)
        } catch {
            if errno == ENOENT { return false }
            throw error
        }
        try follow(newFD, name: nil)
        return true
    }

    /// The complete lines appended since the last call.
    public func poll() throws -> [Line] {
        notices.removeAll()
        if fd < 0 {
            guard try openCurrent() else { return [] }
        }
        var out = try readAvailable(name: currentName)
        // Rotated away (renamed, or deleted and recreated): the writer has
        // finished with the old file, so what it holds now is all of it.
        // Several rotations may have happened since the last poll, and more
        // may happen while this runs: files are renamed to ever higher
        // numbers, so after ours comes the lowest-numbered rotated file
        // above it, or else the active file. Each file is finished before
        // the next is opened, and the active file counts only once no
        // rotated file above ours turned up after it was opened.
        while let st = try AuditSys.status(of: path), UInt64(st.st_ino) != inode {
            out += try finishFile(name: currentName)
            notices.append(.rotated)
            let ours = try AuditLogFiles.numbered(path).first { try AuditSys.status(of: $0.path).map { UInt64($0.st_ino) } == inode }?.number
            if let ours, let next = try nextRotated(after: ours), try openFile(next.path) {
                out += try readAvailable(name: next.path)
                continue
            }
            beforeOpeningActive?()
            guard try openCurrent() else { break }
            // A rotation between the listing and the open: the file after
            // ours is a rotated one that is not the file just opened.
            if let ours, let slipped = try nextRotated(after: ours),
               try AuditSys.status(of: slipped.path).map({ UInt64($0.st_ino) }) != inode, try openFile(slipped.path) {
                out += try readAvailable(name: slipped.path)
                continue
            }
            out += try readAvailable()
        }
        return out
    }

    /// A torn tail in a finished file stays torn; hand it over so the caller
    /// sees it, marked by the missing newline.
    private func finishFile(name: String? = nil) throws -> [Line] {
        var out = try readAvailable(name: name)
        if !partial.isEmpty {
            out.append(Line(bytes: partial, file: name ?? path, terminated: false))
            partial = []
        }
        return out
    }

    private func readAvailable(name: String? = nil) throws -> [Line] {
        let path = name ?? self.path
        let size = Int64(try AuditSys.status(of: fd, path: path).st_size)
        if size < offset {
            notices.append(.truncated(from: offset, to: size))
            let complete = offset - Int64(partial.count)
            partial = []
            offset = min(complete, size)
        }
        var out = [Line]()
        while offset < size {
            let chunk = try AuditSys.pread(fd, count: Int(min(size - offset, 1 << 20)), offset: offset, path: path)
            if chunk.isEmpty { break }
            offset += Int64(chunk.count)
            var start = 0
            while let nl = chunk[start...].firstIndex(of: 0x0a) {
                out.append(Line(bytes: partial + chunk[start..<nl], file: path))
                partial = []
                start = nl + 1
            }
            partial += chunk[start...]
        }
        return out
    }
}
