import Foundation
import XCTest
@testable import SluiceSandbox

/// A sandbox cannot be taken off again, so every test that applies the real
/// one does it in a child: a fresh run of this test binary that executes only
/// `SandboxedChildEntry.testEntryPointForSandboxedChildren`, with the
/// scenario to play in its environment. (A fresh process, not a fork of the
/// multithreaded XCTest process.) The child writes its results as lines to a
/// file it opened before applying the sandbox.
final class SandboxedChildEntry: XCTestCase {
    func testEntryPointForSandboxedChildren() throws {
        let env = ProcessInfo.processInfo.environment
        guard let scenario = env[ChildRun.scenarioKey], let resultPath = env[ChildRun.resultKey] else {
            throw XCTSkip("entry point for sandboxed child processes; it does nothing in a normal run")
        }
        let fd = open(resultPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { _exit(90) }
        let out = ChildOutput(fd: fd)
        guard let play = ChildScenarios.all[scenario] else {
            out.line("error", "no scenario \(scenario)")
            _exit(91)
        }
        play(out, env)
        _exit(0)
    }
}

/// What a child writes: tab-separated lines, written with write(2) only.
final class ChildOutput {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }

    func line(_ fields: String...) {
        let bytes = Array((fields.joined(separator: "\t") + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}

/// A pipe's contents, filled by its reader; read after the group is waited on.
private final class Captured: @unchecked Sendable {
    var data = Data()
}

/// One finished child: how it ended, what it wrote, its stderr.
struct ChildRun {
    static let scenarioKey = "SLUICE_SANDBOX_CHILD"
    static let resultKey = "SLUICE_SANDBOX_RESULT"

    var exitStatus: Int32
    var killedBySignal: Int32?
    var lines: [[String]]
    var stderr: String
    var stdout: String

    func values(_ tag: String) -> [[String]] { lines.filter { $0.first == tag }.map { Array($0.dropFirst()) } }
    func value(_ tag: String) -> String? { values(tag).first?.first }

    var summary: String {
        let how = killedBySignal.map { "killed by signal \($0)" } ?? "exit \(exitStatus)"
        return "child \(how); errors: \(values("error")); stderr: \(stderr.suffix(2000))"
    }

    /// Runs `scenario` in a child. `whileRunning` gets the child's pid and
    /// stdin once the child has written a `ready` line (or at once if
    /// `waitForReady` is false); the child gets EOF on stdin when it returns.
    static func run(_ scenario: String, environment: [String: String] = [:], waitForReady: Bool = false,
                    timeout: TimeInterval = 60, whileRunning: ((Int32) throws -> Void)? = nil) throws -> ChildRun {
        let resultPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("sluice-sandbox-\(scenario)-\(UUID().uuidString.prefix(8)).txt").path
        guard FileManager.default.createFile(atPath: resultPath, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: resultPath])
        }
        defer { try? FileManager.default.removeItem(atPath: resultPath) }
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: exe)
        process.arguments = ["SluiceSandboxTests.SandboxedChildEntry/testEntryPointForSandboxedChildren"]
        var env = ProcessInfo.processInfo.environment
        env[scenarioKey] = scenario
        env[resultKey] = resultPath
        // The Swift backtracer cannot run inside the sandbox (it spawns a program).
        env["SWIFT_BACKTRACE"] = "enable=no"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        // Read both pipes while the child runs, so a chatty child never blocks.
        let captured = [Captured(), Captured()]
        let group = DispatchGroup()
        for (pipe, box) in zip([stdout, stderr], captured) {
            group.enter()
            DispatchQueue.global().async {
                box.data = pipe.fileHandleForReading.readDataToEndOfFile()
                group.leave()
            }
        }
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var callbackError: Error?
        if waitForReady {
            while process.isRunning && Date() < deadline
                    && !(((try? String(contentsOfFile: resultPath, encoding: .utf8)) ?? "").contains("ready\n")) {
                usleep(10_000)
            }
            if process.isRunning {
                do { try whileRunning?(process.processIdentifier) } catch { callbackError = error }
            }
        } else if process.isRunning {
            do { try whileRunning?(process.processIdentifier) } catch { callbackError = error }
        }
        try? stdin.fileHandleForWriting.close()
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
        }
        process.waitUntilExit()
        group.wait()
        if let callbackError { throw callbackError }
        let text = (try? String(contentsOfFile: resultPath, encoding: .utf8)) ?? ""
        let signaled = process.terminationReason == .uncaughtSignal
        return ChildRun(exitStatus: signaled ? -1 : process.terminationStatus,
                        killedBySignal: signaled ? process.terminationStatus : nil,
                        lines: text.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) },
                        stderr: String(decoding: captured[1].data, as: UTF8.self),
                        stdout: String(decoding: captured[0].data, as: UTF8.self))
    }
}
