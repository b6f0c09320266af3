import Foundation
import XCTest
import SluiceVerbs

/// Support for AttackSuiteTests: the attack programs of examples/attacks,
/// run as tenant processes through libsluice-verbs.so and driven over their
/// stdin/stdout line protocol (examples/attacks/attack_common.h).
extension Paths {
    /// The directory `make attacks` builds the programs into, built here if
    /// needed so that a plain `swift test` works too; nil (and why) when
    /// this machine cannot build them.
    static let attackPrograms: (dir: String?, problem: String) = {
        if let d = ProcessInfo.processInfo.environment["SLUICE_ATTACKS_DIR"],
           FileManager.default.isExecutableFile(atPath: d + "/bystander") {
            return (d, "")
        }
        let dir = root.appendingPathComponent(".build/sluice/attacks").path
        guard let out = try? runTool("/usr/bin/make", ["-s", "-C", root.path, "attacks"]) else {
            return (nil, "cannot run make")
        }
        guard out.status == 0, FileManager.default.isExecutableFile(atPath: dir + "/bystander") else {
            return (nil, "make attacks failed: \(out.stdout)\(out.stderr)")
        }
        return (dir, "")
    }()
}

/// One line of an attack program: `KEYWORD word... key=value...`.
struct AttackLine {
    let text: String
    let words: [String]
    let fields: [String: String]

    init(_ text: String) {
        self.text = text
        var w: [String] = [], f: [String: String] = [:]
        for token in text.split(separator: " ") {
            if let eq = token.firstIndex(of: "=") {
                f[String(token[..<eq])] = String(token[token.index(after: eq)...])
            } else {
                w.append(String(token))
            }
        }
        words = w
        fields = f
    }

    subscript(_ key: String) -> String? { fields[key] }
    func number(_ key: String) -> UInt64? { fields[key].flatMap { UInt64($0) } }
}

/// An attack program running as a tenant. Its stdout is read line by line
/// as it comes; its stderr (the library's SLUICE_DEBUG reasons) goes to a
/// file, so that it can never block the program.
final class AttackProcess {
    let name: String
    let process = Process()
    private let input = Pipe(), output = Pipe()
    private let errPath: String
    private var pending = Data()
    private(set) var lines: [AttackLine] = []
    private var next = 0

