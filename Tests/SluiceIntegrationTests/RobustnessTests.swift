import Foundation
import XCTest
import SluiceWire
import CSluiceSys

/// A hostile or crashing tenant: the router answers with an error, records
/// it, reclaims what it must, and keeps serving everyone else.
final class RobustnessTests: XCTestCase {
    var router: RouterProcess!

    override func setUpWithError() throws {
        router = try RouterProcess()
    }

    override func tearDownWithError() throws {
        XCTAssertEqual(router.stop(), 0, "router exit status; stderr: \(router.stderrText())")
    }

    var pingpong: String {
        get throws {
            guard let tool = Paths.tool("ibv_rc_pingpong") else { throw XCTSkip("ibv_rc_pingpong is not installed (ibverbs-utils)") }
            return tool
        }
    }

    static var nextPort = 30000 + Int(getpid() % 10000)
    func port() -> String {
        RobustnessTests.nextPort += 1
        return String(RobustnessTests.nextPort)
    }

    func testMalformedRequestsGetErrorsWhileAnotherTenantKeepsWorking() throws {
        // A ping-pong pair in another tenant that must finish while we attack.
        let (server, client) = try startPingPongPair(pingpong, ["-d", "sluice0", "-g", "0", "-s", "4096", "-n", "3000", "-p", port()],
                                                     socket: router.socket("beta"))

        let s = try RawSession(socket: router.socket("alpha"))
        _ = try s.open()

        // Bad magic.
        var req = sluice_alloc_pd_req()
        s.header(&req, opcode: SLUICE_OP_ALLOC_PD.rawValue)
        req.hdr.magic = 0xdead_beef
        var a = try XCTUnwrap(s.sendRaw(withUnsafeBytes(of: req) { Array($0) }))
        XCTAssertEqual(a.status, EINVAL)
        XCTAssertTrue(a.reason.contains("magic"), a.reason)

        // Header length that lies about the datagram.
        s.header(&req, opcode: SLUICE_OP_ALLOC_PD.rawValue)
        req.hdr.length = 999
        a = try XCTUnwrap(s.sendRaw(withUnsafeBytes(of: req) { Array($0) }))
        XCTAssertEqual(a.status, EINVAL)
        XCTAssertTrue(a.reason.contains("length"), a.reason)

        // Shorter than a header, and larger than any message.
        a = try XCTUnwrap(s.sendRaw([1, 2, 3, 4, 5]))
        XCTAssertEqual(a.status, EINVAL)
        a = try XCTUnwrap(s.sendRaw([UInt8](repeating: 7, count: Int(SLUICE_MSG_MAX) * 4)))
        XCTAssertEqual(a.status, EINVAL)
        XCTAssertTrue(a.reason.contains("exceed"), a.reason)

        // A well-framed request of the wrong size for its opcode.
        var big = [UInt8](repeating: 0, count: MemoryLayout<sluice_handle_req>.size + 8)
        var h = sluice_msg_hdr(magic: SLUICE_WIRE_MAGIC, version: UInt16(SLUICE_WIRE_VERSION),
                               opcode: UInt16(SLUICE_OP_DEALLOC_PD.rawValue), length: UInt32(big.count), seq: 77)
        withUnsafeBytes(of: &h) { big.replaceSubrange(0..<16, with: $0) }
        a = try XCTUnwrap(s.sendRaw(big))
        XCTAssertEqual(a.status, EINVAL)

        // Unknown opcode.
        a = try XCTUnwrap(s.request(sluice_alloc_pd_req(), opcode: 999))
        XCTAssertEqual(a.status, EOPNOTSUPP)

        // Invalid handles: never minted, and minted by another session.
        a = try XCTUnwrap(s.handleOp(SLUICE_OP_DEALLOC_PD.rawValue, 12345))
        XCTAssertEqual(a.status, EINVAL)
        let other = try RawSession(socket: router.socket("alpha"))
        _ = try other.open()
        var foreign: UInt32 = 0
        for _ in 0..<3 { foreign = try XCTUnwrap(other.allocPD()) }
        a = try XCTUnwrap(s.handleOp(SLUICE_OP_DEALLOC_PD.rawValue, foreign))
        XCTAssertEqual(a.status, EINVAL, "a session used another session's PD handle")
        XCTAssertEqual(other.handleOp(SLUICE_OP_DEALLOC_PD.rawValue, foreign)?.status, 0, "the owner still has it")

        // Memory that is not a sealed memfd, or too small for the request.
        let pd = try XCTUnwrap(s.allocPD())
        func regMR(_ fd: Int32, mapLength: UInt64 = 8192) -> RawSession.Answer? {
            var r = sluice_reg_mr_req()
            r.pd = pd
            r.access = UInt32(SLUICE_ACCESS_LOCAL_WRITE)
            r.addr = 0x7000_0000_0000
            r.length = 8192
            r.iova = r.addr
            r.fd_offset = 0
            r.map_length = mapLength
            r.page_offset = 0
            return s.request(r, opcode: SLUICE_OP_REG_MR.rawValue, fds: [fd])
        }
        let shmPath = "/dev/shm/sluice-test-\(getpid())"
        let unsealed = Glibc.open(shmPath, O_RDWR | O_CREAT | O_EXCL, 0o600)
        unlink(shmPath)
        XCTAssertGreaterThanOrEqual(unsealed, 0)
        ftruncate(unsealed, 8192)
        a = try XCTUnwrap(regMR(unsealed))
        XCTAssertEqual(a.status, EINVAL)
        XCTAssertTrue(a.reason.contains("sealed"), a.reason)
        close(unsealed)
        let small = sluice_memfd_sealed("small", 4096)
        a = try XCTUnwrap(regMR(small))
        XCTAssertEqual(a.status, EINVAL)
        XCTAssertTrue(a.reason.contains("fewer than"), a.reason)
        close(small)
        var p: [Int32] = [-1, -1]
        _ = sluice_pipe(&p, 0, 0)
        a = try XCTUnwrap(regMR(p[0]))
        XCTAssertEqual(a.status, EINVAL)
        close(p[0]); close(p[1])
        // A sealed memfd of the right size works: the session is still usable.
        let good = sluice_memfd_sealed("good", 8192)
        a = try XCTUnwrap(regMR(good))
        XCTAssertEqual(a.status, 0, a.reason)
        close(good)
        XCTAssertNotNil(s.allocPD(), "the session keeps working after refusals")

        XCTAssertEqual(server.wait(seconds: 120), 0, "bystander server: \(server.output)")
        XCTAssertEqual(client.wait(seconds: 120), 0, "bystander client: \(client.output)")

        let denials = router.auditRecords().filter { ($0["decision"] as? String) == "deny" && ($0["tenant"] as? String) == "alpha" }
        XCTAssertGreaterThanOrEqual(denials.count, 10, "every refusal is recorded")
        XCTAssertTrue(denials.contains { ($0["reason"] as? String ?? "").contains("bad magic") })
    }

