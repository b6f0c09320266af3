#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import Synchronization

/// Yardsticks for the control-verb and wake-up tables: the kernel's part
/// of a control verb (a request and reply on a SEQPACKET socket), the copy
/// a registration makes, and a sleeping thread woken through poll().
enum ControlBaselines {
    /// A 64-byte request and reply over an AF_UNIX SEQPACKET socket pair,
    /// one blocking thread per side: the transport of a control verb.
    static func seqpacketRoundTrip(samples n: Int) throws -> LatencySummary {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemCallError("socketpair(SEQPACKET)", errno)
        }
        let (a, b) = (fds[0], fds[1])
        defer {
            close(a)
            close(b)
        }
        // Receives time out, so a lost reply is an error, not a hang.
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        for fd in [a, b] { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size)) }
        let samples = try runPair(passive: { control in
            defer { shutdown(b, Int32(SHUT_RDWR)) }
            var msg = [UInt8](repeating: 0, count: 64)
            while !control.isFinished && !control.isAborted {
                let r = retryingEINTR { recv(b, &msg, 64, 0) }
                if r == 0 { return }
                if r < 0 {
                    if errno == EAGAIN { continue }
                    throw SystemCallError("recv(SEQPACKET echo)", errno)
                }
                guard retryingEINTR({ send(b, &msg, r, Int32(MSG_NOSIGNAL)) }) == r else { throw SystemCallError("send(SEQPACKET echo)", errno) }
            }
        }, active: { _ -> [UInt64] in
            defer { shutdown(a, Int32(SHUT_WR)) }
            var msg = [UInt8](repeating: 7, count: 64)
            var out = [UInt64]()
            out.reserveCapacity(n)
            for i in 0..<(n + n / 10) {
                let t0 = monotonicNanos()
                guard retryingEINTR({ send(a, &msg, 64, Int32(MSG_NOSIGNAL)) }) == 64 else { throw SystemCallError("send(SEQPACKET)", errno) }
                guard retryingEINTR({ recv(a, &msg, 64, 0) }) == 64 else { throw SystemCallError("recv(SEQPACKET reply)", errno) }
                if i >= n / 10 { out.append(monotonicNanos() &- t0) }
            }
            return out
        })
        return LatencySummary(nanos: samples)
    }

    /// One memcpy of `bytes` into a fresh destination (as a registration
    /// copies an application's pages into a new memfd), `samples` times.
    static func copyTime(bytes: Int, samples n: Int) throws -> LatencySummary {
        let src = try PageBuffer(bytes: bytes)
        defer { src.free() }
        memset(src.base, 0x5a, bytes)
        var out = [UInt64]()
        for _ in 0..<max(1, n) {
            let dst = try PageBuffer(bytes: bytes)
            let t0 = monotonicNanos()
            memcpy(dst.base, src.base, bytes)
            out.append(monotonicNanos() &- t0)
            dst.free()
        }
        return LatencySummary(nanos: out)
    }

    /// A thread blocked in poll() on a datagram socket (epoll_wait, which
    /// the router sleeps in, is not in Swift's Glibc module; both sleep on
    /// the socket's wait queue); after `gap` of
    /// quiet, one byte is sent and the time until the thread's reply (a
    /// shared counter) is seen is one sample: the kernel's part of waking a
    /// sleeping router through its doorbell.
    static func datagramWake(samples n: Int, gapNanos: UInt64) throws -> LatencySummary {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw SystemCallError("socketpair(DGRAM)", errno)
        }
        let (a, b) = (fds[0], fds[1])
        defer {
            close(a)
            close(b)
        }
        final class Counter { let seen = Atomic<UInt64>(0) }
        let counter = Counter()
        let samples = try runPair(passive: { control in
            var pfd = pollfd(fd: b, events: Int16(POLLIN), revents: 0)
            var byte: UInt8 = 0
            while !control.isFinished && !control.isAborted {
                let r = poll(&pfd, 1, 200)
                if r < 0 && errno != EINTR { throw SystemCallError("poll", errno) }
                if r <= 0 { continue }
                while recv(b, &byte, 1, Int32(MSG_DONTWAIT)) == 1 {
                    counter.seen.add(1, ordering: .releasing)
                }
            }
        }, active: { _ -> [UInt64] in
            var out = [UInt64]()
            var byte: UInt8 = 1
            for i in 0..<n {
                sleepNanos(gapNanos)
                let t0 = monotonicNanos()
                guard send(a, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { throw SystemCallError("send(doorbell)", errno) }
                while counter.seen.load(ordering: .acquiring) < UInt64(i + 1) {
                    if monotonicNanos() &- t0 > 10_000_000_000 { throw BenchFailure("the poll() thread did not wake within 10 s") }
                }
                out.append(monotonicNanos() &- t0)
            }
            return out
        })
        return LatencySummary(nanos: samples)
    }
}
