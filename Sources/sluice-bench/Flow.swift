#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import SluiceVerbs
import SluiceWire

/// The operation a flow floods with.
enum FlowOp: String, CaseIterable {
    case write, read, send

    var opcode: ibv_wr_opcode {
        switch self {
        case .write: return IBV_WR_RDMA_WRITE
        case .read: return IBV_WR_RDMA_READ
        case .send: return IBV_WR_SEND
        }
    }

    var label: String {
        switch self {
        case .write: return "WRITE"
        case .read: return "READ"
        case .send: return "SEND"
        }
    }
}

/// What a flow posts: `qpPairs` RC connections of one tenant (each end its
/// own verbs context, so its own router session), QP i flooding
/// `ops[i % ops.count]` with `window` requests in flight, one in
/// `signalEvery` signaled.
///
/// The target of QP i owns `slots` slots `slotStride` bytes apart; WRITEs
/// and READs visit them in order, or, with `randomSlots`, in a fixed
/// pseudo-random order (the same in every run). With `targetRegions` > 0
/// the target's slots are covered by that many memory regions (equal
/// consecutive runs of slots) and nothing else, and each request uses the
/// rkey of the region its slot is in; with 0, one region covers the target's
/// buffer. A SEND target keeps `2·window` receives posted and reposts each
/// as it completes, in the flooding thread.
struct FlowShape: Equatable {
    var ops: [FlowOp]
    var qpPairs = 1
    var messageBytes: Int
    var window: Int
    var signalEvery = 1
    var targetRegions = 0
    var slots = 0
    var slotStride = 0
    var randomSlots = false
    /// A flooding thread that finds nothing to do calls sched_yield(), so
    /// that on a machine with few cores it does not hold the core the
    /// router needs to make progress.
    var yieldWhenIdle = true
    /// Instead of yielding, sleep this long when idle or when every queue
    /// is still at least half full (0: yield). For flooders with queues deep
    /// enough to keep the router busy while they sleep: they then leave the
    /// cores to the router and the other tenants, and the CPU scheduler's
    /// favour does not decide their share.
    var idleSleepMicros = 0
    /// A CPU-only neighbour (no RDMA at all): runs on the CPU for this long,
    /// sleeps `idleSleepMicros`, again, until stopped; each wake-up counts
    /// as an operation. 0: a flow of RDMA requests. The isolation table
    /// uses it to give a victim neighbours with the noisy flooders' CPU
    /// bursts but no router work, to tell the two apart.
    var cpuBurstNanos = 0

    var effectiveSlots: Int { slots > 0 ? slots : window }
    var effectiveStride: Int { slotStride > 0 ? slotStride : messageBytes }

    /// One line, for a worker process's command line.
    var encoded: String {
        ["ops=" + ops.map(\.rawValue).joined(separator: "+"), "qps=\(qpPairs)", "bytes=\(messageBytes)",
         "window=\(window)", "signal=\(signalEvery)", "regions=\(targetRegions)", "slots=\(slots)",
         "stride=\(slotStride)", "random=\(randomSlots ? 1 : 0)", "yield=\(yieldWhenIdle ? 1 : 0)",
         "sleep=\(idleSleepMicros)", "cpu=\(cpuBurstNanos)"].joined(separator: ",")
    }

    init(ops: [FlowOp], qpPairs: Int = 1, messageBytes: Int, window: Int, signalEvery: Int = 1) {
        self.ops = ops
        self.qpPairs = qpPairs
        self.messageBytes = messageBytes
        self.window = window
        self.signalEvery = signalEvery
    }

    init(decoding text: String) throws {
        var fields: [String: String] = [:]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { throw BenchFailure("flow shape: \"\(part)\" is not key=value") }
            fields[String(kv[0])] = String(kv[1])
        }
        func int(_ k: String) throws -> Int {
            guard let v = fields[k], let n = Int(v), n >= 0 else { throw BenchFailure("flow shape: \(k) missing or not a count in \(text)") }
            return n
        }
        let ops = try (fields["ops"] ?? "").split(separator: "+").map { name -> FlowOp in
            guard let op = FlowOp(rawValue: String(name)) else { throw BenchFailure("flow shape: unknown op \(name)") }
            return op
        }
        guard !ops.isEmpty else { throw BenchFailure("flow shape: no ops in \(text)") }
        self.init(ops: ops, qpPairs: try int("qps"), messageBytes: try int("bytes"), window: try int("window"),
                  signalEvery: try int("signal"))
        targetRegions = try int("regions")
        slots = try int("slots")
        slotStride = try int("stride")
        randomSlots = try int("random") != 0
        yieldWhenIdle = try int("yield") != 0
        idleSleepMicros = try int("sleep")
        cpuBurstNanos = try int("cpu")
    }
}

