#if canImport(Glibc)
import Glibc
#endif
import SluiceBenchStats
import SluiceVerbs

/// How long a latency measurement runs: `iterations` timed round trips after
/// `warmup` untimed ones, cut short after `maxSeconds` of timed runs (the
/// sample count is reported, so a cut-short run is visible).
struct LatencyPlan {
    var warmup: Int
    var iterations: Int
    var maxSeconds: Double
    /// Warm-up also stops after this long, whatever its count.
    var maxWarmupSeconds: Double
}

/// How much a bandwidth measurement moves: `operations` messages of
/// `messageBytes`, `window` of them in flight, after `warmup` untimed ones;
/// cut short after `maxSeconds`. One request in `signalEvery` asks for a
/// completion (and the last one always does).
struct BandwidthPlan {
    var messageBytes: Int
    var window: Int
    var warmup: Int
    var operations: Int
    var maxSeconds: Double
    var maxWarmupSeconds: Double
    var signalEvery: Int = 1
}

enum SluiceMeasurements {
    /// Where a ping-pong's messages live in each side's buffer: receive
    /// slots from the start (at least 64 bytes apart), then, on a page of
    /// its own, the send slot.
    private struct PingLayout {
        let bytes: Int
        let slots: Int
        let slotBytes: Int
        let sendOffset: Int
        let bufferBytes: Int

        init(bytes: Int) {
            self.bytes = bytes
            // One message is in flight each way; a few spare receives suffice
            // for large messages, and keep the buffer small.
            slots = bytes <= 4096 ? 16 : 4
            slotBytes = max(64, (bytes + 63) & ~63)
            sendOffset = (slots * slotBytes + 4095) & ~4095
            bufferBytes = sendOffset + ((bytes + 4095) & ~4095)
        }
    }
    private static let sendTag = UInt64.max

    /// Round trip of a `bytes`-byte SEND (8 by default) between two RC QPs
    /// in two sessions of the same tenant. Ping sends and waits for the
    /// reply; pong waits for a message and sends it back. Both busy-poll
    /// their CQ. Every payload's first 8 bytes carry its sequence number
    /// and are checked, so a data path that completes without delivering
    /// fails. Returns the summary and whether the SENDs went inline.
    ///
    /// `oneThread`: one thread drives both ends (posts the ping, polls the
    /// pong side's CQ, sends the reply, polls the ping side's), busy-polling
    /// without yielding: no hand-off between two threads sharing a CPU is
    /// timed, only the router's two hops and the library's calls.
    static func sendPingPong(socket: String, plan: LatencyPlan, yieldWhenIdle: Bool, bytes: Int = 8,
                             oneThread: Bool = false) throws -> (LatencySummary, inline: Bool) {
        precondition(bytes >= 8, "the sequence number needs 8 bytes")
        let layout = PingLayout(bytes: bytes)
        let shape = VerbsEndpoint.Shape(bufferBytes: layout.bufferBytes, recvDepth: UInt32(layout.slots))
        var opened: [VerbsEndpoint] = []
        // On failure, end the sessions now rather than at exit, so the
        // router does not keep polling their queues during later runs.
        defer { for e in opened { try? e.release() } }
        let ping = try VerbsEndpoint(socket: socket, shape: shape, psn: 0x1000)
        opened.append(ping)
        let pong = try VerbsEndpoint(socket: socket, shape: shape, psn: 0x2000)
        opened.append(pong)
        try ping.connect(to: pong.endpoint(), access: IBV_ACCESS_LOCAL_WRITE.rawValue)
        try pong.connect(to: ping.endpoint(), access: IBV_ACCESS_LOCAL_WRITE.rawValue)
        let inline = ping.maxInline >= UInt32(bytes) && pong.maxInline >= UInt32(bytes)
        let pingWR = WorkRequests(ping)
        let pongWR = WorkRequests(pong)
        // Receives are posted before any SEND can arrive, so no SEND ever
        // meets an empty receive queue (that would be an RNR wait, not latency).
        for slot in 0..<layout.slots {
            try pingWR.postRecv(wrID: UInt64(slot), offset: slot * layout.slotBytes, length: UInt32(layout.slotBytes))
            try pongWR.postRecv(wrID: UInt64(slot), offset: slot * layout.slotBytes, length: UInt32(layout.slotBytes))
        }

        if oneThread {
            let samples = try oneThreadLoop(ping, pingWR, pong, pongWR, layout, inline: inline, plan: plan)
            try ping.release()
            try pong.release()
            return (LatencySummary(nanos: samples), inline)
        }
        let samples = try runPair(passive: { control in
            try echo(pong, pongWR, layout, inline: inline, yieldWhenIdle: yieldWhenIdle, control: control)
        }, active: { control in
            try pingLoop(ping, pingWR, layout, inline: inline, plan: plan, yieldWhenIdle: yieldWhenIdle, control: control)
        })
        try ping.release()
        try pong.release()
        return (LatencySummary(nanos: samples), inline)
    }

