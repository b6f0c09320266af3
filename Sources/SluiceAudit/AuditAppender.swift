#if canImport(Glibc)
import Glibc
#endif

/// An event waiting to become a record: everything but `seq`, `prev` and
/// `hash`, which only the writer thread assigns.
struct PendingEvent {
    var time: AuditTimestamp
    var tenant: String?
    var subject: AuditSubject?
    var event: String
    var verb: String?
    var object: String?
    var decision: AuditDecision?
    var rule: String?
    var reason: String?
    var fields: [String: String]
}

/// Records that never reached the file, and why.
struct LossTally {
    var count: UInt64 = 0
    var denials: UInt64 = 0
    var byTenant: [String: UInt64] = [:]
    var first: AuditTimestamp?
    var last: AuditTimestamp?
    var causes: [String] = []

    var isEmpty: Bool { count == 0 }

    mutating func add(_ e: PendingEvent) {
        count += 1
        if e.decision == .deny { denials += 1 }
        let t = e.tenant ?? "(router)"
        if byTenant[t] != nil || byTenant.count < 32 {
            byTenant[t, default: 0] += 1
        } else {
            byTenant["(others)", default: 0] += 1
        }
        if first == nil || e.time < first! { first = e.time }
        if last == nil || e.time > last! { last = e.time }
    }

    mutating func merge(_ o: LossTally) {
        guard !o.isEmpty else { return }
        count += o.count
        denials += o.denials
        for (t, n) in o.byTenant { byTenant[t, default: 0] += n }
        if let f = o.first, first == nil || f < first! { first = f }
        if let l = o.last, last == nil || l > last! { last = l }
        for c in o.causes where !causes.contains(c) { causes.append(c) }
    }

    func fields() -> [String: String] {
        var f = ["lost": String(count), "lostDenials": String(denials),
                 "lostByTenant": byTenant.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
                 "cause": causes.joined(separator: "; ")]
        if let first { f["firstLost"] = first.rfc3339 }
        if let last { f["lastLost"] = last.rfc3339 }
        return f
    }
}

/// The writer thread's side: the open files, the chain head, rotation,
/// fsync and checkpoints. Only one thread touches it (the caller of
/// `AuditWriter.init`, then the writer thread).
final class AuditAppender {
    let config: AuditConfiguration
    let path: String
    private var fd: Int32 = -1
    private var size: Int64 = 0
    private(set) var seq: UInt64 = 0
    private(set) var head = AuditRecord.genesis
    private var nextRotation = 1
    /// After a failed rotation, the size at which to try again.
    private var rotationRetryAt: Int64 = 0

    private let key: AuditKey?
    private let checkpointPath: String?
    private var checkpointFD: Int32 = -1
    private var checkpointedSeq: UInt64 = 0
    private var checkpointedAt: UInt64 = 0

    /// Monotonic time of the oldest write not yet fsynced.
    private var unsyncedSince: UInt64?
    /// Sealed lines not yet written.
    private var pending: [UInt8] = []
    /// The chain head and file size as of the last successful write.
    private var committed: (seq: UInt64, head: String, size: Int64) = (0, AuditRecord.genesis, 0)
    /// The callers' events among the pending lines, and the queue losses
    /// they report: lost too if the write fails.
    private var pendingLoss = LossTally()
    private var pendingWritten: UInt64 = 0
    /// Records lost to failed writes, reported before the next batch.
    private var carriedLoss = LossTally()
    private var pendingCarriesLoss = false
    /// Problems to record as `audit.error` with the next batch; the first
    /// `notesPending` of them are among the pending lines.
    private var notes: [String] = []
    private var notesPending = 0

    var stats = AuditWriter.Statistics()

    private var clock: any AuditClock { config.clock }

    init(config: AuditConfiguration) throws {
        self.config = config
        path = config.path
        key = try config.keyFile.map { try AuditKey(file: $0) }
        checkpointPath = config.resolvedCheckpointPath
        try open()
    }

    // MARK: open and resume

