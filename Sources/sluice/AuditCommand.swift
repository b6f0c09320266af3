import ArgumentParser
import Foundation

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify, search and summarize audit logs (not yet implemented).")

    func run() throws {
        FileHandle.standardError.write("sluice audit: not yet implemented\n".data(using: .utf8)!)
        throw ExitCode(2)
    }
}
