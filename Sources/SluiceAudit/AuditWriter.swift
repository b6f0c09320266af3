#if canImport(Glibc)
import Glibc
#endif

/// Appends records to the tamper-evident log without ever making the caller
/// wait for the disk.
///
/// `record(...)` stamps the time, then takes a mutex only to append to a
/// bounded in-memory queue (or, when the queue is full, to count the record
/// as lost); it performs no I/O and never waits on a condition. A writer
/// thread takes the whole queue at once, assigns `seq` and `prev`, hashes,
/// writes the batch with one `write(2)`, and fsyncs when the oldest unsynced
/// record has waited `fsyncInterval`. Lost records are never silent: after
/// the batch that was queued before them, an `audit.loss` record says how
/// many were lost, how many were denials, of which tenants, and when.
///
/// Call `close()` before exit: it drains the queue, writes `audit.close`,
/// fsyncs and signs a final checkpoint. The writer thread holds the writer
/// alive until then.
public final class AuditWriter: @unchecked Sendable {
    /// What the writer has done so far.
    public struct Statistics: Equatable, Sendable {
        /// Records `record(...)` put in the queue.
        public var accepted: UInt64 = 0
        /// Records `record(...)` found no room for (each is in an `audit.loss` record).
        public var dropped: UInt64 = 0
        /// Records offered after `close()`: these cannot be logged at all.
        public var droppedAfterClose: UInt64 = 0
        /// Callers' records now in the file.
        public var written: UInt64 = 0
        public var syncs: UInt64 = 0
        public var checkpoints: UInt64 = 0
        public var rotations: UInt64 = 0
        /// Failed writes, fsyncs, rotations and checkpoints.
        public var writeErrors: UInt64 = 0
        public var lastError: String?
        /// The most records the queue has held at once.
        public var queueHighWater: Int = 0
    }

    public let configuration: AuditConfiguration
    private let appender: AuditAppender
    private let clock: any AuditClock
    private let capacity: Int

    // Shared with the writer thread, under `mutex`.
    private let mutex = AuditMutex()
    private var queue: [PendingEvent] = []
    private var lost = LossTally()
    private var accepted: UInt64 = 0
    private var dropped: UInt64 = 0
    private var droppedAfterClose: UInt64 = 0
    private var highWater = 0
    private var writerIdle = false
    private var closing = false
    private var finished = false
    private var flushRequested: UInt64 = 0
    private var flushDone: UInt64 = 0
    private var paused = false
    private var wakeRequested = false
    private var appenderStats = Statistics()
    private var thread = pthread_t()