/// Counters at two instants, read by the coordinating thread while the
/// flow runs.
struct FlowSample {
    let operations: UInt64
    let bytes: UInt64
    let nanos: UInt64
    /// Times the flow slept and woke (a sleeping flooder, a CPU-only neighbour).
    var wakes: UInt64 = 0
}

/// What a flow completed between two samples.
struct FlowRate {
    let operations: UInt64
    let bytes: UInt64
    let nanos: UInt64
    let wakes: UInt64

    init(from a: FlowSample, to b: FlowSample) {
        operations = b.operations &- a.operations
        bytes = b.bytes &- a.bytes
        nanos = b.nanos &- a.nanos
        wakes = b.wakes &- a.wakes
    }

    var operationsPerSecond: Double { Stats.perSecond(Double(operations), nanos: nanos) }
    var bitsPerSecond: Double { Stats.perSecond(Double(bytes) * 8, nanos: nanos) }
    var gigabytesPerSecond: Double { Stats.perSecond(Double(bytes), nanos: nanos) / 1e9 }
    var throughput: Throughput { Throughput(operations: Int(operations), bytes: Int(bytes), nanos: nanos) }
}

/// One page of shared memory between a flooding thread or process and the
/// coordinator: a command word (coordinator to flow), a status word (flow
/// to coordinator), completion counters the flow adds to, and room for the
/// flow's error message. A worker process maps the same file.
final class FlowControl {
    /// go starts (or resumes) the flood; pause drains it and waits for go
    /// or stop; stop drains it and ends the flow.
    enum Command: UInt32 { case none = 0, go = 1, stop = 2, pause = 3 }
    enum Status: UInt32 { case settingUp = 0, ready = 1, running = 2, done = 3, failed = 4, paused = 5 }

    static let size = 4096
    private static let messageOffset = 256
    let base: UnsafeMutableRawPointer

    /// An anonymous shared page, for a flow in this process.
    init() throws {
        let p = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { throw SystemCallError("mmap(flow control page)", errno) }
        base = p
    }

    /// The page of `path`: created (zeroed) by the coordinator, opened by a worker.
    init(path: String, create: Bool) throws {
        let fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0o600)
        guard fd >= 0 else { throw SystemCallError("open(\(path))", errno) }
        defer { close(fd) }
        if create { guard ftruncate(fd, off_t(Self.size)) == 0 else { throw SystemCallError("ftruncate(\(path))", errno) } }
        let p = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw SystemCallError("mmap(\(path))", errno) }
        base = p
    }

    deinit { munmap(base, Self.size) }

    private var commandWord: UnsafeMutablePointer<UInt32> { base.assumingMemoryBound(to: UInt32.self) }
    private var statusWord: UnsafeMutablePointer<UInt32> { (base + 4).assumingMemoryBound(to: UInt32.self) }
    private var operationsWord: UnsafeMutablePointer<UInt64> { (base + 64).assumingMemoryBound(to: UInt64.self) }
    private var bytesWord: UnsafeMutablePointer<UInt64> { (base + 128).assumingMemoryBound(to: UInt64.self) }
    private var wakesWord: UnsafeMutablePointer<UInt64> { (base + 192).assumingMemoryBound(to: UInt64.self) }

    var command: Command {
        get { Command(rawValue: sluice_load_acquire(commandWord)) ?? .none }
        set { sluice_store_release(commandWord, newValue.rawValue) }
    }

    var status: Status {
        get { Status(rawValue: sluice_load_acquire(statusWord)) ?? .failed }
        set { sluice_store_release(statusWord, newValue.rawValue) }
    }

    @inline(__always)
    func add(operations: Int, bytes: Int) {
        _ = sluice_atomic_fetch_add64(operationsWord, UInt64(operations))
        _ = sluice_atomic_fetch_add64(bytesWord, UInt64(bytes))
    }

    /// The flow is about to sleep (it wakes after).
    @inline(__always)
    func addWake() { _ = sluice_atomic_fetch_add64(wakesWord, 1) }

    func sample() -> FlowSample {
        let ops = sluice_atomic_fetch_add64(operationsWord, 0)
        let bytes = sluice_atomic_fetch_add64(bytesWord, 0)
        let wakes = sluice_atomic_fetch_add64(wakesWord, 0)
        return FlowSample(operations: ops, bytes: bytes, nanos: monotonicNanos(), wakes: wakes)
    }

    /// Records why the flow failed, then says so in the status word.
    func fail(_ message: String) {
        let bytes = Array(message.utf8.prefix(Self.size - Self.messageOffset - 1))
        bytes.withUnsafeBytes { (base + Self.messageOffset).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        (base + Self.messageOffset + bytes.count).storeBytes(of: 0, as: UInt8.self)
        status = .failed
    }

    var failureMessage: String {
        String(cString: (base + Self.messageOffset).assumingMemoryBound(to: CChar.self))
    }
}

