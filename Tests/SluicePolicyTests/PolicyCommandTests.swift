import Foundation
import XCTest

/// `sluice policy lint` and `sluice policy explain`, through the real binary
/// that `swift build` put beside this test executable.
final class PolicyCommandTests: XCTestCase {
    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    func sluice(_ args: String...) throws -> Run {
        try sluice(args)
    }

    func sluice(_ args: [String]) throws -> Run {
        guard FileManager.default.isExecutableFile(atPath: Paths.sluice) else {
            // A build problem, not something to skip: `swift build` (and so
            // `make test`) builds it before the tests run.
            XCTFail("no sluice binary at \(Paths.sluice)")
            throw CocoaError(.fileNoSuchFile)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.sluice)
        p.arguments = args
        p.currentDirectoryURL = Paths.root
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // The outputs are small (well under a pipe's buffer), so reading one
        // to its end before the other cannot block the child.
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                   stderr: String(decoding: e, as: UTF8.self))
    }

    // MARK: lint

    func testLintAcceptsTheShippedPolicies() throws {
        let r = try sluice("policy", "lint", "policies")
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertEqual(r.stdout, """
            policies/alpha.yaml: ok (tenant alpha)
            policies/beta.yaml: ok (tenant beta)
            policies/delta.yaml: ok (tenant delta)
            policies/gamma.yaml: ok (tenant gamma)

            """)
    }

    func testLintPrintsEveryErrorWithItsSourceLineAndCaret() throws {
        let dir = try temporaryPolicyDirectory([
            "a.yaml": tenant("alpha", pool: "10.77.1.0/24", extra: "  quotas:\n    queuePairs: -1\n"),
            "b.yaml": tenant("beta", pool: "10.77.1.128/25", peers: [("omega", "[send]")]),
        ], test: self)
        let r = try sluice("policy", "lint", dir)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, """
            \(dir)/a.yaml:11:17: spec.quotas.queuePairs: Invalid value: -1: must be >= 0
                    queuePairs: -1
                                ^^
            \(dir)/b.yaml:9:16: spec.addressPool: Invalid value: "10.77.1.128/25": overlaps 10.77.1.0/24 of tenant alpha (\(dir)/a.yaml)
                  addressPool: 10.77.1.128/25
                               ^^^^^^^^^^^^^^
            \(dir)/b.yaml:11:15: spec.peers[0].tenant: Not found: "omega": no such tenant; defined tenants: "alpha", "beta"
                    - tenant: omega
                              ^^^^^
            \(dir): 3 errors; the directory would not load

            """)
    }

    func testLintChecksAFileOnItsOwn() throws {
        let dir = try temporaryPolicyDirectory(["g.yaml": tenant("gamma", peers: [("delta", "[send]")]),
                                                "bad.yaml": "kind: [\n"], test: self)
        let r = try sluice("policy", "lint", "\(dir)/g.yaml", "\(dir)/bad.yaml", "\(dir)/missing.yaml")
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, """
            \(dir)/g.yaml: ok (tenant gamma)
            \(dir)/bad.yaml:2:1: Invalid YAML: while parsing a flow node, did not find expected node content
                \n    ^
            \(dir)/missing.yaml: no such file or directory

            """)
        XCTAssertEqual(try sluice("policy", "lint", "\(dir)/g.yaml").status, 0)
    }

    // MARK: explain

    func testExplainAllows() throws {
        let r = try sluice("policy", "explain", "--policies", "policies", "--tenant", "alpha", "reg-mr", "--bytes", "1Gi",
                           "--access", "localWrite,remoteWrite")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "allow (rule: quotas.memoryRegions)\n")
    }

    func testExplainNamesTheRuleThatDenies() throws {
        let cases: [([String], String)] = [
            (["--tenant", "beta", "reg-mr", "--bytes", "1Gi", "--access", "remoteWrite"],
             "deny (rule: memoryAccess): access remoteWrite is not allowed by memoryAccess [localWrite] (EACCES)\n"),
            (["--tenant", "beta", "reg-mr", "--bytes", "1Gi"],
             "deny (rule: quotas.largestRegionBytes): region of 1 GiB exceeds quotas.largestRegionBytes (64 MiB) (ENOMEM)\n"),
            (["--tenant", "beta", "reg-mr", "--bytes", "64Mi", "--current-bytes", "200Mi"],
             "deny (rule: quotas.registeredBytes): beta has 200 MiB registered; 64 MiB more would exceed quotas.registeredBytes (256 MiB) (ENOMEM)\n"),
            (["--tenant", "beta", "reg-mr", "--bytes", "4Ki", "--current-count", "16"],
             "deny (rule: quotas.memoryRegions): beta already holds 16 memory regions, the most quotas.memoryRegions allows (16) (ENOMEM)\n"),
            (["--tenant", "beta", "alloc-pd", "--current-count", "2"],
             "deny (rule: quotas.protectionDomains): beta already holds 2 protection domains, the most quotas.protectionDomains allows (2) (ENOMEM)\n"),
            (["--tenant", "beta", "create-cq", "--depth", "4096"],
             "deny (rule: quotas.completionQueueDepth): CQ depth 4096 exceeds quotas.completionQueueDepth (1024) (EINVAL)\n"),
            (["--tenant", "beta", "create-cq", "--depth", "16", "--current-count", "4"],
             "deny (rule: quotas.completionQueues): beta already holds 4 completion queues, the most quotas.completionQueues allows (4) (ENOMEM)\n"),
            (["--tenant", "beta", "create-qp", "--send-depth", "512"],
             "deny (rule: quotas.sendQueueDepth): send queue depth 512 exceeds quotas.sendQueueDepth (256) (EINVAL)\n"),
            (["--tenant", "beta", "create-qp", "--sge", "3"],
             "deny (rule: quotas.sgesPerRequest): send requests of 3 SGEs exceed quotas.sgesPerRequest (2) (EINVAL)\n"),
            (["--tenant", "beta", "create-qp", "--inline", "128"],
             "deny (rule: quotas.inlineBytes): inline data of 128 bytes exceeds quotas.inlineBytes (64 bytes) (EINVAL)\n"),
            (["--tenant", "alpha", "connect", "--peer", "beta"],
             "deny (rule: peers): alpha does not list beta under peers (EACCES)\n"),
            (["--tenant", "gamma", "connect", "--peer", "delta", "--op", "write"],
             "deny (rule: peers.delta): gamma's peers entry for delta allows [send], not write (EACCES)\n"),
            (["--tenant", "delta", "connect", "--peer", "delta"],
             "deny (rule: peers): delta does not list itself under peers, so its QPs may not connect to each other (EACCES)\n"),
            (["--tenant", "nobody", "alloc-pd"],
             "deny (rule: identity): no tenant named \"nobody\" is defined (EACCES)\n"),
        ]
        for (args, expected) in cases {
            let r = try sluice(["policy", "explain", "--policies", "policies"] + args)
            XCTAssertEqual(r.status, 3, args.joined(separator: " ") + r.stderr)
            XCTAssertEqual(r.stdout, expected, args.joined(separator: " "))
        }
    }

    func testExplainShowsTheOperationsOfAnAllowedConnection() throws {
        let r = try sluice("policy", "explain", "--policies", "policies", "--tenant", "gamma", "connect", "--peer", "delta")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "allow (rule: peers.delta)\noperations on the connection: [send]\n")
        let own = try sluice("policy", "explain", "--policies", "policies", "--tenant", "gamma", "connect", "--peer", "gamma",
                             "--op", "write")
        XCTAssertEqual(own.stdout, "allow (rule: peers.gamma)\noperations on the connection: [send, write]\n")
    }

    func testExplainExitsOneWhenThePoliciesDoNotLoad() throws {
        let dir = try temporaryPolicyDirectory(["a.yaml": tenant("alpha", operations: "[warp]")], test: self)
        let r = try sluice("policy", "explain", "--policies", dir, "--tenant", "alpha", "alloc-pd")
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stdout, "")
        XCTAssertEqual(r.stderr, """
            \(dir)/a.yaml:8:16: spec.operations[0]: Unsupported value: "warp": supported values: "send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd"
                  operations: [warp]
                               ^^^^
            sluice: the policies in \(dir) do not load

            """)
    }

    func testExplainExitsOneOnAMalformedRequest() throws {
        let cases: [([String], String)] = [
            (["frob"], "sluice policy explain: unknown request \"frob\"; requests: alloc-pd, reg-mr, create-cq, create-qp, connect\n"),
            (["reg-mr"], "sluice policy explain: reg-mr needs --bytes\n"),
            (["reg-mr", "--bytes", "4GB"],
             "sluice policy explain: --bytes 4GB: must be \(sizeForms)\n"),
            (["reg-mr", "--bytes", "1Gi", "--access", "remoteExec"],
             "sluice policy explain: unknown access flag \"remoteExec\"; flags: localWrite, remoteWrite, remoteRead, remoteAtomic, relaxedOrdering\n"),
            (["create-cq"], "sluice policy explain: create-cq needs --depth\n"),
            (["create-cq", "--depth", "4", "--peer", "beta"], "sluice policy explain: --peer does not apply to create-cq\n"),
            (["connect"], "sluice policy explain: connect needs --peer\n"),
            (["connect", "--peer", "beta", "--op", "teleport"],
             "sluice policy explain: unknown operation \"teleport\"; operations: send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd\n"),
        ]
        for (args, expected) in cases {
            let r = try sluice(["policy", "explain", "--policies", "policies", "--tenant", "alpha"] + args)
            XCTAssertEqual(r.status, 1, args.joined(separator: " "))
            XCTAssertEqual(r.stderr, expected)
            XCTAssertEqual(r.stdout, "")
        }
    }

    func testHelp() throws {
        let r = try sluice("policy", "--help")
        XCTAssertEqual(r.status, 0)
        XCTAssertEqual(r.stdout, """
            OVERVIEW: Check tenant policy files, ask what a policy allows, reload a running
            router's policies.

            USAGE: sluice policy <subcommand>

            OPTIONS:
              -h, --help              Show help information.

            SUBCOMMANDS:
              lint                    Validate policy files or directories of them; print
                                      each error with its place.
              explain                 Say whether a tenant's policy allows a request, and
                                      which rule decides.
              reload                  Ask a running router to reload its policy directory
                                      (as SIGHUP does).

              See 'sluice help policy <subcommand>' for detailed help.

            """)
        let explain = try sluice("policy", "explain", "--help").stdout
        for line in ["  reg-mr     --bytes SIZE [--access FLAGS] [--current-count N]",
                     "  connect    --peer TENANT [--op OPERATION]",
                     "  sluice policy explain --tenant beta reg-mr --bytes 1Gi --access remoteWrite",
                     "USAGE: sluice policy explain [<options>] --tenant <name> <request>"] {
            XCTAssertTrue(explain.contains(line + "\n"), "missing from explain --help: \(line)\n\(explain)")
        }
        let lint = try sluice("policy", "lint", "--help").stdout
        XCTAssertTrue(lint.contains("USAGE: sluice policy lint <path> ..."), lint)
    }

    private let sizeForms = "a whole number of bytes, optionally with a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal one (K, M, G, T, P, E), e.g. 4096, 256Mi, 4Gi"

}
