import ArgumentParser
import Foundation
import SluicePolicy
import SluiceRouter

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
            """
    )

    @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("Directory for the tenant and operator sockets.", valueName: "dir"))
    var runtimeDir = "/run/sluice"

    @Option(help: ArgumentHelp("Directory of tenant policy files (*.yaml).", valueName: "dir"))
    var policies = "/etc/sluice/policies"

    @Option(name: .customLong("audit-log"), help: ArgumentHelp("Event log file (JSON Lines, appended). Default: <runtime-dir>/audit.log.", valueName: "file"))
    var auditLog: String?

    @Option(name: .customLong("spin-us"), help: ArgumentHelp(
        "Microseconds the data-path poller spins without work before it sleeps. Raise it when the router has a core to itself; keep it short when tenants busy-poll on every core.",
        valueName: "us"))
    var spinMicros: UInt64 = 10

    func run() throws {
        let set: PolicySet
        do {
            set = try PolicySet.load(directory: policies)
        } catch {
            fail("cannot load the policies in \(policies):\n\(error)")
        }
        if set.tenants.isEmpty {
            fail("no tenant policies (*.yaml) in \(policies)")
        }
        var config = RouterConfig(runtimeDir: runtimeDir, policies: set, policyDirectory: policies,
                                  eventLogPath: auditLog ?? runtimeDir + "/audit.log")
        config.spinNanos = spinMicros * 1000
        let router: Router
        do {
            router = try Router(config: config)
        } catch {
            fail("cannot start: \(error)")
        }
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