/// Sets up a flow's connections, then floods while the control page says
/// so. Everything is created before `ready`; nothing is allocated while
/// flooding.
final class FlowDriver {
    private final class Pair {
        let op: FlowOp
        let initiator: VerbsEndpoint
        let target: VerbsEndpoint
        let wr: WorkRequests
        /// The target's side of a SEND flow: it reposts receives.
        let targetWR: WorkRequests?
        let remoteAddresses: [UInt64]
        let rkeys: [UInt32]
        var posted = 0
        var completed = 0
        var stopAt = Int.max

        init(op: FlowOp, initiator: VerbsEndpoint, target: VerbsEndpoint, targetWR: WorkRequests?,
             remoteAddresses: [UInt64], rkeys: [UInt32]) {
            self.op = op
            self.initiator = initiator
            self.target = target
            wr = WorkRequests(initiator)
            self.targetWR = targetWR
            self.remoteAddresses = remoteAddresses
            self.rkeys = rkeys
        }
    }

    let shape: FlowShape
    private var pairs: [Pair] = []
    private var opened: [VerbsEndpoint] = []
    /// Length of the precomputed random visiting order of target slots.
    private static let randomOrderLength = 1 << 16

    init(socket: String, shape: FlowShape) throws {
        self.shape = shape
        do {
            for i in 0..<shape.qpPairs {
                pairs.append(try makePair(socket: socket, op: shape.ops[i % shape.ops.count], index: i))
            }
        } catch {
            release()
            throw error
        }
    }

    private func makePair(socket: String, op: FlowOp, index: Int) throws -> Pair {
        let s = shape
        let remoteAccess = IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
        let depth = UInt32(max(64, s.window))
        let recvDepth = op == .send ? UInt32(2 * s.window) : 1
        let cqDepth = Int32(max(256, 4 * s.window))
        let initiator = try VerbsEndpoint(
            socket: socket,
            shape: .init(bufferBytes: max(4096, s.window * s.messageBytes), cqDepth: cqDepth, sendDepth: depth, recvDepth: 1),
            psn: UInt32(0x10000 + index))
        opened.append(initiator)
        let targetBytes = op == .send ? Int(recvDepth) * s.messageBytes : s.effectiveSlots * s.effectiveStride
        let target = try VerbsEndpoint(
            socket: socket,
            shape: .init(bufferBytes: (max(4096, targetBytes) + 4095) & ~4095, mrAccess: remoteAccess, cqDepth: cqDepth,
                         sendDepth: 1, recvDepth: recvDepth),
            psn: UInt32(0x20000 + index))
        opened.append(target)
        try initiator.connect(to: target.endpoint(), access: IBV_ACCESS_LOCAL_WRITE.rawValue)
        try target.connect(to: initiator.endpoint(), access: remoteAccess)
        fillPattern(initiator.buffer, initiator.bufferBytes)

        var addresses: [UInt64] = []
        var rkeys: [UInt32] = []
        var targetWR: WorkRequests?
        if op == .send {
            let t = WorkRequests(target)
            for slot in 0..<Int(recvDepth) {
                try t.postRecv(wrID: UInt64(slot), offset: slot * s.messageBytes, length: UInt32(s.messageBytes))
            }
            targetWR = t
        } else {
            let slots = s.effectiveSlots, stride = s.effectiveStride
            let base = target.endpoint()
            var regionKeys = [base.rkey]
            var slotsPerRegion = slots
            if s.targetRegions > 0 {
                guard slots % s.targetRegions == 0, (slots / s.targetRegions * stride) % 4096 == 0 else {
                    throw BenchFailure("flow shape: \(slots) slots of \(stride) bytes do not split into \(s.targetRegions) page-aligned regions")
                }
                slotsPerRegion = slots / s.targetRegions
                try target.registerRegions(count: s.targetRegions, bytesPerRegion: slotsPerRegion * stride, access: remoteAccess)
                regionKeys = target.regions.map { $0.pointee.rkey }
                try target.dropWholeBufferMR()
            }
            let count = s.randomSlots ? Self.randomOrderLength : slots
            var x: UInt64 = 0x2545_f491_4f6c_dd1d
            addresses.reserveCapacity(count)
            rkeys.reserveCapacity(count)
            for i in 0..<count {
                let slot: Int
                if s.randomSlots {
                    x ^= x << 13
                    x ^= x >> 7
                    x ^= x << 17
                    slot = Int(x % UInt64(slots))
                } else {
                    slot = i
                }
                addresses.append(base.address + UInt64(slot * stride))
                rkeys.append(regionKeys[slot / slotsPerRegion])
            }
        }
        return Pair(op: op, initiator: initiator, target: target, targetWR: targetWR,
                    remoteAddresses: addresses, rkeys: rkeys)
    }

