import ArgumentParser
import Foundation
import SluiceRouter

struct Policy: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check tenant policy files.",
        subcommands: [Lint.self])

    struct Lint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate policy files or a directory of them; print file:line:column for each error.")

        @Argument(help: ArgumentHelp("Policy files (*.yaml) or directories.", valueName: "path"))
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
                        let tenants = try TenantLoader.loadDirectory(path)
                        for t in tenants { print("\(t.source): ok (tenant \(t.name))") }
                    } else {
                        let text = try String(contentsOfFile: path, encoding: .utf8)
                        let t = try TenantLoader.parse(text, file: path)
                        print("\(path): ok (tenant \(t.name))")
                    }
                } catch let e as PolicyFileError {
                    print(e.description)
                    failed = true
                }
            }
            if failed { throw ExitCode(1) }
        }
    }
}

