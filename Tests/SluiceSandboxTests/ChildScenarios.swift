import Foundation
@testable import SluiceSandbox

/// What a sandboxed child does, by scenario name. Each runs in its own
/// process (see `SandboxedChildEntry`) and reports through `ChildOutput`.
enum ChildScenarios {
    typealias Scenario = (ChildOutput, [String: String]) -> Void

    static let all: [String: Scenario] = [
        "probe": probe,
        "wait": waitAfterApplying,
        "violation": violation,
        "violation-in-thread": violationInThread,
        "log": logMode,
        "off": offMode,
        "crash": crash,
        "thread-started-before": threadStartedBefore,
        "thread-blocking-the-drop-signal": threadBlockingTheDropSignal,
    ]

    /// Options from the environment: SLUICE_SANDBOX_MODE, _USER, _FEATURES, _REPORT_FILE.
    static func options(_ env: [String: String]) -> Sandbox.Options {
        var o = Sandbox.Options(mode: SandboxMode(rawValue: env["SLUICE_SANDBOX_MODE"] ?? "enforce") ?? .enforce)
        o.programName = "sluice-sandbox-test"
        o.user = env["SLUICE_SANDBOX_USER"]
        if let f = env["SLUICE_SANDBOX_FEATURES"], !f.isEmpty { o.features = Set(f.split(separator: ",").map(String.init)) }
        if let path = env["SLUICE_SANDBOX_REPORT_FILE"] {
            o.violationReportFD = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        }
        return o
    }

    /// Applies the sandbox or reports why not and exits 3.
    @discardableResult
    static func apply(_ options: Sandbox.Options, _ out: ChildOutput) -> SandboxReport {
        do {
            let report = try Sandbox.apply(options)
            out.line("applied", report.description)
            for note in report.notes { out.line("note", note) }
            return report
        } catch {
            out.line("error", "\(error)")
            _exit(3)
        }
    }

    /// Waits until the parent closes our stdin.
    static func waitForParent(_ out: ChildOutput) {
        out.line("ready")
        var byte: UInt8 = 0
        while read(0, &byte, 1) > 0 {}
    }

    // MARK: scenarios

    /// The test variant of the filter (refusals answer EHWPOISON), then every
    /// probe, then every other syscall number.
    static func probe(_ out: ChildOutput, _ env: [String: String]) {
        var o = options(env)
        o.defaultActionOverride = .errno(refusalErrno)
        let arena = ProbeArena()
        let probes = ProbeCatalog.make(arena, multiHost: o.features.contains("multiHost"), verbsDevice: o.features.contains("verbsDevice"),
                                       nestedVerbs: o.features.contains("nestedVerbs"))
        let numbers = probes.map { RawSyscall.number($0.syscall) }
        let policy = try! SeccompPolicy.embedded()
        let listed = Set(policy.syscalls.map { RawSyscall.number($0.name) })
        let names = (0..<ViolationReport.slotCount).map { SandboxSystem.live.resolveSyscallNumber(Int32($0)) }
        let forkNumbers: Set<Int> = [RawSyscall.number("fork"), RawSyscall.number("vfork")]
        installSignalReturnProbe()
        _ = RawSyscall.function // resolved before the filter
        apply(o, out)

        for (probe, number) in zip(probes, numbers) {
            var result = 0
            var err: Int32 = 0
            switch probe.kind {
            case .raw(let args, let after):
                (result, err) = RawSyscall.call(number, args)
                // Had the filter let fork or vfork through, the new process must not run the probes.
                if result == 0 && forkNumbers.contains(number) { _exit(0) }
                after?(result)
            case .thread:
                err = runThread()
                result = err == 0 ? 0 : -1
            case .signalReturn:
                signalReturned = false
                raise(SIGUSR1)
                result = signalReturned ? 0 : -1
            case .childExit:
                result = 0
            }
            out.line("probe", probe.syscall, probe.label, String(result), String(err))
        }

        // Every number the file does not list must be refused, whatever it is,
        // except the two the kernel never shows to seccomp: uretprobe (335,
        // Linux 6.11) and uprobe (336, 6.16) only work from a uprobe
        // trampoline and answer any other caller with SIGILL.
        let unfilterable: Set<Int> = [335, 336]
        var swept = 0
        for number in 0..<ViolationReport.slotCount where !listed.contains(number) && !unfilterable.contains(number) {
            let (r, e) = RawSyscall.call(number, [-1, -1, -1, -1, -1, -1])
            if r == 0 && forkNumbers.contains(number) { _exit(0) }
            swept += 1
            if e != refusalErrno {
                out.line("unrefused", String(number), names[number] ?? "?", String(r), String(e))
            }
        }
        // An x32 call (getpid with the x32 bit) is another ABI: refused too.
        let (r, e) = RawSyscall.call(0x4000_0000 | RawSyscall.number("getpid"), [])
        out.line("x32", String(r), String(e))
        out.line("swept", String(swept))
    }

