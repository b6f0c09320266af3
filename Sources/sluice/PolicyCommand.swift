import ArgumentParser
import Foundation
import SluicePolicy
import SluiceRouter

struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check tenant policy files, ask what a policy allows, reload a running router's policies.",
        subcommands: [Lint.self, Explain.self, Reload.self])

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask a running router to reload its policy directory (as SIGHUP does).",
            discussion: """
                The router loads every file again; only if all are valid do the new policies take \
                effect, at once and as a whole. What a reload withdraws applies to what exists: \
                sessions no longer admitted are closed, connections no longer allowed move to ERR. \
                If any file is invalid nothing changes, and every error is printed (and audited). \
                Exit status: 0 when reloaded, 1 otherwise.
                """)

        @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("The router's runtime directory.", valueName: "dir"))
        var runtimeDir = "/run/sluice"

        func run() throws {
            let answer: (ok: Bool, message: String)
            do {
                answer = try OperatorClient.reloadPolicies(socketPath: runtimeDir + "/control.sock")
            } catch {
                FileHandle.standardError.write("sluice: cannot reach the router at \(runtimeDir)/control.sock: \(error)\n".data(using: .utf8)!)
                throw ExitCode(1)
            }
            if answer.ok {
                print(answer.message)
            } else {
                FileHandle.standardError.write("sluice: the router kept its old policies:\n\(answer.message)\n".data(using: .utf8)!)
                throw ExitCode(1)
            }
        }
    }

    struct Lint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate policy files or directories of them; print each error with its place.",
            discussion: """
                A directory is checked as the router loads it: every *.yaml and *.yml file in it \
                together, so tenant names must be unique, address pools must not overlap, and every \
                peer must name a tenant of the directory. One error and the whole directory would \
                not load. A file named on its own is checked alone; its peers are not resolved.

                Each error reads file:line:column: field: message, then the source line with a caret \
                under the token. Exit status: 0 when everything is valid, 1 otherwise.
                """)

        @Argument(help: ArgumentHelp("Policy files or directories.", valueName: "path"))
        var paths: [String]

        func run() throws {
            var failed = false
            for path in paths {
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                    print("\(path): no such file or directory")
                    failed = true
                    continue
                }
                do {
                    if isDir.boolValue {
                        let set = try PolicySet.load(directory: path)
                        for t in set.tenants { print("\(t.source): ok (tenant \(t.name))") }
                    } else {
                        guard let data = FileManager.default.contents(atPath: path) else {
                            print("\(path): cannot read the file")
                            failed = true
                            continue
                        }
                        guard let text = String(validating: data, as: UTF8.self) else {
                            print("\(path): Invalid value: the file is not UTF-8 text")
                            failed = true
                            continue
                        }
                        let policy = try PolicySet.parseFile(text, file: path)
                        print("\(path): ok (tenant \(policy.name))")
                    }
                } catch let e as PolicyLoadError {
                    print(e.description)
                    let n = e.errors.count
                    if isDir.boolValue { print("\(path): \(n) error\(n == 1 ? "" : "s"); the directory would not load") }
                    failed = true
                }
            }
            if failed { throw ExitCode(1) }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say whether a tenant's policy allows a request, and which rule decides.",
            discussion: """
                Requests and the options they take:
                  alloc-pd   [--current-count N]
                  reg-mr     --bytes SIZE [--access FLAGS] [--current-count N]
                             [--current-bytes SIZE]
                  create-cq  --depth N [--current-count N]
                  create-qp  [--send-depth N] [--recv-depth N] [--sge N] [--inline N]
                             [--current-count N]
                  connect    --peer TENANT [--op OPERATION]

                --current-count and --current-bytes describe what the tenant already holds \
                (default nothing), as the router counts it over all the tenant's sessions.

                Examples (with the policies in /etc/sluice/policies, or give --policies DIR):
                  sluice policy explain --tenant beta reg-mr --bytes 1Gi --access remoteWrite
                  sluice policy explain --tenant gamma connect --peer delta --op write

                Prints "allow (rule: R)" or "deny (rule: R): reason (ERRNO)", where R is the policy \
                field that decided and ERRNO what the verb returns to the tenant. Exit status: 0 on \
                allow, 3 on deny, 1 when the policies do not load or the request is malformed.
                """)

        @Option(help: ArgumentHelp("The policy directory, as the router loads it.", valueName: "dir"))
        var policies = "/etc/sluice/policies"

        @Option(help: ArgumentHelp("The tenant making the request.", valueName: "name"))
        var tenant: String

        @Argument(help: ArgumentHelp("alloc-pd, reg-mr, create-cq, create-qp or connect.", valueName: "request"))
        var request: String

        @Option(help: ArgumentHelp("reg-mr: the region's size (4096, 256Mi, 1Gi, 4G).", valueName: "size"))
        var bytes: String?

        @Option(help: ArgumentHelp("reg-mr: access flags, comma-separated (localWrite, remoteWrite, remoteRead, remoteAtomic, relaxedOrdering).",
                                   valueName: "flags"))
        var access: String?

        @Option(help: ArgumentHelp("create-cq: the CQ depth (cqe).", valueName: "n"))
        var depth: UInt32?

        @Option(name: .customLong("send-depth"), help: ArgumentHelp("create-qp: max_send_wr (default 1).", valueName: "n"))
        var sendDepth: UInt32?

        @Option(name: .customLong("recv-depth"), help: ArgumentHelp("create-qp: max_recv_wr (default 1).", valueName: "n"))
        var recvDepth: UInt32?

        @Option(help: ArgumentHelp("create-qp: SGEs per send and per receive request (default 1).", valueName: "n"))
        var sge: UInt32?

        @Option(name: .customLong("inline"), help: ArgumentHelp("create-qp: max_inline_data in bytes (default 0).", valueName: "n"))
        var inlineBytes: UInt32?

        @Option(help: ArgumentHelp("connect: the tenant that owns the remote QP.", valueName: "tenant"))
        var peer: String?

        @Option(help: ArgumentHelp("connect: an operation to post on the connection (send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd).",
                                   valueName: "operation"))
        var op: String?

        @Option(name: .customLong("current-count"), help: ArgumentHelp("Objects of this type the tenant already holds (default 0).", valueName: "n"))
        var currentCount: Int?

        @Option(name: .customLong("current-bytes"), help: ArgumentHelp("reg-mr: bytes the tenant already has registered (default 0).", valueName: "size"))
        var currentBytes: String?

        /// Which options each request takes; anything else is a mistake worth saying.
        static let optionsByRequest: [String: Set<String>] = [
            "alloc-pd": ["current-count"],
            "reg-mr": ["bytes", "access", "current-count", "current-bytes"],
            "create-cq": ["depth", "current-count"],
            "create-qp": ["send-depth", "recv-depth", "sge", "inline", "current-count"],
            "connect": ["peer", "op"],
        ]

        func run() throws {
            let decision: Decision
            var connectionLine: String?
            do {
                let given = givenOptions()
                guard let allowed = Explain.optionsByRequest[request] else {
                    throw UsageError("unknown request \"\(request)\"; requests: alloc-pd, reg-mr, create-cq, create-qp, connect")
                }
                if let extra = given.subtracting(allowed).sorted().first {
                    throw UsageError("--\(extra) does not apply to \(request)")
                }
                let engine: PolicyEngine
                do {
                    engine = PolicyEngine(try PolicySet.load(directory: policies))
                } catch let e as PolicyLoadError {
                    FileHandle.standardError.write((e.description + "\nsluice: the policies in \(policies) do not load\n").data(using: .utf8)!)
                    throw ExitCode(1)
                }
                let current = currentCount ?? 0
                guard current >= 0 else { throw UsageError("--current-count must be >= 0") }
                switch request {
                case "alloc-pd":
                    decision = engine.allocPD(tenant: tenant, current: current)
                case "reg-mr":
                    guard let bytes else { throw UsageError("reg-mr needs --bytes") }
                    decision = engine.regMR(tenant: tenant, bytes: try size(bytes, "--bytes"), access: try accessBits(),
                                            currentCount: current, currentBytes: try size(currentBytes ?? "0", "--current-bytes"))
                case "create-cq":
                    guard let depth else { throw UsageError("create-cq needs --depth") }
                    decision = engine.createCQ(tenant: tenant, depth: depth, current: current)
                case "create-qp":
                    decision = engine.createQP(tenant: tenant, sendDepth: sendDepth ?? 1, recvDepth: recvDepth ?? 1,
                                               sendSGE: sge ?? 1, recvSGE: sge ?? 1, inlineBytes: inlineBytes ?? 0,
                                               current: current)
                default: // connect
                    guard let peer else { throw UsageError("connect needs --peer") }
                    if let op {
                        guard let operation = OperationSet(name: op) else {
                            throw UsageError("unknown operation \"\(op)\"; operations: \(OperationSet.names.map(\.0).joined(separator: ", "))")
                        }
                        decision = engine.workRequest(from: tenant, to: peer, operation: operation)
                    } else {
                        decision = engine.connect(from: tenant, to: peer)
                    }
                    if decision.isAllowed {
                        connectionLine = "operations on the connection: \(engine.connectionOperations(from: tenant, to: peer))"
                    }
                }
            } catch let e as UsageError {
                FileHandle.standardError.write("sluice policy explain: \(e.message)\n".data(using: .utf8)!)
                throw ExitCode(1)
            }
            print(decision)
            if let connectionLine { print(connectionLine) }
            if !decision.isAllowed { throw ExitCode(3) }
        }

        private func givenOptions() -> Set<String> {
            var s = Set<String>()
            if bytes != nil { s.insert("bytes") }
            if access != nil { s.insert("access") }
            if depth != nil { s.insert("depth") }
            if sendDepth != nil { s.insert("send-depth") }
            if recvDepth != nil { s.insert("recv-depth") }
            if sge != nil { s.insert("sge") }
            if inlineBytes != nil { s.insert("inline") }
            if peer != nil { s.insert("peer") }
            if op != nil { s.insert("op") }
            if currentCount != nil { s.insert("current-count") }
            if currentBytes != nil { s.insert("current-bytes") }
            return s
        }

        private func size(_ text: String, _ option: String) throws -> UInt64 {
            switch Units.parseSize(text) {
            case .success(let v): return v
            case .failure(.tooLarge): throw UsageError("\(option) \(text): too large")
            case .failure: throw UsageError("\(option) \(text): must be \(Units.sizeForms)")
            }
        }

        private func accessBits() throws -> UInt32 {
            var bits = MemoryAccess()
            for name in (access ?? "").split(separator: ",", omittingEmptySubsequences: true) {
                let name = name.trimmingCharacters(in: .whitespaces)
                guard let flag = MemoryAccess(name: name) else {
                    throw UsageError("unknown access flag \"\(name)\"; flags: \(MemoryAccess.names.map(\.0).joined(separator: ", "))")
                }
                bits.insert(flag)
            }
            return bits.rawValue
        }
    }
}

/// A request `explain` cannot ask: exit 1 with the message.
private struct UsageError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}
