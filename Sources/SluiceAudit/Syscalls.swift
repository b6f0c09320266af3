#if canImport(Glibc)
import Glibc
#endif

/// Why an audit operation failed, in words an operator can act on.
public struct AuditError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Every C call the audit library makes goes through here; each wrapper
/// names its C function and retries EINTR explicitly.
enum AuditSys {
    static func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

    static func failure(_ what: String, _ path: String, _ e: Int32 = errno) -> AuditError {
        AuditError("\(what) \(path): \(errnoText(e))")
    }

    /// `open(2)`.
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o640) throws -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw failure("cannot open", path)
        }
    }

    /// `close(2)`; EINTR is not retried (Linux closes the fd regardless).
    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// `write(2)` until every byte is written.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("cannot write", path)
                }
                off += n
            }
        }
    }

    /// `pread(2)`: up to `count` bytes at `offset`; fewer at end of file.
    static func pread(_ fd: Int32, count: Int, offset: Int64, path: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buf.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + got, count - got, off_t(offset) + off_t(got)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("cannot read", path)
            }
            if n == 0 { break }
            got += n
        }
        buf.removeLast(count - got)
        return buf
    }

    /// `fsync(2)`.
    static func fsync(_ fd: Int32, path: String) throws {
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw failure("cannot fsync", path)
        }
    }

    /// `fsync(2)` on the directory holding `path`, so that a created or
    /// renamed entry survives a crash.
    static func fsyncDirectory(of path: String) throws {
        let dir = directory(of: path)
        let fd = try open(dir, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: dir)
    }

    /// `ftruncate(2)`.
    static func truncate(_ fd: Int32, to size: Int64, path: String) throws {
        while Glibc.ftruncate(fd, off_t(size)) != 0 {
            if errno == EINTR { continue }
            throw failure("cannot truncate", path)
        }
    }

    /// `rename(2)`.
    static func rename(_ from: String, _ to: String) throws {
        guard Glibc.rename(from, to) == 0 else { throw failure("cannot rename \(from) to", to) }
    }

    /// `fstat(2)`.
    static func status(of fd: Int32, path: String) throws -> Glibc.stat {
        var st = Glibc.stat()
        guard Glibc.fstat(fd, &st) == 0 else { throw failure("cannot stat", path) }
        return st
    }

    /// `stat(2)`; nil when the path does not exist.
    static func status(of path: String) throws -> Glibc.stat? {
        var st = Glibc.stat()
        if stat(path, &st) == 0 { return st }
        if errno == ENOENT { return nil }
        throw failure("cannot stat", path)
    }

    /// `opendir(3)`/`readdir(3)`: the names in a directory.
    static func listDirectory(_ dir: String) throws -> [String] {
        guard let d = opendir(dir) else { throw failure("cannot list", dir) }
        defer { closedir(d) }
        var names = [String]()
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// `gethostname(2)`.
    static func hostname() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "localhost" }
        return String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    static func baseName(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// Reads a whole (small) file.
    static func readFile(_ path: String, limit: Int = 1 << 20) throws -> [UInt8] {
        let fd = try open(path, O_RDONLY)
        defer { close(fd) }
        let bytes = try pread(fd, count: limit + 1, offset: 0, path: path)
        guard bytes.count <= limit else { throw AuditError("\(path) is larger than \(limit) bytes") }
        return bytes
    }
}

/// A `pthread_mutex_t` with two condition variables on `CLOCK_MONOTONIC`:
/// the writer thread waits on `work`, `flush()`/`close()` callers on `done`.
final class AuditMutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let done = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(work, &attr)
        pthread_cond_init(done, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(work)
        pthread_cond_destroy(done)
        pthread_mutex_destroy(mutex)
        work.deallocate()
        done.deallocate()
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    func signalWork() { pthread_cond_signal(work) }
    func broadcastDone() { pthread_cond_broadcast(done) }
    func waitDone() { pthread_cond_wait(done, mutex) }

    /// Waits on `work` for at most `nanos` of real monotonic time (forever
    /// when nil). The mutex must be held.
    func waitWork(nanos: UInt64?) {
        guard let nanos else {
            pthread_cond_wait(work, mutex)
            return
        }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let total = UInt64(ts.tv_nsec) + min(nanos, 3_600_000_000_000)
        ts.tv_sec += Int(total / 1_000_000_000)
        ts.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(work, mutex, &ts)
    }
}
