import Foundation
import XCTest

/// Debian's unmodified ibv_rc_pingpong, server and client, through
/// libsluice-verbs.so and a real router.
final class PingPongTests: XCTestCase {
    var router: RouterProcess!
    var pingpong: String!

    override func setUpWithError() throws {
        guard let tool = Paths.tool("ibv_rc_pingpong") else {
            throw XCTSkip("ibv_rc_pingpong is not installed (Debian package ibverbs-utils; `make test` installs it)")
        }
        pingpong = tool
        router = try RouterProcess()
    }

    override func tearDownWithError() throws {
        XCTAssertEqual(router.stop(), 0, "router exit status; stderr: \(router.stderrText())")
    }

    static var nextPort: Int32 = 20000 + Int32(getpid() % 10000)

    /// Runs a server and a client with the same options; returns both outputs.
    func run(_ options: [String], tenant: String = "alpha") throws -> (server: String, client: String) {
        PingPongTests.nextPort += 1
        let port = String(PingPongTests.nextPort)
        let args = ["-d", "sluice0", "-p", port] + options
        let (server, client) = try startPingPongPair(pingpong, args, socket: router.socket(tenant))
        let clientStatus = client.wait(seconds: 120)
        let serverStatus = server.wait(seconds: 120)
        XCTAssertEqual(clientStatus, 0, "client failed: \(client.output)")
        XCTAssertEqual(serverStatus, 0, "server failed: \(server.output)")
        for out in [server.output, client.output] {
            XCTAssertTrue(out.contains("bytes in") && out.contains("iters in"), "no throughput report in: \(out)")
        }
        return (server.output, client.output)
    }

    func testGIDAddressingAtEverySize() throws {
        for size in [1, 4096, 65536, 1_048_576] {
            let iters = size >= 65536 ? "100" : "500"
            let (_, client) = try run(["-g", "0", "-s", String(size), "-n", iters])
            XCTAssertTrue(client.contains("\(size * Int(iters)! * 2) bytes in"), "size \(size): \(client)")
        }
    }

    func testCompletionEvents() throws {
        for size in [1, 4096, 65536] {
            _ = try run(["-g", "0", "-e", "-s", String(size), "-n", "200"])
        }
    }

    func testLIDAddressing() throws {
        let (_, client) = try run(["-s", "4096", "-n", "500"])
        XCTAssertTrue(client.contains("4096000 bytes in"), client)
        _ = try run(["-e", "-s", "65536", "-n", "100"])
    }

    func testEverythingIsReclaimedAfterwards() throws {
        let before = try router.status()
        _ = try run(["-g", "0", "-s", "4096", "-n", "100"])
        let after = try router.waitForStatus { ($0["sessions"] as? Int) == 0 && ($0["fds"] as? Int) == (before["fds"] as? Int) }
        XCTAssertEqual(after["sessions"] as? Int, 0)
        XCTAssertEqual(after["objects"] as? [String: Int], ["pd": 0, "mr": 0, "cq": 0, "qp": 0, "channel": 0])
        XCTAssertEqual(after["fds"] as? Int, before["fds"] as? Int, "router fds")
        XCTAssertEqual(after["mappings"] as? Int, 0, "router mappings")
    }
}
