import ArgumentParser
import Foundation
import SluiceRouter
import SluiceSandbox

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a running router holds: sessions, objects per tenant, fds and mappings.")

    @Option(name: .customLong("runtime-dir"), help: ArgumentHelp("The router's runtime directory.", valueName: "dir"))
    var runtimeDir = "/run/sluice"

    @Flag(help: "Print the router's JSON as it is.")
    var json = false

    func run() throws {
        let data: [UInt8]
        do {
            data = try OperatorClient.status(socketPath: runtimeDir + "/control.sock")
        } catch {
            FileHandle.standardError.write("sluice: cannot query the router at \(runtimeDir)/control.sock: \(error)\n".data(using: .utf8)!)
            throw ExitCode(1)
        }
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        guard let obj = try JSONSerialization.jsonObject(with: Data(data)) as? [String: Any] else {
            throw ValidationError("the router's answer is not a JSON object")
        }
        print("sessions: \(obj["sessions"] ?? 0)   fds: \(obj["fds"] ?? 0)   mappings: \(obj["mappings"] ?? 0) (\(obj["mappedBytes"] ?? 0) bytes)")
        print(Status.sandboxLine(obj["sandbox"] as? [String: Any]))
        if let q = obj["quarantined"] as? [String], !q.isEmpty {
            print("quarantined (key guessing): " + q.joined(separator: ", ") + "   (sluice quarantine clear <tenant>)")
        }
        if let tenants = obj["tenants"] as? [String: [String: Int]] {
            let cols = ["sessions", "pd", "mr", "cq", "qp", "channel"]
            print("tenant".padding(toLength: 16, withPad: " ", startingAt: 0) + cols.map { $0.padding(toLength: 9, withPad: " ", startingAt: 0) }.joined())
            for name in tenants.keys.sorted() {
                let row = tenants[name]!
                print(name.padding(toLength: 16, withPad: " ", startingAt: 0)
                      + cols.map { String(row[$0] ?? 0).padding(toLength: 9, withPad: " ", startingAt: 0) }.joined())
            }
        }
    }

    /// The router's sandbox, in the kernel's words: read from its
    /// /proc/<pid>/status when this host can see it, else as the router reported it.
    static func sandboxLine(_ reported: [String: Any]?) -> String {
        guard let reported, let mode = reported["mode"] as? String else { return "sandbox: not reported by this router" }
        var line = "sandbox: \(mode)"
        if let pid = reported["pid"] as? Int, let st = try? ProcessSandboxStatus.read(pid: Int32(pid)) {
            line += "   Seccomp: \(st.seccomp) (\(st.seccompDescription))   NoNewPrivs: \(st.noNewPrivileges ? 1 : 0)"
            line += "   CapEff: \(ProcessSandboxStatus.hex(st.capEff)) (\(ProcessSandboxStatus.capabilityNames(st.capEff)))   uid: \(st.uids[1])"
        } else {
            line += "   Seccomp: \(reported["seccomp"] ?? "?")   NoNewPrivs: \(reported["noNewPrivs"] ?? "?")"
            line += "   CapEff: \(reported["capEff"] ?? "?")   (as the router reports it)"
        }
        return line
    }
}

