import ArgumentParser
import Foundation
import SluiceRouter

struct Quarantine: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List or clear tenants quarantined by the key-guessing detector.",
        discussion: """
            A tenant whose failed remote accesses reach its policy's spec.keyGuessing.maxFailures \
            within windowSeconds has its faulting QPs moved to ERR; with quarantine: true it also \
            may not create or connect QPs until an operator clears it here (after reading the \
            alert in the audit log: sluice audit search --rule keyGuessing).
            """,
        subcommands: [List.self, Clear.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the quarantined tenants, one per line.")

        @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("The router's runtime directory.", valueName: "dir"))
        var runtimeDir = "/run/sluice"

        func run() throws {
            let data: [UInt8]
            do {
                data = try OperatorClient.status(socketPath: runtimeDir + "/control.sock")
            } catch {
                FileHandle.standardError.write("sluice: cannot query the router at \(runtimeDir)/control.sock: \(error)\n".data(using: .utf8)!)
                throw ExitCode(1)
            }
            let obj = try JSONSerialization.jsonObject(with: Data(data)) as? [String: Any]
            for t in obj?["quarantined"] as? [String] ?? [] { print(t) }
        }
    }

    struct Clear: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lift a tenant's quarantine and reset its failure count (audited).")

        @Argument(help: ArgumentHelp("The tenant, as its policy's metadata.name.", valueName: "tenant"))
        var tenant: String

        @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("The router's runtime directory.", valueName: "dir"))
        var runtimeDir = "/run/sluice"

        func run() throws {
            do {
                print(try OperatorClient.clearQuarantine(socketPath: runtimeDir + "/control.sock", tenant: tenant))
            } catch {
                FileHandle.standardError.write("sluice: cannot clear the quarantine through \(runtimeDir)/control.sock: \(error)\n".data(using: .utf8)!)
                throw ExitCode(1)
            }
        }
    }
}
