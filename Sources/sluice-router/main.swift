import ArgumentParser
import Foundation
import SluiceAudit
import SluiceCluster
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

            Many hosts: with --cluster-key the router joins a cluster of routers. \
            It finds them in the cluster directory — a YAML file every router \
            reads (--directory static, the default, with --cluster-file), or etcd \
            (--directory etcd --etcd ADDR:PORT), where it registers itself under \
            a lease with --fabric-listen, --router-lids and --router-addresses and \
            takes tenant policies from <etcd-prefix>policies/*.yaml. Routers link \
            over TCP, one connection per pair, authenticated both ways by an \
            HMAC-SHA256 challenge over the shared key; `sluice status --json` \
            shows the links under "cluster". The sandbox then also allows \
            internet sockets, connect and a few socket options (feature multiHost).

            A cluster of routers on NICs: give every router --backend verbs \
            (auto in a cluster means the software fabric: all routers of a \
            cluster must run the same backend). QPs connected across hosts then \
            run on the NICs; the routers connect the real QPs and hand each other \
            the real keys of regions a connection may use over the authenticated \
            fabric link, never through tenants.
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

    @Option(name: .customLong("cluster-key"), help: ArgumentHelp("Join a cluster of routers: the shared cluster key (at least 32 bytes, mode 0600). Without it the router serves one host.", valueName: "file"))
    var clusterKey: String?

    @Option(name: .customLong("router-name"), help: ArgumentHelp("This router's name in the cluster directory (a DNS label). Default: the host name.", valueName: "name"))
    var routerName: String?

    @Option(help: ArgumentHelp("Cluster directory: static (a YAML file, --cluster-file) or etcd (--etcd).", valueName: "kind"))
    var directory: String = "static"

    @Option(name: .customLong("cluster-file"), help: ArgumentHelp("The static cluster directory: every router, its link address and the LIDs and addresses it owns (examples/cluster/cluster.yaml).", valueName: "file"))
    var clusterFile = "/etc/sluice/cluster.yaml"

    @Option(help: ArgumentHelp("etcd's client URL as a literal address:port (its JSON gateway, plain HTTP).", valueName: "addr:port"))
    var etcd: String?

    @Option(name: .customLong("etcd-prefix"), help: ArgumentHelp("Key prefix of the cluster in etcd: <prefix>routers/<name>, <prefix>policies/<tenant>.yaml.", valueName: "prefix"))
    var etcdPrefix = "/sluice/"

    @Option(name: .customLong("fabric-listen"), help: ArgumentHelp("Address and port the fabric link listens on; with etcd also the address registered. Default (static): this router's address in the file.", valueName: "addr:port"))
    var fabricListen: String?

    @Option(name: .customLong("router-lids"), help: ArgumentHelp("With etcd: the virtual LIDs this router owns, comma-separated ranges (1-4095,5000).", valueName: "ranges"))
    var routerLIDs: String?

    @Option(name: .customLong("router-addresses"), help: ArgumentHelp("With etcd: the virtual IPv4 pools this router owns, comma-separated CIDRs.", valueName: "cidrs"))
    var routerAddresses: String?

    @Option(name: .customLong("fabric-heartbeat-ms"), help: ArgumentHelp("Idle links send a heartbeat this often.", valueName: "ms"))
    var fabricHeartbeatMillis: UInt64 = 500

    @Option(name: .customLong("fabric-dead-ms"), help: ArgumentHelp("A link silent this long is closed (peer dead or partitioned) and dialed again while it is needed.", valueName: "ms"))
    var fabricDeadMillis: UInt64 = 3000

    @Option(name: .customLong("fabric-idle-ms"), help: ArgumentHelp("Links are made on first use; one no local QP needs and that carried no request for this long closes (the next use dials again).", valueName: "ms"))
    var fabricIdleMillis: UInt64 = 60_000

    @Flag(name: .customLong("test-unchecked-sender"), help: ArgumentHelp(
        "Tests only, debug builds only: send requests to other routers without this router's own checks, to show the target's suffice.",
        visibility: .hidden))
    var testUncheckedSender = false

    @Option(name: .customLong("test-forge-tenant"), help: ArgumentHelp(
        "Tests only, debug builds only: requests to other routers from TENANT's sessions claim the tenant OTHER.",
        valueName: "TENANT=OTHER", visibility: .hidden))
    var testForgeTenant: [String] = []

    @Option(name: .customLong("test-forge-source-lid"), help: ArgumentHelp(
        "Tests only, debug builds only: requests to other routers from TENANT's sessions claim the source LID.",
        valueName: "TENANT=LID", visibility: .hidden))
    var testForgeSourceLID: [String] = []

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
        config.testUncheckedSender = testUncheckedSender
        for f in testForgeTenant {
            let kv = f.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2 else { fail("--test-forge-tenant \(f): expected TENANT=OTHER") }
            config.testForgeTenant[kv[0]] = kv[1]
        }
        for f in testForgeSourceLID {
            let kv = f.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let lid = UInt16(kv[1]) else { fail("--test-forge-source-lid \(f): expected TENANT=LID") }
            config.testForgeSourceLID[kv[0]] = lid
        }
        if let keyFile = clusterKey {
            config.cluster = clusterConfig(keyFile: keyFile)
        } else if directory != "static" || etcd != nil || fabricListen != nil || routerName != nil {
            fail("--directory, --etcd, --fabric-listen and --router-name need --cluster-key")
        }
        if benchNoEnforcement {
            config.dataPathEnforcement = false
            FileHandle.standardError.write("sluice-router: --bench-no-enforcement: the data path skips policy and shaping (benchmark only)\n".data(using: .utf8)!)
        }
        // The device is opened now, while the router still has its privileges.
        let selection: BackendSelection
        // Every router of a cluster must run the same backend (a NIC
        // carries RC between verbs routers; the fabric link between software
        // ones), so a cluster router never guesses: auto means software, and
        // a NIC needs --backend verbs on every router.
        let clusterAuto = config.cluster != nil && backend == .auto
        switch BackendSelection.select(clusterAuto ? .software : backend, device: clusterAuto ? nil : device) {
        case .success(let s):
            selection = clusterAuto
                ? .software(reason: "auto in a cluster: the software fabric (every router of a cluster runs the same backend; --backend verbs for a NIC)")
                : s
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
            // adds its device's calls only, a cluster router its sockets
            // (router.seccomp.json, features).
            let features = selection.sandboxFeatures.union(config.cluster == nil ? [] : ["multiHost"])
            let report = try Sandbox.apply(Sandbox.Options(mode: sandbox, user: user, features: features))
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

extension SluiceRouterCommand {
    func clusterConfig(keyFile: String) -> ClusterConfig {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let name = routerName ?? String(cString: host).lowercased()
        var listen: (String, UInt16)?
        if let l = fabricListen {
            guard let ep = RouterAddress.parseEndpoint(l) else { fail("--fabric-listen \(l): not a literal address:port") }
            listen = ep
        }
        let dir: ClusterConfig.Directory
        switch directory {
        case "static":
            dir = .file(clusterFile)
        case "etcd":
            guard let endpoint = etcd else { fail("--directory etcd needs --etcd ADDR:PORT") }
            guard let (h, p) = listen else { fail("--directory etcd needs --fabric-listen ADDR:PORT (the address other routers dial)") }
            var lids: [ClosedRange<UInt16>] = []
            for part in (routerLIDs ?? "").split(separator: ",") {
                guard let r = StaticDirectory.parseLIDRange(String(part)) else { fail("--router-lids: \(part) is not a LID or a range within 1...49151") }
                lids.append(r)
            }
            var pools: [IPv4Pool] = []
            for part in (routerAddresses ?? "").split(separator: ",") {
                guard let p = try? IPv4Pool.parse(String(part)).get() else { fail("--router-addresses: \(part) is not a CIDR pool") }
                pools.append(p)
            }
            guard !lids.isEmpty, !pools.isEmpty else { fail("--directory etcd needs --router-lids and --router-addresses") }
            dir = .etcd(endpoint: endpoint, prefix: etcdPrefix, entry: RouterEntry(address: RouterAddress(name: name, host: h, port: p), lids: lids, addresses: pools))
        default:
            fail("--directory \(directory): expected static or etcd")
        }
        var c = ClusterConfig(name: name, directory: dir, keyFile: keyFile)
        c.listen = listen
        c.heartbeatMillis = fabricHeartbeatMillis
        c.deadAfterMillis = fabricDeadMillis
        c.idleMillis = fabricIdleMillis
        return c
    }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write("sluice-router: \(message)\n".data(using: .utf8)!)
    exit(1)
}

SluiceRouterCommand.main()
