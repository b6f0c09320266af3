import Foundation
import XCTest
@testable import SluicePolicy

/// A valid policy whose `spec` ends at line 8, so that lines a test appends
/// start at line 9 (`spec` children are indented by two spaces).
let validPolicy = """
    apiVersion: sluice/v1
    kind: TenantPolicy
    metadata:
      name: alpha
    spec:
      identity:
        uids: [0, 1000]
        gids: [2000]

    """

/// `validPolicy` with `specLines` appended under `spec` (from line 9).
func policy(_ specLines: String) -> String {
    validPolicy + specLines + (specLines.hasSuffix("\n") ? "" : "\n")
}

/// Every error a single file yields, rendered in full (with source and caret).
func errors(_ text: String, file: String = "t.yaml") -> [String] {
    do {
        _ = try PolicySet.parseFile(text, file: file)
        return []
    } catch let e as PolicyLoadError {
        return e.errors.map(\.description)
    } catch {
        return ["unexpected error: \(error)"]
    }
}

/// The headline (`file:line:col: field: message`) of each error a file yields.
func headlines(_ text: String, file: String = "t.yaml") -> [String] {
    errors(text, file: file).map { String($0.prefix { $0 != "\n" }) }
}

/// A set built from in-memory files.
func set(_ files: [String: String]) throws -> PolicySet {
    try PolicySet(files: files.map { PolicyFile(path: $0.key, text: $0.value) })
}

/// Headlines of the errors a set of in-memory files yields.
func setHeadlines(_ files: [String: String]) -> [String] {
    do {
        _ = try set(files)
        return []
    } catch let e as PolicyLoadError {
        return e.errors.map(\.headline)
    } catch {
        return ["unexpected error: \(error)"]
    }
}

/// A minimal tenant file.
func tenant(_ name: String, pool: String? = nil, operations: String = "[send]", peers: [(String, String)] = [],
            extra: String = "") -> String {
    var s = """
        apiVersion: sluice/v1
        kind: TenantPolicy
        metadata:
          name: \(name)
        spec:
          identity:
            uids: [0]
          operations: \(operations)

        """
    if let pool { s += "  addressPool: \(pool)\n" }
    if !peers.isEmpty {
        s += "  peers:\n"
        for (t, ops) in peers { s += "    - tenant: \(t)\n      operations: \(ops)\n" }
    }
    return s + extra
}

/// The repository root and the build products (the directory of the test
/// executable: SwiftPM puts the executables beside it).
enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let products: URL = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var url = URL(fileURLWithPath: exe).deletingLastPathComponent()
        if url.lastPathComponent.hasSuffix(".xctest") { url = url.deletingLastPathComponent() }
        return url
    }()

    static var sluice: String { products.appendingPathComponent("sluice").path }
    static var policies: String { root.appendingPathComponent("policies").path }
}

/// A temporary directory of policy files, removed when the test ends.
func temporaryPolicyDirectory(_ files: [String: String], test: XCTestCase) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-policy-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for (name, text) in files {
        try text.write(toFile: "\(dir)/\(name)", atomically: true, encoding: .utf8)
    }
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}
