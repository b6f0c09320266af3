#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import Synchronization

/// The yardsticks Sluice is read against, measured in the same run with the
/// same shapes (message size, count, two threads, same clock).
enum Baselines {
    // MARK: latency

    /// Two threads bouncing a counter through one shared cache line: the
    /// floor for any design that passes messages through shared memory
    /// between busy-polling threads, which is what a Sluice round trip does
    /// four times (ping → router → pong → router → ping).
    static func threadHandOff(plan: LatencyPlan) throws -> LatencySummary {
        final class Ball { let value = Atomic<UInt64>(0) }
        let ball = Ball()
        let done = UInt64.max
        let samples = try runPair(passive: { _ in
            var expect: UInt64 = 1
            while true {
                let v = ball.value.load(ordering: .acquiring)
                if v == done { return }
                if v == expect {
                    ball.value.store(v + 1, ordering: .releasing)
                    expect += 2
                }
            }
        }, active: { _ -> [UInt64] in
            defer { ball.value.store(done, ordering: .releasing) }
            return timedRoundTrips(plan) { i in
                let serve = UInt64(2 * i + 1)
                ball.value.store(serve, ordering: .releasing)
                while ball.value.load(ordering: .acquiring) != serve + 1 {}
            }
        })
        return LatencySummary(nanos: samples)
    }

