#if canImport(Glibc)
import Glibc
#endif
import CCap

/// Capabilities belong to a thread, not a process: `cap_set_proc` changes the
/// calling thread only, so a thread started before the sandbox (the audit
/// writer) would keep root's capabilities. (`setuid` does not have this
/// problem: glibc runs it on every thread.) This drops them in every other
/// thread the way libcap's psx does: a signal whose handler calls `capset(2)`
/// with the sets prepared here, in that thread. Then each thread's
/// `/proc/self/task/<tid>/status` is read back; a thread that did not comply
/// (it blocks the signal) is an error, never a silent hole.
enum ThreadCapabilities {
    /// The signal used to reach the other threads: SIGPROF, because
    /// libdispatch's worker threads block every signal except the
    /// synchronous ones and SIGPROF (Swift's crash handler reaches them the
    /// same way). Its previous action is restored afterwards.
    static let signal = SIGPROF

    /// The capabilities threads other than the caller hold beyond `keep`, by thread id.
    static func excess(keep: UInt64, system: SandboxSystem) -> [Int32: (name: String, caps: UInt64)] {
        let me = system.threadID()
        var out: [Int32: (String, UInt64)] = [:]
        for tid in system.threadIDs() where tid != me {
            guard let text = system.threadStatus(tid),
                  let status = try? ProcessSandboxStatus(statusText: text) else { continue } // it ended
            let held = (status.capEff | status.capPrm | status.capInh | status.capAmb) & ~keep
            if held != 0 { out[tid] = (status.name, held) }
        }
        return out
    }

    /// Makes every other thread's effective, permitted and inheritable sets
    /// equal `keep` (ambient capabilities go with them). Waits at most `timeoutMicros`.
    static func dropInOtherThreads(keep: UInt64, timeoutMicros: UInt32 = 5_000_000, system: SandboxSystem) throws {
        var pending = excess(keep: keep, system: system)
        guard !pending.isEmpty else { return }
        let m = DropMemory.shared
        m.header.pointee = __user_cap_header_struct(version: 0x2008_0522, pid: 0) // _LINUX_CAPABILITY_VERSION_3, this thread
        for i in 0..<2 {
            let word = UInt32(truncatingIfNeeded: keep >> (32 * UInt64(i)))
            m.data[i] = __user_cap_data_struct(effective: word, permitted: word, inheritable: word & 0)
        }
        let sig = signal
        var e = system.installSignalHandler(sig, dropInThisThread, 0)
        if e != 0 { throw SandboxError(step: .capabilities, call: "sigaction(SIGPROF)", errno: e) }
        // Restored through SIG_IGN: an instance still pending in a thread that
        // blocks it is discarded instead of killing the process later.
        defer { _ = system.restoreSignal(sig) }
        for tid in pending.keys.sorted() {
            e = system.signalThread(tid, sig)
            if e != 0 && e != ESRCH { throw SandboxError(step: .capabilities, call: "tgkill(\(tid))", errno: e) }
        }
        var waited: UInt32 = 0
        while !pending.isEmpty && waited < timeoutMicros {
            system.sleepMicroseconds(1000)
            waited += 1000
            pending = excess(keep: keep, system: system)
        }
        if let (tid, t) = pending.sorted(by: { $0.key < $1.key }).first {
            throw SandboxError(step: .capabilities, message: "thread \(tid) (\(t.name)) still holds \(ProcessSandboxStatus.capabilityNames(t.caps)): it did not run the capability-drop signal (SIGPROF), probably because it blocks it; start that thread after the sandbox is applied, or pass --user")
        }
    }
}

/// The sets the signal handler installs, prepared before any thread is signalled.
private struct DropMemory {
    let header: UnsafeMutablePointer<__user_cap_header_struct>
    let data: UnsafeMutablePointer<__user_cap_data_struct>

    static let shared = DropMemory(header: .allocate(capacity: 1), data: .allocate(capacity: 2))
}

/// Runs in each signalled thread: one `capset(2)`, async-signal-safe.
private func dropInThisThread(_ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    let saved = errno
    _ = capset(DropMemory.shared.header, DropMemory.shared.data)
    errno = saved
}
