import Foundation
import XCTest
@testable import SluiceAudit

/// A fresh directory per test, removed afterwards.
final class TempDir {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-audit-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name }

    /// A 32-byte key file, mode 0600.
    func keyFile(_ name: String = "audit.key", byte: UInt8 = 0x42) throws -> String {
        let p = file(name)
        try Data((0..<32).map { UInt8($0) ^ byte }).write(to: URL(fileURLWithPath: p))
        chmod(p, 0o600)
        return p
    }
}

enum Log {
    static func lines(_ path: String) throws -> [String] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    static func write(_ lines: [String], to path: String, finalNewline: Bool = true) throws {
        var text = lines.joined(separator: "\n")
        if finalNewline && !lines.isEmpty { text += "\n" }
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    static func records(_ path: String) throws -> [AuditRecord] {
        try lines(path).map { try AuditRecord(line: Array($0.utf8)) }
    }

    static func bytes(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    static func writeBytes(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

extension AuditConfiguration {
    /// Test defaults: a manual clock, a fixed host.
    static func test(_ path: String, key: String? = nil, clock: ManualAuditClock = ManualAuditClock()) -> AuditConfiguration {
        var c = AuditConfiguration(path: path, keyFile: key)
        c.clock = clock
        c.host = "testhost"
        return c
    }
}

/// Writes a small, varied log through the real writer: tenants alpha and
/// beta, allows and denials, sessions; `count` caller records plus the
/// writer's own `audit.open` and `audit.close`.
@discardableResult
func writeSampleLog(_ config: AuditConfiguration, count: Int = 20) throws -> AuditWriter {
    let w = try AuditWriter(config)
    let clock = config.clock as? ManualAuditClock
    for i in 0..<count {
        clock?.advance(seconds: 1)
        let tenant = i % 3 == 0 ? "beta" : "alpha"
        let subject = AuditSubject(session: UInt64(i % 4 + 1), pid: Int32(1000 + i % 4), uid: 1000)
        switch i % 5 {
        case 0:
            w.record(event: "session.open", tenant: tenant, subject: subject, decision: .allow, fields: ["lid": String(i + 1)])
        case 1:
            w.record(event: "control", tenant: tenant, subject: subject, verb: "create_qp", object: "qp \(i) qpn 0x\(String(0x10 + i, radix: 16))",
                     decision: .allow)
        case 2:
            w.record(event: "control", tenant: tenant, subject: subject, verb: "reg_mr", decision: .deny, rule: "quota.mr",
                     reason: "at most 4 memory regions")
        case 3:
            w.record(event: "datapath", tenant: tenant, subject: subject, verb: "post_send", object: "qpn 0x\(String(0x10 + i - 2, radix: 16))",
                     decision: .deny, rule: "opcodes", reason: "RDMA_READ is not allowed")
        default:
            w.record(event: "session.close", tenant: tenant, subject: subject, reason: "peer closed")
        }
    }
    w.close()
    return w
}