    /// Opens (or continues) the log and starts the writer thread. Throws if a
    /// file cannot be opened, the key file is unusable, or the existing log's
    /// last complete line is not a record (see `docs/audit.md`).
    public init(_ configuration: AuditConfiguration) throws {
        try configuration.validate()
        self.configuration = configuration
        clock = configuration.clock
        capacity = configuration.queueCapacity
        appender = try AuditAppender(config: configuration)
        appenderStats = appender.stats
        queue.reserveCapacity(capacity)
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let writer = Unmanaged<AuditWriter>.fromOpaque(arg!).takeRetainedValue()
            writer.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<AuditWriter>.fromOpaque(context).release()
            appender.close(fields: ["reason": "cannot start the writer thread: \(AuditSys.errnoText(rc))"])
            throw AuditError("cannot start the audit writer thread: \(AuditSys.errnoText(rc))")
        }
    }

    /// Queues one event. Never blocks on I/O; returns false when the record
    /// was lost (queue full, or after `close()`). Safe from any thread.
    ///
    /// - Parameters:
    ///   - event: what happened: `control`, `datapath`, `session.open`,
    ///     `session.close`, `session.refused`, `throttle`, `summary`,
    ///     `policy.load`, `router.start`, …
    ///   - object: virtual identifiers only (`qp 3 qpn 0x1a`), never a
    ///     physical key or address.
    ///   - fields: any further string data (`lid`, `digest`, `allowed`).
    @discardableResult
    public func record(event: String, tenant: String? = nil, subject: AuditSubject? = nil, verb: String? = nil,
                       object: String? = nil, decision: AuditDecision? = nil, rule: String? = nil,
                       reason: String? = nil, fields: [String: String] = [:]) -> Bool {
        let e = PendingEvent(time: clock.now(), tenant: tenant, subject: subject, event: event, verb: verb,
                             object: object, decision: decision, rule: rule, reason: reason, fields: fields)
        mutex.lock()
        defer { mutex.unlock() }
        if closing {
            droppedAfterClose += 1
            return false
        }
        let ok = queue.count < capacity
        if ok {
            queue.append(e)
            accepted += 1
            if queue.count > highWater { highWater = queue.count }
        } else {
            if lost.isEmpty { lost.causes = ["queue full (capacity \(capacity))"] }
            lost.add(e)
            dropped += 1
        }
        if writerIdle {
            writerIdle = false
            mutex.signalWork()
        }
        return ok
    }

    /// Waits until everything queued before the call is written and fsynced.
    /// For tests and orderly hand-overs; the router's loop must not call it.
    public func flush() {
        mutex.lock()
        defer { mutex.unlock() }
        guard !finished else { return }
        flushRequested += 1
        let target = flushRequested
        mutex.signalWork()
        while flushDone < target && !finished { mutex.waitDone() }
    }

    /// Drains the queue, writes `audit.close`, fsyncs, signs a final
    /// checkpoint and stops the writer thread. Later `record(...)` calls are
    /// counted in `droppedAfterClose`. Idempotent.
    public func close() {
        mutex.lock()
        let first = !closing
        closing = true
        paused = false
        mutex.signalWork()
        while !finished { mutex.waitDone() }
        mutex.unlock()
        if first { pthread_join(thread, nil) }
    }

    public var statistics: Statistics {
        mutex.withLock {
            var s = appenderStats
            s.accepted = accepted
            s.dropped = dropped
            s.droppedAfterClose = droppedAfterClose
            s.queueHighWater = highWater
            return s
        }
    }

    // MARK: test hooks

    /// Stops the writer thread from taking work until `resumeWriting()`, so
    /// a test can fill the queue. (`flush()` while paused would wait forever.)
    func pauseWriting() {
        mutex.withLock { paused = true }
    }

    func resumeWriting() {
        mutex.withLock {
            paused = false
            mutex.signalWork()
        }
    }

    /// Makes the writer thread look at its clock now (after a test moved a
    /// `ManualAuditClock`) without forcing an fsync.
    func wake() {
        mutex.withLock {
            wakeRequested = true
            mutex.signalWork()
        }
    }

    // MARK: the writer thread

    private func run() {
        var batch = [PendingEvent]()
        batch.reserveCapacity(capacity)
        while true {
            mutex.lock()
            while true {
                if !paused && (!queue.isEmpty || !lost.isEmpty || closing || flushRequested > flushDone || wakeRequested) { break }
                var wait: UInt64?
                if !paused, let deadline = appender.nextDeadline() {
                    let now = clock.monotonicNanos()
                    if deadline <= now { break }
                    wait = deadline - now
                }
                writerIdle = true
                mutex.waitWork(nanos: wait)
                writerIdle = false
            }
            swap(&queue, &batch)
            let queueLoss = lost
            lost = LossTally()
            let flushTarget = flushRequested
            let closingNow = closing
            wakeRequested = false
            mutex.unlock()

            if !batch.isEmpty || !queueLoss.isEmpty {
                appender.write(batch: batch, queueLoss: queueLoss)
            }
            batch.removeAll(keepingCapacity: true)

            if closingNow {
                let s = statistics
                appender.close(fields: ["accepted": String(s.accepted), "dropped": String(s.dropped),
                                        "written": String(appender.stats.written)])
                mutex.withLock {
                    appenderStats = appender.stats
                    finished = true
                    mutex.broadcastDone()
                }
                return
            }
            appender.syncIfDue(force: flushTarget > flushDone)
            appender.checkpointIfDue()
            mutex.withLock {
                appenderStats = appender.stats
                if flushTarget > flushDone {
                    flushDone = flushTarget
                    mutex.broadcastDone()
                }
            }
        }
    }
}
