import Foundation
import XCTest
import SluiceRouter

/// Where the build put things, and the repository root.
enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The directory of the test binary: SwiftPM puts the executables beside it.
    static let products: URL = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // On Linux the xctest bundle is a plain executable in the products directory.
        if url.lastPathComponent.hasSuffix(".xctest") { url = url.deletingLastPathComponent() }
        return url
    }()

    static var router: String { products.appendingPathComponent("sluice-router").path }

    static var sluiceCLI: String? {
        let p = products.appendingPathComponent("sluice").path
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }

    /// libsluice-verbs.so as `make` builds it; built here if missing so that a
    /// plain `swift test` works too.
    static let verbsLibrary: String = {
        if let p = ProcessInfo.processInfo.environment["SLUICE_VERBS_LIB"], FileManager.default.fileExists(atPath: p) {
            return p
        }
        let path = root.appendingPathComponent(".build/sluice/libsluice-verbs.so").path
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", root.path, "lib"]
        try? make.run()
        make.waitUntilExit()
        return path
    }()

    static func tool(_ name: String) -> String? {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }
}

/// A real sluice-router process with its own runtime and policy directories.
///
/// With SLUICE_TEST_NESTED=1 in the environment (NestedRouterTests runs
/// whole test classes that way) every router a test starts is nested: an
/// outer router on the software fabric, and this one, on the verbs backend
/// over the outer one's device `sluice0`, as the outer's tenant `inner`
/// (libsluice-verbs.so preloaded). Tests then talk to the inner router
/// exactly as they would to a router on a NIC.
final class RouterProcess {
    let runtimeDir: String
    let policiesDir: String
    let process = Process()
    private let errPipe = Pipe()
    /// The router this one is a tenant of, when nested.
    private(set) var outer: RouterProcess?

    static var nested: Bool { ProcessInfo.processInfo.environment["SLUICE_TEST_NESTED"] == "1" }

    /// Routers still running, killed when the test process exits: XCTest
    /// keeps test case instances (and so their routers) alive to the end,
    /// and a nested pair's outer router would otherwise outlive the run.
    nonisolated(unsafe) private static var running: Set<Int32> = []
    private static let reapAtExit: Void = {
        atexit {
            for pid in RouterProcess.running { kill(pid, SIGKILL) }
        }
    }()

    /// The outer router's policy for the inner router: everything, and
    /// quotas generous enough for every tenant the inner one serves.
    static func innerTenantPolicy(extra: String = "") -> String {
        permissive("inner", extra: extra)
    }

    /// The inner router's arguments and environment, given its outer router.
    static func innerArguments(outer: RouterProcess) -> (arguments: [String], environment: [String: String]) {
        var env = ProcessInfo.processInfo.environment
        env["LD_PRELOAD"] = Paths.verbsLibrary
        env["SLUICE_SOCKET"] = outer.socket("inner")
        env["SLUICE_TEST_NESTED"] = nil
        // Sandboxed as in production (enforce), with the nestedVerbs feature.
        return (["--backend", "verbs", "--device", "sluice0"], env)
    }

    /// A policy that lets a tenant do everything with its own QPs (and
    /// nothing across tenants), plus whatever `extra` YAML adds under spec.
    static func permissive(_ name: String, uid: UInt32 = getuid(), peers: [String: String] = [:], extra: String = "") -> String {
        let all = "[send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]"
        var peerLines = "    - tenant: \(name)\n      operations: \(all)\n"
        for (p, ops) in peers.sorted(by: { $0.key < $1.key }) {
            peerLines += "    - tenant: \(p)\n      operations: \(ops)\n"
        }
        return """
            apiVersion: sluice/v1
            kind: TenantPolicy
            metadata:
              name: \(name)
            spec:
              identity:
                uids: [\(uid)]
              memoryAccess: [localWrite, remoteWrite, remoteRead, remoteAtomic]
              operations: \(all)
              peers:
            \(peerLines)\(extra)
            """
    }

    convenience init(tenants: [String] = ["alpha", "beta"], uid: UInt32 = getuid()) throws {
        var policies: [String: String] = [:]
        for t in tenants { policies[t] = RouterProcess.permissive(t, uid: uid) }
        try self.init(policies: policies)
    }

    /// `launcher` runs the router through another program (`ip netns exec NS`);
    /// such a router is never nested (an outer router would sit outside its namespace).
    init(policies: [String: String], extraArguments: [String] = [], environment: [String: String]? = nil,
         nested: Bool = RouterProcess.nested, outerPolicy: String = RouterProcess.innerTenantPolicy(),
         launcher: [String] = []) throws {
        var extraArguments = extraArguments
        if nested && launcher.isEmpty {
            let o = try RouterProcess(policies: ["inner": outerPolicy], nested: false)
            let (args, env) = RouterProcess.innerArguments(outer: o)
            outer = o
            extraArguments = args + extraArguments
            process.environment = env
        } else if let environment {
            process.environment = environment
        }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-test-\(UUID().uuidString.prefix(8))")
        runtimeDir = base.appendingPathComponent("run").path
        policiesDir = base.appendingPathComponent("policies").path
        try FileManager.default.createDirectory(atPath: policiesDir, withIntermediateDirectories: true)
        for (t, yaml) in policies {
            try yaml.write(toFile: "\(policiesDir)/\(t).yaml", atomically: true, encoding: .utf8)
        }
        let argv = launcher + [Paths.router, "--runtime-dir", runtimeDir, "--policies", policiesDir, "--audit-log", auditLog] + extraArguments
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        process.standardError = errPipe
        try process.run()
        RouterProcess.reapAtExit
        RouterProcess.running.insert(process.processIdentifier)
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: runtimeDir + "/control.sock") {
            guard process.isRunning, Date() < deadline else {
                throw NSError(domain: "sluice-test", code: 1, userInfo: [NSLocalizedDescriptionKey: "router did not start: \(stderrText())"])
            }
            usleep(20_000)
        }
        if outer != nil {
            // Nested must mean nested: the inner router runs on the verbs backend.
            let deadline = Date().addingTimeInterval(5)
            var start: [String: Any]?
            while start == nil && Date() < deadline {
                start = auditRecords().first { ($0["event"] as? String) == "router.start" }
            }
            let backend = (start?["fields"] as? [String: Any])?["backend"] as? String
            guard backend == "verbs" else {
                throw NSError(domain: "sluice-test", code: 2, userInfo: [NSLocalizedDescriptionKey: "the inner router is not on the verbs backend: \(start ?? [:])"])
            }
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        RouterProcess.running.remove(process.processIdentifier)
        outer = nil
        try? FileManager.default.removeItem(atPath: (runtimeDir as NSString).deletingLastPathComponent)
    }