    init(_ program: String, tenant: String, router: RouterProcess) throws {
        guard let dir = Paths.attackPrograms.dir else {
            throw XCTSkip("the attack programs cannot be built on this machine: \(Paths.attackPrograms.problem)")
        }
        name = program
        errPath = router.runtimeDir + "/../\(program)-\(UUID().uuidString.prefix(6)).stderr"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: dir + "/" + program)
        var env = ProcessInfo.processInfo.environment
        env["LD_PRELOAD"] = Paths.verbsLibrary
        env["SLUICE_SOCKET"] = router.socket(tenant)
        env["SLUICE_DEBUG"] = "1"
        process.environment = env
        process.standardInput = input
        process.standardOutput = output
        let err = FileHandle(forWritingAtPath: errPath)
        process.standardError = err
        defer { try? err?.close() }
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Reads whatever stdout has, waiting at most `timeout` seconds for some.
    private func pump(timeout: Double) {
        let fd = output.fileHandleForReading.fileDescriptor
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return }
        var buf = [UInt8](repeating: 0, count: 65536)
        let n = read(fd, &buf, buf.count)
        guard n > 0 else { return }
        pending.append(contentsOf: buf[0..<n])
        while let nl = pending.firstIndex(of: 10) {
            lines.append(AttackLine(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self)))
            pending.removeSubrange(pending.startIndex...nl)
        }
    }

    /// The next line that starts with `keyword` (lines before it are kept
    /// in `lines`); throws if none comes within `seconds`.
    func expect(_ keyword: String, seconds: Double = 10) throws -> AttackLine {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            while next < lines.count {
                let l = lines[next]
                next += 1
                if l.words.first == keyword { return l }
            }
            let left = deadline.timeIntervalSinceNow
            if left <= 0 || (!process.isRunning && !hasUnread) {
                throw VerbsError("\(name): no \(keyword) line within \(seconds) s; transcript:\n\(transcript)")
            }
            pump(timeout: min(left, 0.05))
        }
    }

    private var hasUnread: Bool {
        var p = pollfd(fd: output.fileHandleForReading.fileDescriptor, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1 && p.revents & Int16(POLLIN) != 0
    }

    func send(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        // SIGPIPE is ignored by the suite: a program that died gives EPIPE here.
        _ = bytes.withUnsafeBytes { write(input.fileHandleForWriting.fileDescriptor, $0.baseAddress, $0.count) }
    }

    func send(_ fields: KeyValuePairs<String, Any>) {
        send(fields.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
    }

    /// Waits for the program to exit (killing it after `seconds`), reads the
    /// rest of its output, and returns its exit status.
    @discardableResult
    func finish(seconds: Double = 20) -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { pump(timeout: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        while hasUnread {
            let before = lines.count + pending.count
            pump(timeout: 0)
            if lines.count + pending.count == before { break }
        }
        if ProcessInfo.processInfo.environment["SLUICE_ATTACK_TRANSCRIPTS"] != nil {
            print("=== \(name), exit status \(process.terminationStatus)\n\(transcript)")
        }
        return process.terminationStatus
    }

    /// RESULT lines by name (the first of each name).
    var results: [String: AttackLine] {
        var r: [String: AttackLine] = [:]
        for l in lines where l.words.first == "RESULT" && l.words.count >= 3 && r[l.words[1]] == nil { r[l.words[1]] = l }
        return r
    }

    var transcript: String {
        let err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        return lines.map(\.text).joined(separator: "\n") + "\n--- stderr ---\n" + err
    }

    /// Asserts that RESULT `result` has `verdict` and, for each given field, that value.
    func assertResult(_ result: String, _ verdict: String, _ fields: [String: String] = [:],
                      file: StaticString = #filePath, line: UInt = #line) {
        guard let r = results[result] else {
            return XCTFail("\(name): no RESULT \(result); transcript:\n\(transcript)", file: file, line: line)
        }
        XCTAssertEqual(r.words[2], verdict, "\(name): \(r.text)", file: file, line: line)
        for (k, v) in fields.sorted(by: { $0.key < $1.key }) {
            XCTAssertEqual(r[k], v, "\(name): \(k) in \(r.text)", file: file, line: line)
        }
    }

    func assertRefused(_ result: String, status: String, file: StaticString = #filePath, line: UInt = #line) {
        assertResult(result, "refused", ["status": status], file: file, line: line)
    }

    func assertRefused(_ result: String, errno: String, file: StaticString = #filePath, line: UInt = #line) {
        assertResult(result, "refused", ["errno": errno], file: file, line: line)
    }
}

/// The bystander tenant: runs verified traffic from before an attack starts
/// until after it ends (examples/attacks/bystander.c).
final class Bystander {
    let program: AttackProcess

    init(router: RouterProcess) throws {
        program = try AttackProcess("bystander", tenant: "bystander", router: router)
        _ = try program.expect("READY")
    }

    /// Stops it, and asserts that it never failed or stalled meanwhile.
    func stopAndCheck(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(program.process.isRunning, "the bystander stopped during the attack:\n\(program.transcript)", file: file, line: line)
        program.send("STOP")
        let status = program.finish(seconds: 10)
        XCTAssertEqual(status, 0, "bystander:\n\(program.transcript)", file: file, line: line)
        guard let report = program.lines.last(where: { $0.words.first == "BYSTANDER" }) else {
            return XCTFail("no report from the bystander:\n\(program.transcript)", file: file, line: line)
        }
        XCTAssertEqual(report.words.dropFirst().first, "ok", report.text, file: file, line: line)
        XCTAssertGreaterThan(report.number("iterations") ?? 0, 0, report.text, file: file, line: line)
        // Uninterrupted: no iteration (a verified WRITE and SEND) took 2 s.
        XCTAssertLessThan(report.number("maxgap_us") ?? .max, 2_000_000, report.text, file: file, line: line)
    }
}

extension VerbsEndpoint {
    /// RESET -> INIT -> RTR -> RTS towards a QP known only by number and LID
    /// (an attack program's).
    func connect(_ qp: UnsafeMutablePointer<ibv_qp>, toQPN qpn: UInt32, lid: UInt16, access: ibv_access_flags) throws {
        var a = ibv_qp_attr()
        a.qp_state = IBV_QPS_INIT
        a.port_num = 1
        a.qp_access_flags = access.rawValue
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_PKEY_INDEX, IBV_QP_PORT, IBV_QP_ACCESS_FLAGS])
        a = ibv_qp_attr()
        a.qp_state = IBV_QPS_RTR
        a.path_mtu = IBV_MTU_1024
        a.dest_qp_num = qpn
        a.max_dest_rd_atomic = 1
        a.min_rnr_timer = 1
        a.ah_attr.port_num = 1
        a.ah_attr.dlid = lid
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_AV, IBV_QP_PATH_MTU, IBV_QP_DEST_QPN, IBV_QP_RQ_PSN,
                            IBV_QP_MAX_DEST_RD_ATOMIC, IBV_QP_MIN_RNR_TIMER])
        a = ibv_qp_attr()
        a.qp_state = IBV_QPS_RTS
        a.timeout = 14
        a.retry_cnt = 7
        a.rnr_retry = 7
        a.max_rd_atomic = 1
        try modify(qp, &a, [IBV_QP_STATE, IBV_QP_TIMEOUT, IBV_QP_RETRY_CNT, IBV_QP_RNR_RETRY, IBV_QP_SQ_PSN, IBV_QP_MAX_QP_RD_ATOMIC])
    }

    /// A QP in another of this context's PDs; the caller destroys it.
    func createQP(in pd: UnsafeMutablePointer<ibv_pd>) throws -> UnsafeMutablePointer<ibv_qp> {
        var attr = ibv_qp_init_attr()
        attr.send_cq = cq
        attr.recv_cq = cq
        attr.qp_type = IBV_QPT_RC
        attr.cap.max_send_wr = 16
        attr.cap.max_recv_wr = 16
        attr.cap.max_send_sge = 1
        attr.cap.max_recv_sge = 1
        guard let qp = ibv_create_qp(pd, &attr) else { throw VerbsError("ibv_create_qp", errno) }
        return qp
    }

    var gidHex: String {
        withUnsafeBytes(of: gid) { $0.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
    }

    /// The virtual IPv4 address behind GID 0.
    var ipv4: UInt32 { withUnsafeBytes(of: gid) { UInt32($0[12]) << 24 | UInt32($0[13]) << 16 | UInt32($0[14]) << 8 | UInt32($0[15]) } }
}

/// FNV-1a over bytes, as the attack programs report what they read.
func fnv1a(_ bytes: [UInt8]) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes {
        h ^= UInt64(b)
        h = h &* 0x100_0000_01b3
    }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

extension RouterProcess {
    /// The sequence number of the newest audit record.
    var lastAuditSeq: Int { auditRecords().compactMap { $0["seq"] as? Int }.max() ?? 0 }

    /// Audit records after `seq` that match every given field.
    func audit(since seq: Int, _ match: [String: String]) -> [[String: Any]] {
        auditRecords().filter { r in
            (r["seq"] as? Int ?? 0) > seq && match.allSatisfy { (r[$0.key] as? String) == $0.value }
        }
    }
}

/// "rule: count" for each rule among `records`, for failure messages.
func ruleSummary(_ records: [[String: Any]]) -> String {
    var n: [String: Int] = [:]
    for r in records { n[(r["rule"] as? String) ?? "(none)", default: 0] += 1 }
    let reasons = records.prefix(3).compactMap { $0["reason"] as? String }
    return n.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        + (reasons.isEmpty ? "" : "; e.g. " + reasons.joined(separator: " | "))
}
