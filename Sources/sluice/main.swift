import ArgumentParser
import Foundation
import SluiceRouter

struct Sluice: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "Operator tool for Sluice: router status, policy checks, audit review.",
        subcommands: [Status.self, Policy.self, Audit.self, Quarantine.self]
    )
}

Sluice.main()