    /// Floods until the control page says pause or stop, then drains: each
    /// QP posts up to its next signaled request and waits for everything it
    /// posted, so that no request is left in flight when the QPs are
    /// destroyed. Paused, it waits for go (flood again) or stop.
    func run(_ control: FlowControl) throws {
        while true {
            try flood(control)
            if control.command == .stop { return }
            control.status = .paused
            while control.command == .pause { usleep(100) }
            if control.command != .go { return }
            for p in pairs { p.stopAt = Int.max }
            control.status = .running
        }
    }

    private func flood(_ control: FlowControl) throws {
        let window = shape.window, every = max(1, shape.signalEvery), size = shape.messageBytes
        var watch = StallWatch()
        var stopping = false
        var turn = 0
        while true {
            var progressed = false
            var allDrained = true
            for p in pairs {
                let limit = min(p.stopAt, p.completed + window)
                while p.posted < limit {
                    let n = p.posted
                    let k = p.remoteAddresses.isEmpty ? 0 : n % p.remoteAddresses.count
                    try p.wr.postSend(wrID: UInt64(n), opcode: p.op.opcode, offset: (n % window) * size, length: UInt32(size),
                                      signaled: (n + 1) % every == 0,
                                      remoteAddress: p.remoteAddresses.isEmpty ? 0 : p.remoteAddresses[k],
                                      rkey: p.rkeys.isEmpty ? 0 : p.rkeys[k])
                    p.posted = n + 1
                }
                if let t = p.targetWR {
                    let got = try t.poll()
                    for c in 0..<got {
                        let slot = Int(t.completions[c].wr_id)
                        try t.postRecv(wrID: UInt64(slot), offset: slot * size, length: UInt32(size))
                    }
                    if got > 0 { progressed = true }
                }
                let got = try p.wr.poll()
                if got > 0 {
                    // RC completes in order: a signaled completion stands
                    // for every unsignaled request posted before it.
                    var newest = p.completed
                    for c in 0..<got { newest = max(newest, Int(p.wr.completions[c].wr_id) + 1) }
                    let delta = newest - p.completed
                    p.completed = newest
                    control.add(operations: delta, bytes: delta * size)
                    progressed = true
                }
                if p.completed < p.stopAt { allDrained = false }
            }
            if stopping && allDrained { return }
            // A sleeping flooder tops its queues up and sleeps while they
            // are still at least half full: the router stays saturated and
            // the flooder's own CPU time stays small.
            let deep = shape.idleSleepMicros > 0 && !stopping
                && pairs.allSatisfy { $0.posted - $0.completed >= window / 2 || $0.posted >= $0.stopAt }
            if progressed {
                watch.progressed()
                if deep {
                    control.addWake()
                    usleep(useconds_t(shape.idleSleepMicros))
                }
            } else {
                try watch.idle(waitingFor: "completions of a \(shape.encoded) flow")
                if shape.idleSleepMicros > 0 {
                    control.addWake()
                    usleep(useconds_t(shape.idleSleepMicros))
                } else if shape.yieldWhenIdle {
                    sched_yield()
                }
            }
            turn &+= 1
            if !stopping && turn & 63 == 0 && control.command != .go {
                stopping = true
                for p in pairs { p.stopAt = (p.posted + every - 1) / every * every }
            }
        }
    }