    /// 8-byte ping-pong over TCP on loopback, TCP_NODELAY, blocking
    /// sockets, one thread per side: what an application gets from the
    /// kernel's stack without RDMA.
    static func tcpPingPong(plan: LatencyPlan) throws -> LatencySummary {
        let (a, b) = try TCPLoopback.connectedPair()
        defer {
            close(a)
            close(b)
        }
        let samples = try runPair(passive: { _ in
            // However this side ends, the ping side's next read must return.
            defer { shutdown(b, Int32(SHUT_RDWR)) }
            var word: UInt64 = 0
            while try TCPLoopback.readFully(b, &word, 8) {
                try TCPLoopback.writeFully(b, &word, 8)
            }
        }, active: { _ -> [UInt64] in
            // Closing our write side ends the echo loop, even on error.
            defer { shutdown(a, Int32(SHUT_WR)) }
            var failure: Error?
            let samples = timedRoundTrips(plan) { i in
                guard failure == nil else { return }
                do {
                    var word = UInt64(i)
                    try TCPLoopback.writeFully(a, &word, 8)
                    guard try TCPLoopback.readFully(a, &word, 8), word == UInt64(i) else {
                        throw BenchFailure("TCP ping-pong: the echo of \(i) did not come back")
                    }
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
            return samples
        })
        return LatencySummary(nanos: samples)
    }

    /// The same ping-pong with `bytes`-byte messages (at least 8; the first
    /// 8 carry the sequence number, which the reply must echo).
    static func tcpPingPong(plan: LatencyPlan, bytes: Int) throws -> LatencySummary {
        precondition(bytes >= 8)
        let (a, b) = try TCPLoopback.connectedPair()
        defer {
            close(a)
            close(b)
        }
        let samples = try runPair(passive: { _ in
            defer { shutdown(b, Int32(SHUT_RDWR)) }
            let buf = try PageBuffer(bytes: bytes)
            defer { buf.free() }
            while try TCPLoopback.readFully(b, buf.base, bytes) {
                try TCPLoopback.writeFully(b, buf.base, bytes)
            }
        }, active: { _ -> [UInt64] in
            defer { shutdown(a, Int32(SHUT_WR)) }
            let out = try PageBuffer(bytes: bytes)
            let back = try PageBuffer(bytes: bytes)
            defer {
                out.free()
                back.free()
            }
            fillPattern(out.base, bytes)
            var failure: Error?
            let samples = timedRoundTrips(plan) { i in
                guard failure == nil else { return }
                do {
                    out.base.storeBytes(of: UInt64(i), as: UInt64.self)
                    try TCPLoopback.writeFully(a, out.base, bytes)
                    guard try TCPLoopback.readFully(a, back.base, bytes),
                          back.base.load(as: UInt64.self) == UInt64(i) else {
                        throw BenchFailure("TCP ping-pong: the echo of \(i) (\(bytes) bytes) did not come back")
                    }
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
            return samples
        })
        return LatencySummary(nanos: samples)
    }

    /// Runs `roundTrip(i)` for warm-up then timed iterations; returns the
    /// timed durations.
    private static func timedRoundTrips(_ plan: LatencyPlan, _ roundTrip: (Int) -> Void) -> [UInt64] {
        var samples = [UInt64]()
        samples.reserveCapacity(plan.iterations)
        var i = 0
        let warmupStart = monotonicNanos()
        let warmupLimit = UInt64(plan.maxWarmupSeconds * 1e9)
        while i < plan.warmup && monotonicNanos() &- warmupStart < warmupLimit {
            roundTrip(i)
            i += 1
        }
        let limit = UInt64(plan.maxSeconds * 1e9)
        let start = monotonicNanos()
        for i in i..<(i + plan.iterations) {
            let t0 = monotonicNanos()
            roundTrip(i)
            let t1 = monotonicNanos()
            samples.append(t1 &- t0)
            if t1 &- start > limit { break }
        }
        return samples
    }

    // MARK: bandwidth

    /// One core copying the same number of messages of the same size over
    /// the same buffer footprint as the RDMA WRITE run: the software
    /// fabric's work is a copy, so this is the ceiling it can approach.
    static func memcpyBandwidth(plan: BandwidthPlan) throws -> Throughput {
        let span = plan.messageBytes * plan.window
        let src = try PageBuffer(bytes: span)
        let dst = try PageBuffer(bytes: span)
        defer {
            src.free()
            dst.free()
        }
        fillPattern(src.base, span)
        memset(dst.base, 0, span)
        func run(_ count: Int, maxNanos: UInt64) -> Throughput {
            let start = monotonicNanos()
            var done = 0
            while done < count {
                let off = (done % plan.window) * plan.messageBytes
                memcpy(dst.base + off, src.base + off, plan.messageBytes)
                done += 1
                if done % 256 == 0 && monotonicNanos() &- start > maxNanos { break }
            }
            return Throughput(operations: done, bytes: done * plan.messageBytes, nanos: monotonicNanos() &- start)
        }
        _ = run(plan.warmup, maxNanos: UInt64(plan.maxWarmupSeconds * 1e9))
        let t = run(plan.operations, maxNanos: UInt64(plan.maxSeconds * 1e9))
        guard memcmp(src.base, dst.base, span) == 0 else { throw BenchFailure("memcpy baseline: copy mismatch") }
        return t
    }

    /// A TCP loopback stream of 64 KiB writes, one writer thread and one
    /// reader thread: the conventional way to move the same bytes between
    /// two processes on one host.
    static func tcpStream(plan: BandwidthPlan) throws -> Throughput {
        let (a, b) = try TCPLoopback.connectedPair()
        defer {
            close(a)
            close(b)
        }
        let chunk = plan.messageBytes
        let total = plan.warmup + plan.operations
        return try runPair(passive: { control in
            let buf = try PageBuffer(bytes: chunk)
            defer {
                buf.free()
                shutdown(a, Int32(SHUT_WR))
            }
            fillPattern(buf.base, chunk)
            for _ in 0..<total {
                if control.isAborted || control.isFinished { return }
                try TCPLoopback.writeFully(a, buf.base, chunk)
            }
        }, active: { control -> Throughput in
            let buf = try PageBuffer(bytes: chunk)
            defer { buf.free() }
            let warmBytes = plan.warmup * chunk
            let limit = UInt64(plan.maxSeconds * 1e9)
            var received = 0
            var start: UInt64 = 0
            while received < total * chunk {
                if received >= warmBytes && start == 0 { start = monotonicNanos() }
                let n = retryingEINTR { read(b, buf.base, chunk) }
                if n < 0 { throw SystemCallError("read(TCP stream)", errno) }
                if n == 0 { throw BenchFailure("TCP stream: the writer closed after \(received) bytes") }
                received += n
                if start != 0 && monotonicNanos() &- start > limit { break }
            }
            let end = monotonicNanos()
            let bytes = received - warmBytes
            // Out of time or not, let the writer stop and drain what it
            // still has in flight, so its blocking write returns.
            control.finish()
            while retryingEINTR({ read(b, buf.base, chunk) }) > 0 {}
            return Throughput(operations: bytes / chunk, bytes: bytes, nanos: end &- start)
        })
    }
}

/// An anonymous, page-aligned mapping.
struct PageBuffer {
    let base: UnsafeMutableRawPointer
    let bytes: Int

    init(bytes: Int) throws {
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw SystemCallError("mmap(\(bytes) bytes)", errno) }
        base = p
        self.bytes = bytes
    }

    func free() { munmap(base, bytes) }
}

/// Connected TCP sockets on 127.0.0.1 with Nagle off.
enum TCPLoopback {
    static func connectedPair() throws -> (Int32, Int32) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw SystemCallError("socket(AF_INET)", errno) }
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withSockaddr(&addr) { sa in
            if bind(listener, sa, len) != 0 { throw SystemCallError("bind(127.0.0.1:0)", errno) }
        }
        if listen(listener, 1) != 0 { throw SystemCallError("listen", errno) }
        try withSockaddr(&addr) { sa in
            if getsockname(listener, sa, &len) != 0 { throw SystemCallError("getsockname", errno) }
        }
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard client >= 0 else { throw SystemCallError("socket(AF_INET)", errno) }
        do {
            try withSockaddr(&addr) { sa in
                if retryingEINTR({ connect(client, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }) != 0 {
                    throw SystemCallError("connect(127.0.0.1)", errno)
                }
            }
            let server = retryingEINTR { accept(listener, nil, nil) }
            guard server >= 0 else { throw SystemCallError("accept", errno) }
            for fd in [client, server] {
                var one: Int32 = 1
                if setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size)) != 0 {
                    let e = errno
                    close(server)
                    throw SystemCallError("setsockopt(TCP_NODELAY)", e)
                }
            }
            return (client, server)
        } catch {
            close(client)
            throw error
        }
    }