    func testAKilledTenantLeavesNoObjectsFdsOrMappings() throws {
        let baseline = try router.status()
        let args = ["-d", "sluice0", "-g", "0", "-s", "65536", "-n", "100000000", "-p", port()]
        let (server, c) = try startPingPongPair(pingpong, args, socket: router.socket("alpha"))
        let busy = try router.waitForStatus { (($0["objects"] as? [String: Int])?["qp"] ?? 0) == 2 }
        XCTAssertEqual((busy["objects"] as? [String: Int])?["qp"], 2, "both QPs exist mid-traffic")
        XCTAssertGreaterThan(busy["mappings"] as? Int ?? 0, 0)
        usleep(300_000)
        XCTAssertTrue(server.process.isRunning && c.process.isRunning, "traffic still running when killed")
        kill(server.process.processIdentifier, SIGKILL)
        kill(c.process.processIdentifier, SIGKILL)
        server.wait()
        c.wait()
        // Tenant fds are closed by the router's reaper thread, a moment later.
        let after = try router.waitForStatus { ($0["sessions"] as? Int) == 0 && ($0["fds"] as? Int) == (baseline["fds"] as? Int) }
        XCTAssertEqual(after["sessions"] as? Int, 0)
        XCTAssertEqual(after["objects"] as? [String: Int], ["pd": 0, "mr": 0, "cq": 0, "qp": 0, "channel": 0])
        XCTAssertEqual(after["fds"] as? Int, baseline["fds"] as? Int, "router fds back to the baseline")
        XCTAssertEqual(after["mappings"] as? Int, 0)
        XCTAssertEqual(after["mappedBytes"] as? Int, 0)
    }

    func testAnUnadmittedUidIsRefusedAtConnect() throws {
        // A router whose tenant admits only uid 4242 (we are not that uid).
        let strict = try RouterProcess(tenants: ["gamma"], uid: getuid() == 4242 ? 4243 : 4242)
        defer { _ = strict.stop() }
        let s = try RawSession(socket: strict.socket("gamma"))
        var req = sluice_open_req()
        req.abi_version = SLUICE_WIRE_VERSION
        let a = try XCTUnwrap(s.request(req, opcode: SLUICE_OP_OPEN.rawValue), "a refused peer gets an answer")
        XCTAssertEqual(a.status, EACCES)
        XCTAssertTrue(a.reason.contains("not admitted"), a.reason)
        XCTAssertTrue(a.fds.isEmpty)
        XCTAssertNil(s.request(req, opcode: SLUICE_OP_OPEN.rawValue), "and then the socket is closed")
        let refused = strict.auditRecords().filter { ($0["event"] as? String) == "session.refused" }
        XCTAssertEqual(refused.count, 1)
        XCTAssertTrue((refused.first?["reason"] as? String ?? "").contains("not admitted"))
    }
}
