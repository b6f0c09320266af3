#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The pids of the routers running, for the fatal-signal handler below (a
/// C handler can capture nothing); 0 marks a free slot.
private let routerPIDSlots = 8
nonisolated(unsafe) private let routerPIDsForSignals: UnsafeMutablePointer<pid_t> = {
    let p = UnsafeMutablePointer<pid_t>.allocate(capacity: routerPIDSlots)
    p.initialize(repeating: 0, count: routerPIDSlots)
    return p
}()

private func rememberRouterPID(_ pid: pid_t) {
    for i in 0..<routerPIDSlots where routerPIDsForSignals[i] == 0 {
        routerPIDsForSignals[i] = pid
        return
    }
}

private func forgetRouterPID(_ pid: pid_t) {
    for i in 0..<routerPIDSlots where routerPIDsForSignals[i] == pid { routerPIDsForSignals[i] = 0 }
}

/// A real `sluice-router` child process with a private runtime directory.
/// Its output goes to `router.log` there, shown when something fails.
final class RouterProcess {
    let executable: String
    let runtimeDir: String
    let tenant: String
    let logPath: String
    private(set) var pid: pid_t = 0
    /// How the process ended, once it has been reaped.
    private var endedWith: String?

    var tenantSocket: String { socket(for: tenant) }
    var auditLogPath: String { runtimeDir + "/audit.log" }

    func socket(for tenant: String) -> String { "\(runtimeDir)/tenants/\(tenant).sock" }

    /// The `sluice-router` built next to this executable.
    static func siblingExecutable() throws -> String {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        guard n > 0 else { throw SystemCallError("readlink(/proc/self/exe)", errno) }
        let me = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (me as NSString).deletingLastPathComponent + "/sluice-router"
    }

    /// Starts the router and waits (up to 20 s) for the tenant's socket.
    /// `extraArguments` go to the router after the standard ones.
    init(executable: String, policies: String, tenant: String, spinMicros: UInt64?,
         extraArguments: [String] = []) throws {
        guard access(executable, X_OK) == 0 else {
            throw BenchFailure("no executable router at \(executable) (build it: swift build --product sluice-router, or pass --router PATH)")
        }
        self.executable = executable
        self.tenant = tenant
        var template = Array("/tmp/sluice-bench.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SystemCallError("mkdtemp", errno) }
        runtimeDir = String(cString: template)
        logPath = runtimeDir + "/router.log"

        var args = [executable, "--runtime-dir", runtimeDir, "--policies", policies,
                    "--audit-log", auditLogPath]
        if let spinMicros { args += ["--spin-us", String(spinMicros)] }
        args += extraArguments
        pid = try Self.spawn(args, output: logPath)
        rememberRouterPID(pid)
        Self.installFatalSignalReaper()

        let deadline = monotonicNanos() + 20_000_000_000
        while access(tenantSocket, F_OK) != 0 {
            if let status = reap(blocking: false) {
                throw BenchFailure("sluice-router exited during start-up (\(status)) before creating \(tenantSocket)\n\(logTail())")
            }
            // The operator socket is bound after every tenant socket: if it
            // is there and ours is not, the policies define no such tenant.
            if access(runtimeDir + "/control.sock", F_OK) == 0 && access(tenantSocket, F_OK) != 0 {
                let how = (try? stop()) ?? "killed"
                throw BenchFailure("sluice-router serves no tenant \(tenant) (no \(tenantSocket)); is there a policy for it in \(policies)? Router \(how).\n\(logTail())")
            }
            if monotonicNanos() > deadline {
                _ = try? stop()
                throw BenchFailure("sluice-router did not create \(tenantSocket) within 20 s\n\(logTail())")
            }
            usleep(10_000)
        }
    }

    private static func spawn(_ args: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // No O_CLOEXEC: glibc may open this straight onto fd 1, which the
        // flag would then close at exec, losing the child's stdout.
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, args[0], &actions, nil, &argv, environ)
        guard rc == 0 else { throw SystemCallError("posix_spawn(\(args[0]))", rc) }
        return pid
    }

    /// If this process dies of a signal (a crash in the verbs library, a
    /// Swift trap, ^C), take the router down with it, then die the same way.
    private static func installFatalSignalReaper() {
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP] {
            signal(sig) { s in
                for i in 0..<routerPIDSlots where routerPIDsForSignals[i] > 0 { kill(routerPIDsForSignals[i], SIGTERM) }
                signal(s, SIG_DFL)
                raise(s)
            }
        }
    }

    /// What `executable --help-hidden` prints (empty if it cannot be run):
    /// to learn whether this router has a flag, hidden ones included,
    /// before passing it.
    static func helpText(of executable: String) -> String {
        var template = Array("/tmp/sluice-bench-help.XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { return "" }
        close(fd)
        let path = String(cString: template)
        defer { unlink(path) }
        guard let child = try? spawn([executable, "--help-hidden"], output: path) else { return "" }
        var status: Int32 = 0
        _ = waitpid(child, &status, 0)
        return (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// nil while running; otherwise how it ended.
    func reap(blocking: Bool) -> String? {
        if let endedWith { return endedWith }
        var status: Int32 = 0
        let r = waitpid(pid, &status, blocking ? 0 : WNOHANG)
        guard r == pid else { return nil }
        forgetRouterPID(pid)
        // WIFEXITED / WTERMSIG, spelled out: Swift does not import the macros.
        let signal = status & 0x7f
        endedWith = signal == 0 ? "exit status \((status >> 8) & 0xff)" : "killed by signal \(signal)"
        return endedWith
    }

    /// Whether the router is still there; a router that died mid-run is a
    /// finding, not something to measure around.
    func checkAlive() throws {
        if let status = reap(blocking: false) {
            throw BenchFailure("sluice-router died during the run (\(status))\n\(logTail())")
        }
    }

    /// SIGTERM, then up to 10 s for a clean stop; SIGKILL after that.
    /// Returns how it ended (nil if it had ended before, which
    /// `checkAlive` reported), or throws if it had to be killed.
    @discardableResult
    func stop() throws -> String? {
        if endedWith != nil { return nil }
        kill(pid, SIGTERM)
        let deadline = monotonicNanos() + 10_000_000_000
        while monotonicNanos() < deadline {
            if let status = reap(blocking: false) { return status }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        _ = reap(blocking: true)
        throw BenchFailure("sluice-router did not stop within 10 s of SIGTERM; killed it\n\(logTail())")
    }

    /// The end of the router's output, indented, for error messages.
    func logTail(lines: Int = 20) -> String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8), !text.isEmpty else {
            return "  (router log \(logPath) is empty)"
        }
        let tail = text.split(separator: "\n").suffix(lines)
        return "  router log (\(logPath)):\n" + tail.map { "    " + $0 }.joined(separator: "\n")
    }

    /// Removes the runtime directory (after a clean run only: after a
    /// failure it holds the router log and audit log worth reading).
    func removeRuntimeDir() {
        try? FileManager.default.removeItem(atPath: runtimeDir)
    }
}
