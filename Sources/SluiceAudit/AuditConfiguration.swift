/// How an `AuditWriter` writes. The router's flags map onto it:
///
/// | flag | member |
/// | --- | --- |
/// | `--audit-log FILE` | `path` |
/// | `--audit-checkpoints FILE` | `checkpointPath` |
/// | `--audit-key FILE` | `keyFile` |
/// | `--audit-fsync-ms N` | `fsyncInterval = .milliseconds(N)` |
/// | `--audit-rotate-bytes N` | `rotateBytes = N` |
public struct AuditConfiguration: Sendable {
    /// The active log file; rotated files are `path.1`, `path.2`, ….
    public var path: String
    /// The checkpoint file. Defaults to `path + ".checkpoints"` when a key
    /// file is given; giving it without a key file is an error.
    public var checkpointPath: String?
    /// The operator's HMAC key (see `AuditKey`). Without one, no checkpoints
    /// are written, and the log's `audit.open` record says so.
    public var keyFile: String?
    /// Records in flight between `record(...)` and the writer thread.
    /// When full, records are counted as lost and an `audit.loss` record says
    /// how many.
    public var queueCapacity: Int = 65_536
    /// The longest a written record waits for `fsync`. Zero: after every
    /// batch the writer thread takes from the queue.
    public var fsyncInterval: Duration = .milliseconds(100)
    /// Rotate the active file once it holds at least this many bytes (a file
    /// ends at most one record over it). Zero: never rotate.
    public var rotateBytes: Int64 = 0
    /// How often a checkpoint is signed while records keep coming. One is
    /// also signed at open, before each rotation, and at close.
    public var checkpointInterval: Duration = .seconds(60)
    /// The `host` member of every record.
    public var host: String = AuditSys.hostname()
    /// Time for records and for the intervals above.
    public var clock: any AuditClock = SystemAuditClock()

    public init(path: String, checkpointPath: String? = nil, keyFile: String? = nil) {
        self.path = path
        self.checkpointPath = checkpointPath
        self.keyFile = keyFile
    }

    var resolvedCheckpointPath: String? {
        guard keyFile != nil else { return nil }
        return checkpointPath ?? path + ".checkpoints"
    }

    func validate() throws {
        guard queueCapacity >= 1 else { throw AuditError("the audit queue capacity must be at least 1, not \(queueCapacity)") }
        guard rotateBytes >= 0 else { throw AuditError("the audit rotation size must be >= 0, not \(rotateBytes)") }
        guard fsyncInterval >= .zero else { throw AuditError("the audit fsync interval must be >= 0") }
        guard checkpointInterval > .zero else { throw AuditError("the audit checkpoint interval must be > 0") }
        if checkpointPath != nil && keyFile == nil {
            throw AuditError("audit checkpoints need a key file: give --audit-key FILE with --audit-checkpoints")
        }
        if let c = resolvedCheckpointPath, c == path {
            throw AuditError("the audit log and its checkpoint file must be different files")
        }
    }
}

extension Duration {
    var nanoseconds: UInt64 {
        let (s, atto) = components
        guard s >= 0 else { return 0 }
        return UInt64(s) * 1_000_000_000 + UInt64(atto / 1_000_000_000)
    }
}
