#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import SluiceWire

/// Issue 8's ring limit: a raw single-producer single-consumer ring in
/// shared memory between two processes (this one and a fork of it), laid
/// out as Sluice's rings are: free-running 32-bit indices, each written by
/// one side only, on its own cache line, published with release stores and
/// read with acquire loads. No verbs, no router, no validation: what a
/// message through shared memory costs at least, between processes.
///
/// The child runs only loads, stores, clock reads and getppid() on memory
/// mapped before the fork (nothing that allocates or takes a lock, which a
/// fork of a threaded process must not), and leaves with _exit: when its
/// parent goes away, when told to, or after 120 s whatever happens.
enum RingBaseline {
    /// Slots per ring, 8 bytes each.
    static let capacity: UInt32 = 1024
    private static let mapBytes = 4096 + 2 * Int(capacity) * 8

    /// Word offsets: ring A (parent to child) head and tail, ring B (child
    /// to parent) head and tail, the child's status and the parent's
    /// command, each on its own 64-byte line.
    private enum Word: Int {
        case headA = 0, tailA = 64, headB = 128, tailB = 192, status = 256, command = 320, detail = 384, stop = 448
    }
    private enum Status: UInt32 { case starting = 0, ready = 1, done = 2, failed = 3 }
    private enum Mode: UInt32 { case consume = 1, echo = 2 }

    private struct Shared {
        let base: UnsafeMutableRawPointer
        func word(_ w: Word) -> UnsafeMutablePointer<UInt32> { (base + w.rawValue).assumingMemoryBound(to: UInt32.self) }
        var ringA: UnsafeMutablePointer<UInt64> { (base + 4096).assumingMemoryBound(to: UInt64.self) }
        var ringB: UnsafeMutablePointer<UInt64> { (base + 4096 + Int(RingBaseline.capacity) * 8).assumingMemoryBound(to: UInt64.self) }
        func load(_ w: Word) -> UInt32 { sluice_load_acquire(word(w)) }
        func store(_ w: Word, _ v: UInt32) { sluice_store_release(word(w), v) }
    }

    /// Messages per second: the parent publishes `messages` 8-byte values
    /// (1, 2, 3, ...) one at a time, the child consumes whatever is there,
    /// checks each is the next, and publishes its tail per batch. Timed
    /// from the first publish until the child's tail covers the last one.
    static func messageRate(messages: Int, maxSeconds: Double) throws -> Throughput {
        try withChild(mode: .consume, messages: messages) { sh, child in
            let mask = capacity - 1
            var head: UInt32 = 0
            var cachedTail: UInt32 = 0
            var watch = StallWatch()
            let limit = UInt64(maxSeconds * 1e9)
            let start = monotonicNanos()
            var sent = 0
            while sent < messages {
                if head &- cachedTail == capacity {
                    cachedTail = sh.load(.tailA)
                    if head &- cachedTail == capacity {
                        try watch.idle(waitingFor: "the ring's consumer process (tail \(cachedTail), head \(head))")
                        try child.check()
                        continue
                    }
                    watch.progressed()
                }
                sh.ringA[Int(head & mask)] = UInt64(sent + 1)
                head &+= 1
                sh.store(.headA, head)
                sent += 1
                if sent & 4095 == 0 && monotonicNanos() &- start > limit { break }
            }
            // Tell the child how many there were if cut short, then wait for the drain.
            sh.store(.command, UInt32(truncatingIfNeeded: sent))
            while sh.load(.tailA) != head {
                try watch.idle(waitingFor: "the ring's consumer to drain (\(sh.load(.tailA)) of \(head))")
                try child.check()
            }
            let end = monotonicNanos()
            return Throughput(operations: sent, bytes: sent * 8, nanos: end &- start)
        }
    }