    private static func pingLoop(_ ep: VerbsEndpoint, _ wr: WorkRequests, _ layout: PingLayout, inline: Bool, plan: LatencyPlan,
                                 yieldWhenIdle: Bool, control: RunControl) throws -> [UInt64] {
        var samples = [UInt64]()
        samples.reserveCapacity(plan.iterations)
        var watch = StallWatch(control: control)
        let sendSlot = ep.buffer + layout.sendOffset
        let limit = UInt64(plan.maxSeconds * 1e9)
        let warmupLimit = UInt64(plan.maxWarmupSeconds * 1e9)
        let warmupStart = monotonicNanos()
        var timedStart: UInt64 = 0
        var warming = plan.warmup > 0
        var i = 0
        while samples.count < plan.iterations {
            if warming && (i >= plan.warmup || monotonicNanos() &- warmupStart > warmupLimit) { warming = false }
            if !warming && timedStart == 0 { timedStart = monotonicNanos() }
            sendSlot.storeBytes(of: UInt64(i), as: UInt64.self)
            let t0 = monotonicNanos()
            try wr.postSend(wrID: sendTag, opcode: IBV_WR_SEND, offset: layout.sendOffset, length: UInt32(layout.bytes), inline: inline)
            var replySlot = -1
            while replySlot < 0 {
                let n = try wr.poll()
                if n == 0 {
                    try watch.idle(waitingFor: "the reply to ping \(i) (ibv_poll_cq on the ping side)")
                    if yieldWhenIdle { sched_yield() }
                    continue
                }
                for k in 0..<n where wr.completions[k].opcode == IBV_WC_RECV {
                    replySlot = Int(wr.completions[k].wr_id)
                }
            }
            let t1 = monotonicNanos()
            watch.progressed()
            let got = ep.buffer.load(fromByteOffset: replySlot * layout.slotBytes, as: UInt64.self)
            guard got == UInt64(i) else {
                throw BenchFailure("ping \(i): the reply carried \(got); the data path delivered the wrong bytes")
            }
            try wr.postRecv(wrID: UInt64(replySlot), offset: replySlot * layout.slotBytes, length: UInt32(layout.slotBytes))
            i += 1
            if !warming {
                samples.append(t1 &- t0)
                if t1 &- timedStart > limit { break }
            }
        }
        return samples
    }

