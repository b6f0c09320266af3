import ArgumentParser
import Foundation
import SluiceAudit
import SluicePolicy
import SluiceRouter
import SluiceSandbox
import SluiceVerbsBackend

extension SandboxMode: ExpressibleByArgument {}
extension BackendRequest: ExpressibleByArgument {}

struct SluiceRouterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-router",
        abstract: "The Sluice router: performs RDMA verbs on behalf of tenant processes.",
        discussion: """
            Each tenant defined in the policy directory gets a socket at \
            <runtime-dir>/tenants/<tenant>.sock; mount only that socket into the \
            tenant's containers. A process using it runs with \
            LD_PRELOAD=libsluice-verbs.so SLUICE_SOCKET=<that socket>. The operator \
            socket <runtime-dir>/control.sock (mode 0600) answers `sluice status`.

            SIGHUP (or `sluice policy reload`) reloads the policy directory: all \
            files valid, or nothing changes. Stops cleanly on SIGTERM or SIGINT, \
            reclaiming every tenant's objects.

            Once its sockets, audit log and threads are open the router sandboxes \
            itself: no_new_privs, no capabilities, optionally --user, and a seccomp \
            allowlist (--print-seccomp shows it). Under --sandbox enforce a call \
            outside it is named on stderr and kills the router with SIGSYS; if the \
            sandbox cannot be applied the router refuses to serve.

            Backends: `software` is Sluice's own fabric (memory-to-memory on this \
            host, no device needed); `verbs` performs tenants' verbs on an RDMA \
            device through libibverbs (--device NAME, or the first device listed), \
            and the router refuses to start if that device is missing or its port \
            is not active; `auto` (the default) uses a usable device if there is \
            one and the software fabric otherwise. The router logs which one it \
            chose and why, and records it in the audit log (router.start). \
            Policies, virtual keys, bounds checks and shaping are the same on both.
            """
    )

    @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("Directory for the tenant and operator sockets.", valueName: "dir"))
    var runtimeDir = "/run/sluice"

    @Option(help: ArgumentHelp("Directory of tenant policy files (*.yaml).", valueName: "dir"))
    var policies = "/etc/sluice/policies"

    @Option(name: .customLong("audit-log"), help: ArgumentHelp("Audit log (hash-chained JSON Lines, appended). Default: <runtime-dir>/audit.log.", valueName: "file"))
    var auditLog: String?

    @Option(name: .customLong("audit-key"), help: ArgumentHelp("HMAC key file for signed audit checkpoints; without it, no checkpoints (truncation of the log's tail is then undetectable).", valueName: "file"))
    var auditKey: String?

    @Option(name: .customLong("audit-checkpoints"), help: ArgumentHelp("Checkpoint file (needs --audit-key). Default: <audit-log>.checkpoints.", valueName: "file"))
    var auditCheckpoints: String?

    @Option(name: .customLong("audit-fsync-ms"), help: ArgumentHelp("Longest a written audit record waits for fsync; 0 = after every batch.", valueName: "ms"))
    var auditFsyncMillis: Int = 100

    @Option(name: .customLong("audit-rotate-bytes"), help: ArgumentHelp("Rotate the audit log once it holds this many bytes (0 = never); the chain continues across files.", valueName: "bytes"))
    var auditRotateBytes: Int64 = 0

    @Option(name: .customLong("spin-us"), help: ArgumentHelp(
        "Microseconds the data-path poller spins without work before it sleeps. Raise it when the router has a core to itself; keep it short when tenants busy-poll on every core.",
        valueName: "us"))
    var spinMicros: UInt64 = 10

    @Option(help: ArgumentHelp("enforce: a syscall outside the allowlist kills the router (default); log: the kernel's audit log records it and it runs; off: no sandbox (development only).", valueName: "mode"))
    var sandbox: SandboxMode = .enforce

    @Option(help: ArgumentHelp("software: the built-in software fabric; verbs: an RDMA device through libibverbs; auto: verbs if a usable device exists, else software (logged, with the reason).", valueName: "software|verbs|auto"))
    var backend: BackendRequest = .auto

    @Option(help: ArgumentHelp("The RDMA device for --backend verbs or auto (as ibv_devices names it). Default: the first device libibverbs lists.", valueName: "name"))
    var device: String?

    @Option(help: ArgumentHelp("Switch to this user (and its group, no supplementary groups) once the sockets and the audit log are open.", valueName: "name"))
    var user: String?

    @Flag(name: .customLong("bench-no-enforcement"), help: ArgumentHelp(
        "Benchmark only: skip the data path's policy check and shaping (keys, bounds and access flags are still checked), so `make bench` can show what enforcement costs. Never in production.",
        visibility: .hidden))
    var benchNoEnforcement = false

    @Flag(name: .customLong("print-seccomp"), help: "Print the seccomp filter the router loads (its syscalls and argument rules, and why), then exit.")
    var printSeccomp = false

    func run() throws {
        if printSeccomp {
            do {
                print(try Sandbox.describeFilter(mode: sandbox), terminator: "")
            } catch {
                fail("\(error)")
            }
            return
        }
        let set: PolicySet
        do {
            set = try PolicySet.load(directory: policies)
        } catch {
            fail("cannot load the policies in \(policies):\n\(error)")
        }
        if set.tenants.isEmpty {
            fail("no tenant policies (*.yaml) in \(policies)")
        }
        var audit = AuditConfiguration(path: auditLog ?? runtimeDir + "/audit.log", checkpointPath: auditCheckpoints, keyFile: auditKey)
        audit.fsyncInterval = .milliseconds(auditFsyncMillis)
        audit.rotateBytes = auditRotateBytes
        var config = RouterConfig(runtimeDir: runtimeDir, policies: set, policyDirectory: policies, audit: audit)
        config.spinNanos = spinMicros * 1000
        if benchNoEnforcement {
            config.dataPathEnforcement = false
            FileHandle.standardError.write("sluice-router: --bench-no-enforcement: the data path skips policy and shaping (benchmark only)\n".data(using: .utf8)!)
        }
        // The device is opened now, while the router still has its privileges.
        let selection: BackendSelection
        switch BackendSelection.select(backend, device: device) {
        case .success(let s): selection = s
        case .failure(let e): fail("\(e)")
        }
        config.backendName = selection.name
        config.backendReason = selection.reason
        if case .verbs(let device, _) = selection { config.device = device }
        let router: Router
        do {
            router = try Router(config: config)
        } catch {
            fail("cannot start: \(error)")
        }
        // Everything that needs privilege is open (sockets, audit log, its
        // writer thread); from here on the router runs confined.
        do {
            // The software fabric's allowlist is the base; the verbs backend
            // adds its device's calls only (router.seccomp.json, features).
            let report = try Sandbox.apply(Sandbox.Options(mode: sandbox, user: user, features: selection.sandboxFeatures))
            FileHandle.standardError.write("sluice-router: \(report)\n".data(using: .utf8)!)
            router.recordSandbox(mode: "\(sandbox)", "\(report)")
        } catch {
            fail("refusing to serve: \(error)")
        }
        FileHandle.standardError.write("sluice-router: \(selection.logLine)\n".data(using: .utf8)!)
        FileHandle.standardError.write("sluice-router: serving \(set.names.joined(separator: ", ")) in \(runtimeDir)\n".data(using: .utf8)!)
        router.run()
        FileHandle.standardError.write("sluice-router: stopped\n".data(using: .utf8)!)
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write("sluice-router: \(message)\n".data(using: .utf8)!)
    exit(1)
}

SluiceRouterCommand.main()