    private static func withSockaddr(_ addr: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>) throws -> Void) throws {
        try withUnsafeMutablePointer(to: &addr) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0) }
        }
    }

    static func writeFully(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int) throws {
        var off = 0
        while off < count {
            let n = retryingEINTR { write(fd, p + off, count - off) }
            if n < 0 { throw SystemCallError("write(TCP)", errno) }
            off += n
        }
    }

    static func writeFully(_ fd: Int32, _ word: inout UInt64, _ count: Int) throws {
        try withUnsafeBytes(of: &word) { try writeFully(fd, $0.baseAddress!, count) }
    }

    /// Reads exactly `count` bytes into `p`; false on a clean end of stream first.
    static func readFully(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ count: Int) throws -> Bool {
        var off = 0
        while off < count {
            let n = retryingEINTR { read(fd, p + off, count - off) }
            if n < 0 { throw SystemCallError("read(TCP)", errno) }
            if n == 0 {
                if off == 0 { return false }
                throw BenchFailure("TCP: stream ended inside a message")
            }
            off += n
        }
        return true
    }

    /// Reads exactly `count` bytes; false on a clean end of stream first.
    static func readFully(_ fd: Int32, _ word: inout UInt64, _ count: Int) throws -> Bool {
        try withUnsafeMutableBytes(of: &word) { raw in
            var off = 0
            while off < count {
                let n = retryingEINTR { read(fd, raw.baseAddress! + off, count - off) }
                if n < 0 { throw SystemCallError("read(TCP)", errno) }
                if n == 0 {
                    if off == 0 { return false }
                    throw BenchFailure("TCP: stream ended inside a message")
                }
                off += n
            }
            return true
        }
    }
}