    /// Both ends in this thread: ping sends, the pong side's CQ is polled
    /// until the message arrives, pong sends it back, the ping side's CQ is
    /// polled until the reply arrives; the round trip is timed.
    private static func oneThreadLoop(_ ping: VerbsEndpoint, _ pingWR: WorkRequests, _ pong: VerbsEndpoint, _ pongWR: WorkRequests,
                                      _ layout: PingLayout, inline: Bool, plan: LatencyPlan) throws -> [UInt64] {
        var samples = [UInt64]()
        samples.reserveCapacity(plan.iterations)
        var watch = StallWatch()
        let pingSlot = ping.buffer + layout.sendOffset
        let pongSlot = pong.buffer + layout.sendOffset
        let limit = UInt64(plan.maxSeconds * 1e9)
        let warmupLimit = UInt64(plan.maxWarmupSeconds * 1e9)
        let warmupStart = monotonicNanos()
        var timedStart: UInt64 = 0
        var warming = plan.warmup > 0
        var i = 0
        /// Polls `wr` until a receive completes; its slot.
        func awaitReceive(_ wr: WorkRequests, _ what: String) throws -> Int {
            while true {
                let n = try wr.poll()
                if n == 0 {
                    try watch.idle(waitingFor: what)
                    continue
                }
                watch.progressed()
                for k in 0..<n where wr.completions[k].opcode == IBV_WC_RECV { return Int(wr.completions[k].wr_id) }
            }
        }
        while samples.count < plan.iterations {
            if warming && (i >= plan.warmup || monotonicNanos() &- warmupStart > warmupLimit) { warming = false }
            if !warming && timedStart == 0 { timedStart = monotonicNanos() }
            pingSlot.storeBytes(of: UInt64(i), as: UInt64.self)
            let t0 = monotonicNanos()
            try pingWR.postSend(wrID: sendTag, opcode: IBV_WR_SEND, offset: layout.sendOffset, length: UInt32(layout.bytes), inline: inline)
            let inSlot = try awaitReceive(pongWR, "ping \(i) at the pong side (ibv_poll_cq)")
            let value = pong.buffer.load(fromByteOffset: inSlot * layout.slotBytes, as: UInt64.self)
            pongSlot.storeBytes(of: value, as: UInt64.self)
            try pongWR.postSend(wrID: sendTag, opcode: IBV_WR_SEND, offset: layout.sendOffset, length: UInt32(layout.bytes), inline: inline)
            let replySlot = try awaitReceive(pingWR, "the reply to ping \(i) (ibv_poll_cq on the ping side)")
            let t1 = monotonicNanos()
            try pongWR.postRecv(wrID: UInt64(inSlot), offset: inSlot * layout.slotBytes, length: UInt32(layout.slotBytes))
            let got = ping.buffer.load(fromByteOffset: replySlot * layout.slotBytes, as: UInt64.self)
            guard got == UInt64(i) else {
                throw BenchFailure("ping \(i): the reply carried \(got); the data path delivered the wrong bytes")
            }
            try pingWR.postRecv(wrID: UInt64(replySlot), offset: replySlot * layout.slotBytes, length: UInt32(layout.slotBytes))
            i += 1
            if !warming {
                samples.append(t1 &- t0)
                if t1 &- timedStart > limit { break }
            }
        }
        return samples
    }

    /// The pong side: every message received is sent straight back (its
    /// first 8 bytes copied into the send slot; the rest is what the slot
    /// holds, the same size).
    private static func echo(_ ep: VerbsEndpoint, _ wr: WorkRequests, _ layout: PingLayout, inline: Bool, yieldWhenIdle: Bool,
                             control: RunControl) throws {
        var watch = StallWatch(control: control)
        let sendSlot = ep.buffer + layout.sendOffset
        while !control.isFinished {
            let n = try wr.poll()
            if n == 0 {
                try watch.idle(waitingFor: "a ping (ibv_poll_cq on the pong side)")
                if yieldWhenIdle { sched_yield() }
                continue
            }
            watch.progressed()
            for k in 0..<n where wr.completions[k].opcode == IBV_WC_RECV {
                let slot = Int(wr.completions[k].wr_id)
                let value = ep.buffer.load(fromByteOffset: slot * layout.slotBytes, as: UInt64.self)
                sendSlot.storeBytes(of: value, as: UInt64.self)
                try wr.postRecv(wrID: UInt64(slot), offset: slot * layout.slotBytes, length: UInt32(layout.slotBytes))
                try wr.postSend(wrID: sendTag, opcode: IBV_WR_SEND, offset: layout.sendOffset, length: UInt32(layout.bytes), inline: inline)
            }
        }
    }