    /// Opens the files, finds where the chain stands, cuts a torn tail
    /// (keeping its bytes in the `audit.open` record), writes `audit.open`
    /// and fsyncs. Throws when the log cannot be continued safely.
    private func open() throws {
        var openFields: [String: String] = [
            "format": "sluice-audit/1",
            "writerPid": String(getpid()),
            "queueCapacity": String(config.queueCapacity),
            "fsyncMs": String(config.fsyncInterval.nanoseconds / 1_000_000),
            "rotateBytes": String(config.rotateBytes),
        ]
        nextRotation = (try AuditLogFiles.numbered(path).last?.number ?? 0) + 1
        let existed = try AuditSys.status(of: path) != nil
        fd = try AuditSys.open(path, O_RDWR | O_APPEND | O_CREAT)
        size = Int64(try AuditSys.status(of: fd, path: path).st_size)
        var resumedFrom: String?
        var torn: FileTail?
        if size > 0 {
            let tail = try FileTail.read(fd: fd, path: path, size: size, lines: 1)
            if !tail.torn.isEmpty { torn = tail }
            if let last = tail.lines.last {
                try resume(from: last.bytes, file: path, offset: last.offset)
                resumedFrom = AuditSys.baseName(of: path)
            }
        }
        if resumedFrom == nil, let rotated = try AuditLogFiles.numbered(path).last {
            let rfd = try AuditSys.open(rotated.path, O_RDONLY)
            defer { AuditSys.close(rfd) }
            let rsize = Int64(try AuditSys.status(of: rfd, path: rotated.path).st_size)
            let tail = try FileTail.read(fd: rfd, path: rotated.path, size: rsize, lines: 1)
            guard tail.torn.isEmpty, let last = tail.lines.last else {
                throw AuditError("\(rotated.path): the newest rotated audit file does not end with a complete record; "
                                 + "run `sluice audit verify` on the log, then move it aside to start a new one")
            }
            try resume(from: last.bytes, file: rotated.path, offset: last.offset)
            resumedFrom = AuditSys.baseName(of: rotated.path)
        }
        // Only now that the chain can be continued, cut the torn tail (its
        // bytes go into audit.open): a refusal above leaves the file as found.
        if let torn {
            try AuditSys.truncate(fd, to: torn.tornOffset, path: path)
            size = torn.tornOffset
            openFields["tornTailBytes"] = String(torn.torn.count)
            openFields["tornTailOffset"] = String(torn.tornOffset)
            openFields["tornTail"] = String(decoding: torn.torn.prefix(512), as: UTF8.self)
        }
        committed = (seq, head, size)
        openFields["continues"] = resumedFrom.map { "seq \(seq) in \($0)" } ?? "new log"

        if let checkpointPath, let key {
            checkpointFD = try AuditSys.open(checkpointPath, O_RDWR | O_APPEND | O_CREAT)
            let csize = Int64(try AuditSys.status(of: checkpointFD, path: checkpointPath).st_size)
            openFields["checkpoints"] = "hmac-sha256 in \(AuditSys.baseName(of: checkpointPath))"
            if csize > 0 {
                let tail = try FileTail.read(fd: checkpointFD, path: checkpointPath, size: csize, lines: 1)
                if !tail.torn.isEmpty {
                    try AuditSys.truncate(checkpointFD, to: tail.tornOffset, path: checkpointPath)
                    openFields["checkpointTornTailBytes"] = String(tail.torn.count)
                }
                if let last = tail.lines.last {
                    if let c = try? AuditCheckpoint(line: last.bytes), c.isAuthentic(under: key) {
                        checkpointedSeq = min(c.seq, seq)
                        if c.seq > seq {
                            openFields["warning"] = "the newest checkpoint is at seq \(c.seq) but the log ends at seq \(seq): the log was truncated or replaced"
                        } else if c.seq == seq && c.hash != head {
                            openFields["warning"] = "the newest checkpoint's hash for seq \(c.seq) differs from the log's: the log was replaced"
                        }
                    } else {
                        openFields["warning"] = "the last line of the checkpoint file is not a checkpoint signed with this key"
                    }
                }
            }
        } else {
            openFields["checkpoints"] = "off: no key file was given, so a truncated tail of this log cannot be detected"
        }

        append(PendingEvent(time: clock.now(), event: "audit.open", fields: openFields))
        try writePending()
        try sync()
        if !existed { try AuditSys.fsyncDirectory(of: path) }
        if key != nil { try checkpoint() }
    }

