#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceBenchStats

/// A flow in a process of its own: this same executable, started with the
/// hidden `--flood-worker` options, so that a noisy tenant is another
/// process with its own threads, as a neighbour in another container is.
/// Its control page is a file both processes map.
final class WorkerFlow: FlowHandle {
    let control: FlowControl
    let name: String
    let pid: pid_t
    private var endedWith: String?

    /// `nice`: the worker's CPU priority (setpriority); 19 gives it the
    /// kernel's smallest CPU weight, as a container's cgroup would bound it.
    init(name: String, socket: String, shape: FlowShape, controlPath: String, nice: Int32 = 0) throws {
        self.name = name
        control = try FlowControl(path: controlPath, create: true)
        let me = try Self.ownExecutable()
        let args = [me, "--flood-worker", shape.encoded, "--flood-socket", socket, "--flood-control", controlPath]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, me, &actions, nil, &argv, environ)
        guard rc == 0 else { throw SystemCallError("posix_spawn(\(me) --flood-worker)", rc) }
        pid = child
        if nice != 0 && setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(child), nice) != 0 {
            let e = errno
            kill(child, SIGKILL)
            _ = reap(blocking: true)
            throw SystemCallError("setpriority(\(child), \(nice))", e)
        }
    }

    static func ownExecutable() throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { throw SystemCallError("readlink(/proc/self/exe)", errno) }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func exitReason() -> String? { reap(blocking: false) }

    /// CPU time the worker has used so far (user + system), in ns.
    func cpuNanos() -> UInt64? { ProcessCPU.nanos(pid: pid) }

    private func reap(blocking: Bool) -> String? {
        if let endedWith { return endedWith }
        var status: Int32 = 0
        guard waitpid(pid, &status, blocking ? 0 : WNOHANG) == pid else { return nil }
        let signal = status & 0x7f
        endedWith = signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
        return endedWith
    }

    /// Waits up to 20 s for the worker to exit (it drains first), then kills it.
    func join() throws {
        let deadline = monotonicNanos() + 20_000_000_000
        while reap(blocking: false) == nil {
            if monotonicNanos() > deadline {
                kill(pid, SIGKILL)
                _ = reap(blocking: true)
                throw BenchFailure("\(name) (pid \(pid)) did not stop within 20 s; killed it")
            }
            usleep(1_000)
        }
        if control.status == .failed { throw BenchFailure("\(name): \(control.failureMessage)") }
        if endedWith != "exit status 0" { throw BenchFailure("\(name) (pid \(pid)) ended with \(endedWith ?? "?")") }
    }

    deinit {
        if endedWith == nil {
            control.command = .stop
            try? join()
        }
    }

    /// The worker's side: runs the flow, exits 0 when it drained, 1 if it
    /// failed (the reason is in the control page). It dies with the
    /// coordinator (within 0.2 s), so a crashed bench leaves no flooder behind.
    static func main(shape text: String, socket: String, controlPath: String) -> Int32 {
        // prctl(PR_SET_PDEATHSIG) is variadic, which Swift cannot call: a
        // thread watches for the coordinator to go away instead.
        let parent = getppid()
        if parent == 1 { return 1 }
        _ = try? BenchThread {
            while getppid() == parent { usleep(200_000) }
            _exit(1)
        }
        signal(SIGPIPE, SIG_IGN)
        let control: FlowControl
        do {
            control = try FlowControl(path: controlPath, create: false)
        } catch {
            FileHandle.standardError.write("sluice-bench flood worker: \(error)\n".data(using: .utf8)!)
            return 1
        }
        do {
            let shape = try FlowShape(decoding: text)
            try FlowBody.run(socket: socket, shape: shape, control: control)
            return 0
        } catch {
            if control.status != .failed { control.fail("\(error)") }
            return 1
        }
    }
}

/// CPU time of a process from /proc/<pid>/stat (utime + stime, fields 14
/// and 15, in clock ticks; parsed by `ProcFields`).
enum ProcessCPU {
    static func nanos(pid: pid_t) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let ticks = ProcFields.cpuTicks(stat: text) else { return nil }
        return Stats.ticksToNanos(ticks, ticksPerSecond: UInt64(max(sysconf(Int32(_SC_CLK_TCK)), 1)))
    }
}

/// A process's memory as /proc reports it, in KiB: resident set (VmRSS of
/// /proc/<pid>/status) and proportional set (Pss of smaps_rollup, where a
/// page shared by two processes counts half; nil where it cannot be read).
struct ProcessMemory {
    let rssKiB: UInt64
    let pssKiB: UInt64?

    init?(pid: pid_t) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let rss = ProcFields.kilobytes("VmRSS", in: status) else { return nil }
        rssKiB = rss
        pssKiB = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8))
            .flatMap { ProcFields.kilobytes("Pss", in: $0) }
    }
}