    func release() {
        for e in opened.reversed() { try? e.release() }
        opened = []
        pairs = []
    }

    /// Releases, reporting the first verb that fails. First checks that
    /// sequential WRITE flows left the target holding what the initiator
    /// sent (slot k of the target is written from slot k of the source),
    /// so a data path that completes without copying cannot pass.
    func close() throws {
        defer { release() }
        let s = shape
        if s.targetRegions == 0 && !s.randomSlots && s.effectiveSlots == s.window && s.effectiveStride == s.messageBytes {
            for p in pairs where p.op == .write && p.completed >= s.window {
                if memcmp(p.initiator.buffer, p.target.buffer, s.window * s.messageBytes) != 0 {
                    throw BenchFailure("every RDMA WRITE of a \(s.encoded) flow completed, but the target does not hold the written bytes")
                }
            }
        }
        for e in opened.reversed() { try e.release() }
    }
}

/// A flow that runs somewhere else (a thread of this process or a worker
/// process), steered through its control page.
protocol FlowHandle: AnyObject {
    var control: FlowControl { get }
    /// Says what and where, for error messages.
    var name: String { get }
    /// nil while it runs; how it ended once it has.
    func exitReason() -> String?
    /// Waits for the flow to have stopped; throws its failure.
    func join() throws
}

extension FlowHandle {
    /// Waits until the flow has set up its connections.
    func waitReady(timeoutSeconds: Double) throws {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        while true {
            switch control.status {
            case .ready: return
            case .failed: throw BenchFailure("\(name): \(control.failureMessage)")
            default: break
            }
            if let how = exitReason() {
                throw BenchFailure("\(name) ended during set-up (\(how)): \(control.failureMessage)")
            }
            if monotonicNanos() > deadline { throw BenchFailure("\(name) was not ready within \(Int(timeoutSeconds)) s") }
            usleep(1_000)
        }
    }

    /// Throws if the flow failed or ended while it should be flooding.
    func checkRunning() throws {
        if control.status == .failed { throw BenchFailure("\(name): \(control.failureMessage)") }
        if let how = exitReason() { throw BenchFailure("\(name) ended while flooding (\(how)): \(control.failureMessage)") }
    }

    /// Tells it to pause and waits until it has drained.
    func pause() throws {
        control.command = .pause
        let deadline = monotonicNanos() + 20_000_000_000
        while control.status != .paused {
            try checkRunning()
            if monotonicNanos() > deadline { throw BenchFailure("\(name) did not drain within 20 s of pause") }
            usleep(200)
        }
    }

    /// Tells it to stop, then waits for it.
    func finish() throws {
        control.command = .stop
        try join()
    }
}

/// What the flow itself runs, in a thread or a worker: set up, report
/// ready, wait for go (or stop), flood, drain, release.
enum FlowBody {
    static func run(socket: String, shape: FlowShape, control: FlowControl) throws {
        if shape.cpuBurstNanos > 0 { return cpuOnly(shape, control) }
        do {
            let driver = try FlowDriver(socket: socket, shape: shape)
            defer { driver.release() }
            control.status = .ready
            // Set-up can take seconds (10,000 regions); the coordinator may
            // give up and say stop instead of go.
            let deadline = monotonicNanos() + 300_000_000_000
            while control.command == .none {
                if monotonicNanos() > deadline { throw BenchFailure("no go from the coordinator within 300 s") }
                usleep(100)
            }
            if control.command == .go {
                control.status = .running
                try driver.run(control)
            }
            try driver.close()
            control.status = .done
        } catch {
            control.fail("\(error)")
            throw error
        }
    }
}