    /// Round trip of one 8-byte value: parent to child on ring A, child
    /// straight back on ring B; both sides busy-poll.
    static func pingPong(plan: LatencyPlan) throws -> LatencySummary {
        let samples = try withChild(mode: .echo, messages: 0) { sh, child -> [UInt64] in
            let mask = capacity - 1
            var head: UInt32 = 0
            var samples = [UInt64]()
            samples.reserveCapacity(plan.iterations)
            var watch = StallWatch()
            let warmupEnd = monotonicNanos() + UInt64(plan.maxWarmupSeconds * 1e9)
            var i = 0
            var timedStart: UInt64 = 0
            while samples.count < plan.iterations {
                let warming = i < plan.warmup && monotonicNanos() < warmupEnd
                if !warming && timedStart == 0 { timedStart = monotonicNanos() }
                let t0 = monotonicNanos()
                sh.ringA[Int(head & mask)] = UInt64(i)
                head &+= 1
                sh.store(.headA, head)
                while sh.load(.headB) != head {
                    try watch.idle(waitingFor: "the ring's echo process (ping \(i))")
                    try child.check()
                }
                let t1 = monotonicNanos()
                watch.progressed()
                let got = sh.ringB[Int((head &- 1) & mask)]
                guard got == UInt64(i) else { throw BenchFailure("ring ping-pong: ping \(i) came back as \(got)") }
                sh.store(.tailB, head)
                i += 1
                if !warming {
                    samples.append(t1 &- t0)
                    if t1 &- timedStart > UInt64(plan.maxSeconds * 1e9) { break }
                }
            }
            return samples
        }
        return LatencySummary(nanos: samples)
    }

    /// The forked side, as seen from the parent.
    private struct Child {
        let pid: pid_t
        let shared: Shared

        func check() throws {
            if shared.load(.status) == Status.failed.rawValue {
                throw BenchFailure("the ring's child process found a wrong value: \(shared.load(.detail))")
            }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw BenchFailure("the ring's child process (pid \(pid)) ended early (wait status \(status))")
            }
        }
    }

    /// Maps the rings, forks the child, waits (up to 5 s) for it to be
    /// ready, runs `body`, then stops the child and reaps it (SIGKILL after
    /// 5 s).
    private static func withChild<T>(mode: Mode, messages: Int, _ body: (Shared, Child) throws -> T) throws -> T {
        let p = mmap(nil, mapBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw SystemCallError("mmap(shared ring)", errno) }
        defer { munmap(p, mapBytes) }
        memset(p, 0, mapBytes)
        let sh = Shared(base: p)
        sh.store(.command, UInt32.max)
        let parent = getpid()
        let pid = fork()
        if pid < 0 { throw SystemCallError("fork", errno) }
        if pid == 0 {
            childMain(sh, mode: mode, parent: parent)
        }
        let child = Child(pid: pid, shared: sh)
        defer {
            sh.store(.stop, 1)
            let deadline = monotonicNanos() + 5_000_000_000
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                if monotonicNanos() > deadline {
                    kill(pid, SIGKILL)
                    _ = waitpid(pid, &status, 0)
                    break
                }
                usleep(1_000)
            }
        }
        let deadline = monotonicNanos() + 5_000_000_000
        while sh.load(.status) != Status.ready.rawValue {
            try child.check()
            if monotonicNanos() > deadline { throw BenchFailure("the ring's child process was not ready within 5 s") }
            usleep(100)
        }
        return try body(sh, child)
    }

    /// The child: consume (check every value, publish the tail) or echo
    /// (send each value back), until told to stop, the parent is gone, or
    /// 120 s have passed.
    private static func childMain(_ sh: Shared, mode: Mode, parent: pid_t) -> Never {
        let mask = capacity - 1
        let hardStop = monotonicNanos() + 120_000_000_000
        var tail: UInt32 = 0
        var expect: UInt64 = 1
        var spins: UInt32 = 0
        sh.store(.status, Status.ready.rawValue)
        while true {
            let head = sh.load(.headA)
            if head != tail {
                if mode == .consume {
                    while tail != head {
                        let v = sh.ringA[Int(tail & mask)]
                        if v != expect {
                            sh.store(.detail, UInt32(truncatingIfNeeded: v))
                            sh.store(.status, Status.failed.rawValue)
                            _exit(1)
                        }
                        expect &+= 1
                        tail &+= 1
                    }
                    sh.store(.tailA, tail)
                } else {
                    // Echo the one value; the parent has one in flight.
                    let v = sh.ringA[Int(tail & mask)]
                    tail &+= 1
                    sh.store(.tailA, tail)
                    sh.ringB[Int((tail &- 1) & mask)] = v
                    sh.store(.headB, tail)
                }
                continue
            }
            spins &+= 1
            if spins & 0xffff == 0 {
                let c = sh.load(.command)
                if sh.load(.stop) != 0 || (mode == .consume && c != UInt32.max && UInt32(truncatingIfNeeded: expect &- 1) == c) { break }
                if getppid() != parent || monotonicNanos() > hardStop { break }
            }
        }
        sh.store(.status, Status.done.rawValue)
        _exit(0)
    }
}
