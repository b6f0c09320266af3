import SluicePolicy

/// Where loop results go, so the optimizer cannot drop the loops that made
/// them: a store to a global it must keep.
nonisolated(unsafe) private var blackHoleSink: UInt64 = 0

@inline(never)
func blackHole(_ value: UInt64) {
    blackHoleSink &+= value
}

/// How long each decision loop runs.
struct DecisionPlan {
    var secondsPerLoop: Double
}

/// Decisions made in a timed loop.
struct DecisionCost {
    let decisions: Int
    let nanos: UInt64

    var nanosPerDecision: Double { Double(nanos) / Double(max(decisions, 1)) }
    var decisionsPerSecond: Double { Double(decisions) * 1e9 / Double(max(nanos, 1)) }
}

/// The policy engine's decisions, timed in tight loops over the repository's
/// policies: the per-work-request check the router makes on the data path,
/// and the control-path decisions it makes before a verb runs.
struct PolicyDecisions {
    let engine: PolicyEngine
    let plan: DecisionPlan
    /// The mask the router stores on a QP when it connects (alpha to alpha).
    let connectionMask: OperationSet
    /// `IBV_WR_*` opcodes 0...10: the seven policies name, and four they do
    /// not (local invalidate, bind MW, send with invalidate, TSO), in an
    /// order the branch predictor cannot learn in one pass.
    let opcodes: [UInt32]

    static let opcodeCount = 4096

    init(policies directory: String, plan: DecisionPlan) throws {
        let set: PolicySet
        do {
            set = try PolicySet.load(directory: directory)
        } catch {
            throw BenchFailure("cannot load the policies in \(directory): \(error)")
        }
        engine = PolicyEngine(set)
        self.plan = plan
        for tenant in ["alpha", "beta"] where set[tenant] == nil {
            throw BenchFailure("the decisions measured are alpha's and beta's, and \(directory) defines no tenant \(tenant)")
        }
        connectionMask = engine.connectionOperations(from: "alpha", to: "alpha")
        var x: UInt64 = 0x2545_f491_4f6c_dd1d
        opcodes = (0..<Self.opcodeCount).map { _ in
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            return UInt32(x % 11)
        }
    }

    /// Runs `batch` (which makes `perBatch` decisions and returns something
    /// derived from all of them) until `plan.secondsPerLoop` have passed.
    private func timed(perBatch: Int, _ batch: (Int) -> UInt64) -> DecisionCost {
        blackHole(batch(0)) // warm: caches, branch predictors, lazy globals
        let limit = UInt64(plan.secondsPerLoop * 1e9)
        var batches = 0
        var result: UInt64 = 0
        let start = monotonicNanos()
        var elapsed: UInt64 = 0
        repeat {
            result &+= batch(batches)
            batches += 1
            elapsed = monotonicNanos() &- start
        } while elapsed < limit
        blackHole(result)
        return DecisionCost(decisions: batches * perBatch, nanos: elapsed)
    }

    // MARK: data path

    /// The router's check, as `SoftwareFabric` makes it for every work request.
    func workRequestCheck() -> DecisionCost {
        let mask = connectionMask
        return opcodes.withUnsafeBufferPointer { ops in
            timed(perBatch: ops.count) { _ in
                var allowed: UInt64 = 0
                for op in ops where mask.allowsWireOpcode(op) { allowed &+= 1 }
                return allowed
            }
        }
    }

    /// The same loop with a bare AND (no range check on the opcode).
    func plainAnd() -> DecisionCost {
        let raw = connectionMask.rawValue
        return opcodes.withUnsafeBufferPointer { ops in
            timed(perBatch: ops.count) { _ in
                var allowed: UInt64 = 0
                for op in ops where raw & (1 &<< (op & 31)) != 0 { allowed &+= 1 }
                return allowed
            }
        }
    }

    /// The same loop deciding nothing: read each opcode and add it up.
    func emptyLoop() -> DecisionCost {
        opcodes.withUnsafeBufferPointer { ops in
            timed(perBatch: ops.count) { _ in
                var sum: UInt64 = 0
                for op in ops { sum &+= UInt64(op) }
                return sum
            }
        }
    }

    // MARK: control path

    private static let controlBatch = 256

    /// What a decision left behind, so none can be skipped: a denial's
    /// reason is formatted when it is made, and its length is read here.
    @inline(__always)
    private static func weight(_ d: Decision) -> UInt64 {
        switch d {
        case .allow(let rule): return UInt64(rule.utf8.count)
        case .deny(_, let reason, let errno): return UInt64(reason.utf8.count) &+ UInt64(errno)
        }
    }

    private func control(_ decide: (Int) -> Decision) -> DecisionCost {
        timed(perBatch: Self.controlBatch) { b in
            var w: UInt64 = 0
            for i in 0..<Self.controlBatch { w &+= Self.weight(decide(b &* Self.controlBatch &+ i)) }
            return w
        }
    }

    /// A 4 KiB to 1 MiB local+remote-write region, within alpha's quotas.
    func regMRAllowed() -> DecisionCost {
        let access = MemoryAccess([.localWrite, .remoteWrite]).rawValue
        return control { i in
            engine.regMR(tenant: "alpha", bytes: UInt64(4096 << (i & 8)), access: access,
                         currentCount: i & 1023, currentBytes: UInt64(i & 1023) << 20)
        }
    }

    /// Remote write, which beta's memoryAccess does not allow.
    func regMRDenied() -> DecisionCost {
        let access = MemoryAccess([.localWrite, .remoteWrite]).rawValue
        return control { i in
            engine.regMR(tenant: "beta", bytes: UInt64(4096 << (i & 8)), access: access,
                         currentCount: i & 7, currentBytes: 0)
        }
    }

    /// The QP shape the bench's endpoints create, within alpha's quotas.
    func createQPAllowed() -> DecisionCost {
        control { i in
            engine.createQP(tenant: "alpha", sendDepth: 64, recvDepth: UInt32(16 + i & 63), sendSGE: 1, recvSGE: 1,
                            inlineBytes: 64, current: i & 511)
        }
    }

    func connectAllowed() -> DecisionCost {
        control { _ in engine.connect(from: "alpha", to: "alpha") }
    }

    /// Alpha does not list beta under peers.
    func connectDenied() -> DecisionCost {
        control { _ in engine.connect(from: "alpha", to: "beta") }
    }
}
