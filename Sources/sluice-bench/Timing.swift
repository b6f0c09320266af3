#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import SluiceBenchStats

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the one clock every
/// figure in this benchmark is read from.
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Bytes moved in a measured interval.
struct Throughput {
    let operations: Int
    let bytes: Int
    let nanos: UInt64

    var gigabytesPerSecond: Double { Stats.perSecond(Double(bytes), nanos: nanos) / 1e9 }
    var operationsPerSecond: Double { Stats.perSecond(Double(operations), nanos: nanos) }
}

/// Shared between the two threads of one measurement: `finish` tells the
/// passive side the run is over; `abort` tells it the other side failed, so
/// nobody busy-polls for a completion that will never come.
final class RunControl {
    private let finished = Atomic<Bool>(false)
    private let aborted = Atomic<Bool>(false)

    func finish() { finished.store(true, ordering: .releasing) }
    func abort() { aborted.store(true, ordering: .releasing) }
    var isFinished: Bool { finished.load(ordering: .acquiring) }
    var isAborted: Bool { aborted.load(ordering: .acquiring) }
}

struct AbortedByPeer: Error, CustomStringConvertible {
    var description: String { "stopped because the other thread of this measurement failed" }
}

/// Turns a hang into an error: a busy-poll loop that sees no progress for
/// `limit` reports which wait stalled. This guards against a broken data
/// path; it is not a performance threshold.
struct StallWatch {
    private var spins: UInt32 = 0
    private var lastProgress = monotonicNanos()
    let limit: UInt64
    let control: RunControl?

    init(limitSeconds: UInt64 = 10, control: RunControl? = nil) {
        limit = limitSeconds * 1_000_000_000
        self.control = control
    }

    @inline(__always)
    mutating func progressed() {
        spins = 0
        lastProgress = monotonicNanos()
    }

    /// Call on every empty poll.
    @inline(__always)
    mutating func idle(waitingFor what: @autoclosure () -> String) throws {
        spins &+= 1
        guard spins & 1023 == 0 else { return }
        if let c = control, c.isAborted { throw AbortedByPeer() }
        if monotonicNanos() &- lastProgress > limit {
            throw BenchFailure("no progress for \(limit / 1_000_000_000) s while waiting for \(what())")
        }
    }
}

/// A joinable POSIX thread whose body may throw; `join` rethrows.
final class BenchThread {
    private final class Body {
        let run: () throws -> Void
        var error: Error?
        init(_ run: @escaping () throws -> Void) { self.run = run }
    }

    private var thread = pthread_t()
    private let body: Body

    init(_ run: @escaping () throws -> Void) throws {
        body = Body(run)
        let arg = Unmanaged.passRetained(body).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let b = Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue()
            do { try b.run() } catch { b.error = error }
            return nil
        }, arg)
        if rc != 0 {
            Unmanaged<Body>.fromOpaque(arg).release()
            throw SystemCallError("pthread_create", rc)
        }
    }

    /// Waits for the thread; the join orders its writes before our reads.
    func join() throws {
        let rc = pthread_join(thread, nil)
        if rc != 0 { throw SystemCallError("pthread_join", rc) }
        if let e = body.error { throw e }
    }
}

/// Runs `passive` on a second thread and `active` on this one: two threads
/// in total. If either fails, the other is told to stop, and the error that
/// caused it (not the other side's "aborted") is thrown after both are done.
func runPair<T>(passive: @escaping (RunControl) throws -> Void,
                active: (RunControl) throws -> T) throws -> T {
    let control = RunControl()
    let other = try BenchThread {
        do {
            try passive(control)
        } catch {
            control.abort()
            throw error
        }
    }
    let result: T
    do {
        result = try active(control)
    } catch {
        control.abort()
        do {
            try other.join()
        } catch let cause where !(cause is AbortedByPeer) {
            throw cause
        } catch {}
        throw error
    }
    control.finish()
    try other.join()
    return result
}

/// Sleeps `nanos`, resuming after a signal.
func sleepNanos(_ nanos: UInt64) {
    var request = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// When this process started measuring, for the progress lines.
let benchStartNanos = monotonicNanos()

/// When the last progress line was written, for the watchdog.
private let lastProgressNanos = Atomic<UInt64>(0)

/// A progress line on stderr, with the seconds since the start, so that a
/// slow or stuck measurement shows where the time goes.
func benchProgress(_ what: String) {
    lastProgressNanos.store(monotonicNanos(), ordering: .relaxed)
    let line = String(format: "· %6.1f s  ", Double(monotonicNanos() &- benchStartNanos) / 1e9) + what + "\n"
    fputs(line, stderr)
}

/// The harness must never hang: every wait has its own timeout, and this
/// catches whatever has none (a verb blocked on a router that is alive but
/// stuck). If no measurement starts for `seconds`, it says so and sends
/// this process SIGTERM, whose handler stops the routers first.
func startWatchdog(seconds: UInt64) {
    lastProgressNanos.store(monotonicNanos(), ordering: .relaxed)
    _ = try? BenchThread {
        while true {
            sleep(1)
            let idle = monotonicNanos() &- lastProgressNanos.load(ordering: .relaxed)
            if idle > seconds * 1_000_000_000 {
                fputs("sluice-bench: no measurement finished or started for \(seconds) s: stopping the routers and exiting (SIGTERM)\n", stderr)
                kill(getpid(), SIGTERM)
                return
            }
        }
    }
}