    private func resume(from line: [UInt8], file: String, offset: Int64) throws {
        let r: AuditRecord
        do {
            r = try AuditRecord(line: line)
        } catch {
            throw AuditError("\(file): the last complete line (at byte \(offset)) is not an audit record (\(error)); "
                             + "run `sluice audit verify` on the log, then move it aside to start a new one")
        }
        // Continue from the hash the record carries: if the record was
        // edited, the verifier reports it there, and the chain after it
        // still links.
        guard r.seq < UInt64.max / 2 else {
            throw AuditError("\(file): the last record's seq \(r.seq) is not one this writer could have written; "
                             + "run `sluice audit verify` on the log, then move it aside to start a new one")
        }
        seq = r.seq
        head = r.hash
    }

    // MARK: appending

    /// Seals `e` as the next record and adds it to the pending bytes,
    /// rotating first when the active file is full.
    func append(_ e: PendingEvent) {
        if config.rotateBytes > 0, size + Int64(pending.count) >= max(config.rotateBytes, rotationRetryAt) {
            rotate()
        }
        var r = AuditRecord(seq: seq + 1, time: e.time.rfc3339, host: config.host, tenant: e.tenant, subject: e.subject,
                            event: e.event, verb: e.verb, object: e.object, decision: e.decision, rule: e.rule,
                            reason: e.reason, fields: e.fields, prev: head)
        pending.append(contentsOf: r.seal())
        seq = r.seq
        head = r.hash
    }

    /// Writes one batch taken from the queue, then a record of what the
    /// queue lost after it. A failed write is undone (see `writePending`).
    func write(batch: [PendingEvent], queueLoss: LossTally) {
        if !carriedLoss.isEmpty {
            append(PendingEvent(time: clock.now(), event: "audit.loss", fields: carriedLoss.fields()))
            pendingCarriesLoss = true
        }
        for note in notes {
            append(PendingEvent(time: clock.now(), event: "audit.error", reason: note, fields: [:]))
        }
        notesPending = notes.count
        for e in batch {
            append(e)
            pendingLoss.add(e)
            pendingWritten += 1
        }
        if !queueLoss.isEmpty {
            append(PendingEvent(time: clock.now(), event: "audit.loss", fields: queueLoss.fields()))
            pendingLoss.merge(queueLoss)
        }
        do {
            try writePending()
        } catch {
            // writePending counted the loss; the next batch reports it.
        }
    }

    /// Writes the pending records. On success they are committed: counted as
    /// written, and what they reported (carried losses, notes) is done. On
    /// failure the file is cut back to its last committed record, the chain
    /// head rolls back with it, and the pending records are carried as a
    /// loss to report with the next batch.
    private func writePending() throws {
        guard !pending.isEmpty else { return }
        do {
            try AuditSys.writeAll(fd, pending, path: path)
        } catch {
            stats.writeErrors += 1
            stats.lastError = "\(error)"
            if (try? AuditSys.truncate(fd, to: committed.size, path: path)) != nil {
                size = committed.size
                seq = committed.seq
                head = committed.head
            } else {
                // The file may now end in a torn record; the chain head stays
                // at what was sealed, so a later record still links.
                notes.append("cannot cut back a failed write: \(error)")
            }
            var lost = pendingLoss
            lost.causes.append("write failed: \(error)")
            carriedLoss.merge(lost)
            pendingLoss = LossTally()
            pendingWritten = 0
            pendingCarriesLoss = false
            notesPending = 0
            pending.removeAll(keepingCapacity: true)
            throw error
        }
        size += Int64(pending.count)
        pending.removeAll(keepingCapacity: true)
        committed = (seq, head, size)
        stats.written += pendingWritten
        pendingWritten = 0
        pendingLoss = LossTally()
        if pendingCarriesLoss {
            carriedLoss = LossTally()
            pendingCarriesLoss = false
        }
        notes.removeFirst(min(notesPending, notes.count))
        notesPending = 0
        if unsyncedSince == nil { unsyncedSince = clock.monotonicNanos() }
    }

    // MARK: durability

    func sync() throws {
        guard unsyncedSince != nil else { return }
        try AuditSys.fsync(fd, path: path)
        unsyncedSince = nil
        stats.syncs += 1
    }