    var auditLog: String { (runtimeDir as NSString).deletingLastPathComponent + "/audit.log" }

    func socket(_ tenant: String) -> String { "\(runtimeDir)/tenants/\(tenant).sock" }

    func status() throws -> [String: Any] {
        let bytes = try OperatorClient.status(socketPath: runtimeDir + "/control.sock")
        return try JSONSerialization.jsonObject(with: Data(bytes)) as! [String: Any]
    }

    func objects() throws -> [String: Int] {
        try status()["objects"] as! [String: Int]
    }

    /// Polls status until `predicate` holds or 10 s pass; returns the last status.
    @discardableResult
    func waitForStatus(_ predicate: ([String: Any]) -> Bool) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(10)
        var s = try status()
        while !predicate(s) && Date() < deadline {
            usleep(20_000)
            s = try status()
        }
        return s
    }

    /// Writes (or, with nil, removes) one tenant's policy file.
    func writePolicy(_ tenant: String, _ yaml: String?) throws {
        let path = "\(policiesDir)/\(tenant).yaml"
        if let yaml {
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        } else {
            try FileManager.default.removeItem(atPath: path)
        }
    }

    /// SIGHUP: reload the policy directory. Waits until the router recorded
    /// the outcome (a policy.reload record, allowed or denied).
    func reload() {
        let before = auditRecords().filter { ($0["event"] as? String) == "policy.reload" }.count
        kill(process.processIdentifier, SIGHUP)
        let deadline = Date().addingTimeInterval(10)
        while auditRecords().filter({ ($0["event"] as? String) == "policy.reload" }).count == before && Date() < deadline {
            usleep(10_000)
        }
    }

    /// SIGTERM, then the exit status.
    func stop() -> Int32 {
        defer {
            // A nested pair: the outer router goes too, once the inner one
            // (its tenant) has stopped.
            if let o = outer { _ = o.stop() }
        }
        guard process.isRunning else { return process.terminationStatus }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        RouterProcess.running.remove(process.processIdentifier)
        return process.terminationStatus
    }

    func stderrText() -> String {
        if process.isRunning { return "(router still running)" }
        return String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    /// The audit log's records. The router's audit writer runs on its own
    /// thread behind a queue, so this waits until the file stops growing
    /// (50 ms without change, at most 3 s) before it reads.
    func auditRecords() -> [[String: Any]] {
        var last = -1
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline {
            let size = (try? FileManager.default.attributesOfItem(atPath: auditLog)[.size] as? Int) ?? 0
            if size == last { break }
            last = size
            usleep(50_000)
        }
        guard let text = try? String(contentsOfFile: auditLog, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}

/// A tenant program run through libsluice-verbs.so, output captured.
final class TenantProcess {
    let process = Process()
    private let out = Pipe()
    private var captured: Data?

    init(_ tool: String, _ args: [String], socket: String) throws {
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["LD_PRELOAD"] = Paths.verbsLibrary
        env["SLUICE_SOCKET"] = socket
        process.environment = env
        process.standardOutput = out
        process.standardError = out
        try process.run()
    }

    /// Waits at most `seconds`; kills the process if it takes longer.
    @discardableResult
    func wait(seconds: Double = 60) -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    var output: String {
        if captured == nil { captured = out.fileHandleForReading.readDataToEndOfFile() }
        return String(decoding: captured!, as: UTF8.self)
    }
}

/// Starts an ibv_rc_pingpong server and a client that has connected to it
/// (the server's TCP listener takes a moment: a client that could not connect
/// is started again). Both are running, or have finished, on return.
func startPingPongPair(_ tool: String, _ args: [String], socket: String) throws -> (server: TenantProcess, client: TenantProcess) {
    let server = try TenantProcess(tool, args, socket: socket)
    for _ in 0..<100 {
        usleep(100_000)
        let c = try TenantProcess(tool, args + ["127.0.0.1"], socket: socket)
        // A client that cannot connect exits within milliseconds.
        var waited = 0
        while c.process.isRunning && waited < 300 {
            usleep(10_000)
            waited += 10
        }
        if c.process.isRunning || c.process.terminationStatus == 0 || !c.output.contains("Couldn't connect") {
            return (server, c)
        }
    }
    throw XCTSkip("the ping-pong client never connected to its server")
}