extension FlowBody {
    /// A neighbour that only uses the CPU: `cpuBurstNanos` on it, then
    /// `idleSleepMicros` asleep, as a sleeping flooder does, with no session
    /// with the router.
    static func cpuOnly(_ shape: FlowShape, _ control: FlowControl) {
        control.status = .ready
        while control.command == .none { usleep(100) }
        while true {
            switch control.command {
            case .stop, .none:
                control.status = .done
                return
            case .pause:
                control.status = .paused
                usleep(100)
                continue
            case .go:
                if control.status != .running { control.status = .running }
            }
            let until = monotonicNanos() &+ UInt64(shape.cpuBurstNanos)
            while monotonicNanos() < until {}
            control.add(operations: 1, bytes: 0)
            control.addWake()
            usleep(useconds_t(max(1, shape.idleSleepMicros)))
        }
    }
}

/// A flow on a thread of this process.
final class ThreadFlow: FlowHandle {
    let control: FlowControl
    let name: String
    private var thread: BenchThread?
    private var joined = false

    init(name: String, socket: String, shape: FlowShape) throws {
        self.name = name
        control = try FlowControl()
        let control = self.control
        thread = try BenchThread { try FlowBody.run(socket: socket, shape: shape, control: control) }
    }

    func exitReason() -> String? {
        switch control.status {
        case .done: return "done"
        case .failed: return "failed"
        default: return nil
        }
    }

    func join() throws {
        guard !joined, let t = thread else { return }
        joined = true
        try t.join()
    }

    deinit {
        if !joined {
            control.command = .stop
            try? thread?.join()
        }
    }
}

/// Starts flows, samples them together, stops them.
enum Flows {
    static func go(_ flows: [FlowHandle]) {
        for f in flows { f.control.command = .go }
    }

    /// Every flow's counters, read back to back.
    static func sample(_ flows: [FlowHandle]) throws -> [FlowSample] {
        for f in flows { try f.checkRunning() }
        return flows.map { $0.control.sample() }
    }

    /// Sleeps `seconds`, looking every 50 ms whether a flow failed.
    static func sleep(_ seconds: Double, watching flows: [FlowHandle]) throws {
        let end = monotonicNanos() + UInt64(seconds * 1e9)
        while true {
            for f in flows { try f.checkRunning() }
            let now = monotonicNanos()
            if now >= end { return }
            usleep(useconds_t(min(end - now, 50_000_000) / 1000))
        }
    }

    /// Stops every flow and waits for all; throws the first failure.
    static func finish(_ flows: [FlowHandle]) throws {
        for f in flows { f.control.command = .stop }
        var first: Error?
        for f in flows {
            do { try f.join() } catch { if first == nil { first = error } }
        }
        if let first { throw first }
    }

    /// Interleaved rounds: in each round every flow runs alone in turn (go,
    /// wait `settle`, count for `window` seconds, pause), so that whatever
    /// drifts during the run (the machine's other load, CPU clocks) touches
    /// every flow alike, after a first round that only warms up (each flow
    /// runs for `settle`). Returns each flow's rates, one per round; stops
    /// every flow at the end, unless `keepRunning` (then they stay paused,
    /// for more rounds later). Flows must be ready (or paused).
    static func rounds(_ flows: [FlowHandle], count: Int, settle: Double, window: Double, keepRunning: Bool = false) throws -> [[FlowRate]] {
        var rates = [[FlowRate]](repeating: [], count: flows.count)
        do {
            // A round that counts nothing first: the router is still writing
            // the audit records of the set-up, and pages are still cold.
            for f in flows {
                f.control.command = .go
                try sleep(settle, watching: [f])
                try f.pause()
            }
            for _ in 0..<max(1, count) {
                for (i, f) in flows.enumerated() {
                    f.control.command = .go
                    try sleep(settle, watching: [f])
                    let a = try sample([f])[0]
                    try sleep(window, watching: [f])
                    let b = try sample([f])[0]
                    try f.pause()
                    rates[i].append(FlowRate(from: a, to: b))
                }
            }
            if !keepRunning { try finish(flows) }
            return rates
        } catch {
            try? finish(flows)
            throw error
        }
    }

    /// go, wait `settle`, count for `window` seconds, stop: each flow's rate
    /// over the same window.
    static func measure(_ flows: [FlowHandle], settle: Double, window: Double) throws -> [FlowRate] {
        do {
            go(flows)
            try sleep(settle, watching: flows)
            let a = try sample(flows)
            try sleep(window, watching: flows)
            let b = try sample(flows)
            try finish(flows)
            return zip(a, b).map { FlowRate(from: $0, to: $1) }
        } catch {
            try? finish(flows)
            throw error
        }
    }
}