    /// RDMA WRITE bandwidth on one RC QP: `window` writes in flight (one in
    /// `signalEvery` signaled), each into its own slot of the peer's region. One thread
    /// drives it; the target side is passive, as RDMA WRITE needs no
    /// receiver. At the end the target must hold what the source holds.
    static func writeBandwidth(socket: String, plan: BandwidthPlan) throws -> Throughput {
        let span = plan.messageBytes * plan.window
        var opened: [VerbsEndpoint] = []
        defer { for e in opened { try? e.release() } }
        // A window as deep as the send queue: a polled completion frees its slot.
        let writer = try VerbsEndpoint(
            socket: socket,
            shape: .init(bufferBytes: span, sendDepth: UInt32(max(64, plan.window)), recvDepth: 1),
            psn: 0x3000)
        opened.append(writer)
        let target = try VerbsEndpoint(
            socket: socket,
            shape: .init(bufferBytes: span,
                         mrAccess: IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue,
                         recvDepth: 1),
            psn: 0x4000)
        opened.append(target)
        try writer.connect(to: target.endpoint(), access: IBV_ACCESS_LOCAL_WRITE.rawValue)
        try target.connect(to: writer.endpoint(),
                           access: IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue)
        fillPattern(writer.buffer, span)
        let wr = WorkRequests(writer)
        let remote = target.endpoint()

        _ = try writeRun(wr, remote, plan, operations: plan.warmup, maxNanos: UInt64(plan.maxWarmupSeconds * 1e9))
        let timed = try writeRun(wr, remote, plan, operations: plan.operations, maxNanos: UInt64(plan.maxSeconds * 1e9))

        if memcmp(writer.buffer, target.buffer, span) != 0 {
            throw BenchFailure("every RDMA WRITE completed successfully, but the target region does not hold the written bytes")
        }
        try writer.release()
        try target.release()
        return timed
    }

    private static func writeRun(_ wr: WorkRequests, _ remote: RemoteEndpoint, _ plan: BandwidthPlan,
                                 operations: Int, maxNanos: UInt64) throws -> Throughput {
        var watch = StallWatch()
        var posted = 0, completed = 0, target = operations
        let every = max(1, plan.signalEvery)
        let start = monotonicNanos()
        while completed < target {
            while posted < target && posted - completed < plan.window {
                let offset = (posted % plan.window) * plan.messageBytes
                try wr.postSend(wrID: UInt64(posted), opcode: IBV_WR_RDMA_WRITE, offset: offset,
                                length: UInt32(plan.messageBytes),
                                signaled: (posted + 1) % every == 0 || posted + 1 == target,
                                remoteAddress: remote.address + UInt64(offset), rkey: remote.rkey)
                posted += 1
            }
            let n = try wr.poll()
            if n == 0 {
                try watch.idle(waitingFor: "RDMA WRITE completions (\(completed) of \(posted) posted)")
                continue
            }
            watch.progressed()
            // RC completes in order: a signaled completion stands for every
            // unsignaled request posted before it.
            for k in 0..<n { completed = max(completed, Int(wr.completions[k].wr_id) + 1) }
            // Out of time: stop posting at the next signaled request, so
            // that everything in flight still reports its completion.
            if target > posted && monotonicNanos() &- start > maxNanos {
                target = min(target, (posted + every - 1) / every * every)
            }
        }
        return Throughput(operations: completed, bytes: completed * plan.messageBytes, nanos: monotonicNanos() &- start)
    }
}

/// A byte pattern that differs per slot, so a write into the wrong slot
/// shows up in the final comparison.
func fillPattern(_ p: UnsafeMutableRawPointer, _ count: Int) {
    var x: UInt64 = 0x9e37_79b9_7f4a_7c15
    for i in stride(from: 0, to: count - 7, by: 8) {
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        p.storeBytes(of: x, toByteOffset: i, as: UInt64.self)
    }
}