    /// Applies (mode and user from the environment), then waits for the parent
    /// to inspect /proc/<pid>/status.
    static func waitAfterApplying(_ out: ChildOutput, _ env: [String: String]) {
        apply(options(env), out)
        waitForParent(out)
    }

    /// The real enforce filter, then a forbidden call: the process must die by SIGSYS.
    static func violation(_ out: ChildOutput, _ env: [String: String]) {
        let ptrace = RawSyscall.number("ptrace")
        apply(options(env), out)
        out.line("calling ptrace")
        let (r, e) = RawSyscall.call(ptrace, [-1, 0, 0, 0])
        out.line("survived", String(r), String(e))
    }

    /// As `violation`, from a thread other than the main one.
    static func violationInThread(_ out: ChildOutput, _ env: [String: String]) {
        _ = RawSyscall.function
        ptraceNumber = RawSyscall.number("ptrace")
        apply(options(env), out)
        var thread = pthread_t()
        _ = pthread_create(&thread, nil, { _ in
            _ = RawSyscall.call(ChildScenarios.ptraceNumber, [-1, 0, 0, 0])
            return nil
        }, nil)
        pthread_join(thread, nil)
        out.line("survived")
    }

    /// `--sandbox log`: a forbidden call runs (and fails on its own arguments).
    static func logMode(_ out: ChildOutput, _ env: [String: String]) {
        var o = options(env)
        o.mode = .log
        let ptrace = RawSyscall.number("ptrace")
        apply(o, out)
        let (r, e) = RawSyscall.call(ptrace, [-1, 0, 0, 0])
        out.line("ptrace", String(r), String(e))
        if let st = try? ProcessSandboxStatus.read() {
            out.line("status", String(st.seccomp), st.noNewPrivileges ? "1" : "0", ProcessSandboxStatus.hex(st.capEff))
        }
    }

    /// A Swift runtime trap inside the enforced sandbox.
    static func crash(_ out: ChildOutput, _ env: [String: String]) {
        apply(options(env), out)
        out.line("trapping")
        let values: [Int] = []
        out.line("unreachable", String(values[Int(getpid()) % 2 + 1]))
    }

    static func offMode(_ out: ChildOutput, _ env: [String: String]) {
        var o = options(env)
        o.mode = .off
        apply(o, out)
        if let st = try? ProcessSandboxStatus.read() { out.line("status", String(st.seccomp), st.noNewPrivileges ? "1" : "0") }
    }

    /// A thread started before the sandbox (as the audit writer is) must end up
    /// with no capabilities and the filter, like the main thread.
    static func threadStartedBefore(_ out: ChildOutput, _ env: [String: String]) {
        startIdleThread(blockingDropSignal: false)
        apply(options(env), out)
        waitForParent(out)
    }

    /// A thread that blocks the capability-drop signal keeps its capabilities:
    /// applying must fail and say so.
    static func threadBlockingTheDropSignal(_ out: ChildOutput, _ env: [String: String]) {
        startIdleThread(blockingDropSignal: true)
        var o = options(env)
        o.threadDropTimeoutMicros = 300_000 // it will never comply
        apply(o, out)
    }

    // MARK: helpers

    nonisolated(unsafe) static var idleThreadBlocksDropSignal = false
    nonisolated(unsafe) static var idleThreadStarted = DispatchSemaphore(value: 0)

    nonisolated(unsafe) static var idlePipe: [Int32] = [-1, -1]

    /// A pthread named for the test, idle for the rest of the process (on a
    /// pipe nobody writes; a signal interrupting it does not end it).
    static func startIdleThread(blockingDropSignal: Bool) {
        idleThreadBlocksDropSignal = blockingDropSignal
        _ = pipe(&idlePipe)
        var thread = pthread_t()
        _ = pthread_create(&thread, nil, { _ in
            let name = ChildScenarios.idleThreadBlocksDropSignal ? "blocks-sigprof" : "idle-before"
            let fd = open("/proc/thread-self/comm", O_WRONLY)
            _ = name.withCString { write(fd, $0, strlen($0)) }
            close(fd)
            if ChildScenarios.idleThreadBlocksDropSignal {
                var set = sigset_t()
                sigemptyset(&set)
                sigaddset(&set, ThreadCapabilities.signal)
                pthread_sigmask(SIG_BLOCK, &set, nil)
            }
            ChildScenarios.idleThreadStarted.signal()
            var byte: UInt8 = 0
            while read(ChildScenarios.idlePipe[0], &byte, 1) != 0 {}
            return nil
        }, nil)
        idleThreadStarted.wait()
    }

    /// pthread_create and join after the filter is loaded; 0 or the error.
    static func runThread() -> Int32 {
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { _ in nil }, nil)
        if rc != 0 { return rc }
        return pthread_join(thread, nil)
    }

    nonisolated(unsafe) static var signalReturned = false
    nonisolated(unsafe) static var ptraceNumber = 0

    static func installSignalReturnProbe() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in ChildScenarios.signalReturned = true }
        sigemptyset(&action.sa_mask)
        sigaction(SIGUSR1, &action, nil)
    }
}