    /// fsync when the oldest unsynced write has waited the fsync interval.
    func syncIfDue(force: Bool) {
        guard let since = unsyncedSince else { return }
        let interval = config.fsyncInterval.nanoseconds
        guard force || interval == 0 || clock.monotonicNanos() &- since >= interval else { return }
        do {
            try sync()
        } catch {
            stats.writeErrors += 1
            stats.lastError = "\(error)"
            notes.append("\(error): records written since the last successful fsync may not be durable")
            unsyncedSince = nil
        }
    }

    func checkpointIfDue() {
        guard key != nil, seq > checkpointedSeq,
              clock.monotonicNanos() &- checkpointedAt >= config.checkpointInterval.nanoseconds else { return }
        do {
            try checkpoint()
        } catch {
            checkpointedAt = clock.monotonicNanos()  // retry after another interval, not at once
            stats.writeErrors += 1
            stats.lastError = "\(error)"
            notes.append("cannot sign a checkpoint: \(error)")
        }
    }

    /// Monotonic time at which an fsync or a checkpoint falls due, if any.
    func nextDeadline() -> UInt64? {
        var d: UInt64?
        if let since = unsyncedSince { d = since &+ config.fsyncInterval.nanoseconds }
        if key != nil, seq > checkpointedSeq {
            let c = checkpointedAt &+ config.checkpointInterval.nanoseconds
            d = min(d ?? c, c)
        }
        return d
    }

    /// Signs the head: fsync the log first, so a checkpoint never vouches
    /// for a record a crash could still take away.
    func checkpoint() throws {
        guard let key, let checkpointPath else { return }
        try writePending()
        try sync()
        let c = AuditCheckpoint.sign(seq: seq, hash: head, time: clock.now(), key: key)
        var line = c.lineBytes
        line.append(0x0a)
        try AuditSys.writeAll(checkpointFD, line, path: checkpointPath)
        try AuditSys.fsync(checkpointFD, path: checkpointPath)
        checkpointedSeq = seq
        checkpointedAt = clock.monotonicNanos()
        stats.checkpoints += 1
    }

    // MARK: rotation

    /// `audit.log` becomes `audit.log.N` (the next free number) and a new
    /// `audit.log` starts with an `audit.rotate` record whose `prev` is the
    /// old file's last hash. The old file is complete and fsynced (and
    /// checkpointed) before the rename.
    private func rotate() {
        let target = "\(path).\(nextRotation)"
        do {
            try writePending()
            try sync()
            if key != nil, seq > checkpointedSeq { try checkpoint() }
            guard try AuditSys.status(of: target) == nil else { throw AuditError("\(target) already exists") }
            try AuditSys.rename(path, target)
        } catch {
            rotationRetryAt = size + pending.count.int64 + max(config.rotateBytes, 1)
            stats.writeErrors += 1
            stats.lastError = "\(error)"
            notes.append("cannot rotate: \(error)")
            return
        }
        let lastSeq = seq
        nextRotation += 1
        do {
            let newFD = try AuditSys.open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL)
            AuditSys.close(fd)
            fd = newFD
            size = 0
            committed.size = 0
            rotationRetryAt = 0
            stats.rotations += 1
            try? AuditSys.fsyncDirectory(of: path)
        } catch {
            // Keep appending to the renamed file: the chain stays whole,
            // only the name is off until the next rotation.
            rotationRetryAt = size + max(config.rotateBytes, 1)
            notes.append("rotated to \(target) but cannot create \(path): \(error)")
            stats.writeErrors += 1
            stats.lastError = "\(error)"
        }
        var r = AuditRecord(seq: seq + 1, time: clock.now().rfc3339, host: config.host, event: "audit.rotate",
                            fields: ["previousFile": AuditSys.baseName(of: target), "previousLastSeq": String(lastSeq)],
                            prev: head)
        pending.append(contentsOf: r.seal())
        seq = r.seq
        head = r.hash
    }

    // MARK: close

    func close(fields: [String: String]) {
        write(batch: [], queueLoss: LossTally())
        append(PendingEvent(time: clock.now(), event: "audit.close", fields: fields))
        try? writePending()
        syncIfDue(force: true)
        if key != nil {
            do {
                try checkpoint()
            } catch {
                stats.writeErrors += 1
                stats.lastError = "\(error)"
            }
        }
        AuditSys.close(fd)
        if checkpointFD >= 0 { AuditSys.close(checkpointFD) }
        fd = -1
        checkpointFD = -1
    }
}

extension Int {
    var int64: Int64 { Int64(self) }
}
