#if canImport(Glibc)
import Glibc
#endif
import SluiceWire
import CSluiceSys

/// A failed system call: the call's name and its errno.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public let call: String
    public let errno: Int32
    public init(_ call: String, _ errno: Int32) {
        self.call = call
        self.errno = errno
    }
    public var description: String { "\(call): \(String(cString: strerror(errno)))" }
}

/// Thin wrappers: every C call the router makes goes through one of these,
/// each retries EINTR explicitly and throws `SystemError` on failure.
enum Sys {
    /// Retries `body` while it fails with EINTR.
    @inline(__always)
    static func retrying<T: BinaryInteger>(_ name: String, _ body: () -> T) throws -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemError(name, e)
        }
    }

    /// `close(2)`; errors other than EBADF are ignored (the fd is gone either way).
    static func close(_ fd: Int32) {
        guard fd >= 0 else { return }
        _ = Glibc.close(fd)
    }

    /// `memfd_create(2)`, sized and sealed (shrink, grow, seal).
    static func memfdCreate(_ name: String, size: Int) throws -> Int32 {
        return try retrying("memfd_create") { sluice_memfd_sealed(name, UInt64(size)) }
    }

    /// `fstat(2)`, returning st_blksize (the page size for shmem, the huge
    /// page size for hugetlbfs).
    static func blockSize(_ fd: Int32) throws -> Int {
        var st = stat()
        _ = try retrying("fstat") { Glibc.fstat(fd, &st) }
        return Int(st.st_blksize)
    }

    /// `fstat(2)`, returning the size.
    static func fileSize(_ fd: Int32) throws -> Int {
        var st = stat()
        _ = try retrying("fstat") { Glibc.fstat(fd, &st) }
        return Int(st.st_size)
    }

    /// `pipe2(2)`: (read end, write end), close-on-exec. Each end is its own
    /// open file description, so O_NONBLOCK set here on the end the router
    /// keeps cannot be changed by the tenant holding the other end.
    static func pipe(nonblockingRead: Bool, nonblockingWrite: Bool) throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try retrying("pipe2") { sluice_pipe(&fds, nonblockingRead ? 1 : 0, nonblockingWrite ? 1 : 0) }
        return (fds[0], fds[1])
    }

    /// A datagram socket pair, both ends non-blocking: (router's end, tenant's end).
    static func datagramPair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try retrying("socketpair") { sluice_dgram_pair(&fds) }
        return (fds[0], fds[1])
    }

    /// Writes one event byte; a full pipe (EAGAIN) means the reader already
    /// has more wake-ups than it has consumed.
    static func signalByte(_ fd: Int32) {
        var one: UInt8 = 1
        while Glibc.write(fd, &one, 1) < 0 && Glibc.errno == EINTR {}
    }

    /// Empties a non-blocking pipe read end or datagram socket.
    static func drain(_ fd: Int32) {
        var buf = [UInt8](repeating: 0, count: 512)
        while true {
            let n = Glibc.read(fd, &buf, buf.count)
            if n > 0 { continue }
            if n < 0 && Glibc.errno == EINTR { continue }
            return
        }
    }

    /// A deadline `delta` after `t`, or the end of time (a shaper's wait
    /// may be `UInt64.max`: never wrap it into the past).
    static func saturatingAdd(_ t: UInt64, _ delta: UInt64) -> UInt64 {
        let (sum, overflow) = t.addingReportingOverflow(delta)
        return overflow ? .max : sum
    }

    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Number of open file descriptors of this process (for status).
    static func openFDCount() -> Int {
        guard let dir = opendir("/proc/self/fd") else { return -1 }
        defer { closedir(dir) }
        var n = 0
        while let ent = readdir(dir) {
            let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { n += 1 }
        }
        return n - 1 // the directory stream's own fd
    }
}

/// One `mmap(2)` of a shared memory file, unmapped when released. The router
/// counts live mappings so that status can prove nothing leaked.
final class SharedMapping {
    nonisolated(unsafe) static var live = 0
    nonisolated(unsafe) static var liveBytes = 0

    let base: UnsafeMutableRawPointer
    let length: Int

    init(fd: Int32, offset: Int = 0, length: Int, writable: Bool = true) throws {
        let prot = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        guard let p = Glibc.mmap(nil, length, prot, MAP_SHARED, fd, off_t(offset)), p != MAP_FAILED else {
            throw SystemError("mmap", Glibc.errno)
        }
        base = p
        self.length = length
        SharedMapping.live += 1
        SharedMapping.liveBytes += length
    }

    deinit {
        Glibc.munmap(base, length)
        SharedMapping.live -= 1
        SharedMapping.liveBytes -= length
    }
}
