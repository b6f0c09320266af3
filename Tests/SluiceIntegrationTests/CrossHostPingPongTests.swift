import Foundation
import XCTest

/// Debian's unmodified ibv_rc_pingpong: the server on host 0, the client on
/// host 1 (network namespaces), each through its own host's router; the two
/// programs meet over TCP on the hosts' addresses, their QPs over the fabric.
final class CrossHostPingPongTests: XCTestCase {
    func testUnmodifiedPingPongBetweenTwoHostsAtSeveralSizes() throws {
        guard let pingpong = Paths.tool("ibv_rc_pingpong") else {
            throw XCTSkip("ibv_rc_pingpong is not installed (Debian package ibverbs-utils; `make test` installs it)")
        }
        let lab = try NetnsLab(hosts: 2)
        addTeardownBlock { lab.teardown() }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-pp-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        var yaml = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<2 {
            yaml += "    - name: host-\(i)\n      fabric: \(lab.address(i)):7470\n      lids: [\(1 + 1000 * i)-\(1000 + 1000 * i)]\n      addresses: [10.77.\(i).0/24]\n"
        }
        try yaml.write(toFile: dir + "/cluster.yaml", atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/cluster.key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                       attributes: [.posixPermissions: 0o600])
        let routers = try (0..<2).map { i -> RouterProcess in
            let r = try RouterProcess(policies: ["alpha": RouterProcess.permissive("alpha")],
                                      extraArguments: ["--cluster-key", dir + "/cluster.key", "--router-name", "host-\(i)",
                                                       "--cluster-file", dir + "/cluster.yaml"],
                                      launcher: lab.inHost(i, []))
            lab.adopt(r.process)
            return r
        }
        // No link until the first QP is connected across (lazy links).
        XCTAssertEqual(routers[0].fabricState("host-1"), "idle")
        try lab.pingPong(pingpong, server: routers[0].socket("alpha"), client: routers[1].socket("alpha"), basePort: 18000,
                         runs: [(1, 500, true), (4096, 500, false), (65536, 100, true), (262_144, 50, true), (1_048_576, 20, false)])
        for r in routers { XCTAssertEqual(r.stop(), 0, r.stderrText()) }
    }
}

extension NetnsLab {
    /// Unmodified `ibv_rc_pingpong`: the server on host 0 through `server`'s
    /// socket, the client on host 1 through `client`'s, once per run
    /// (message size, iterations, by GID or LID); both must exit 0 having
    /// moved every byte.
    func pingPong(_ pingpong: String, server serverSocket: String, client clientSocket: String, basePort: Int32,
                  runs: [(size: Int, iterations: Int, gid: Bool)], clientSeconds: Double = 60,
                  file: StaticString = #filePath, line: UInt = #line) throws {
        var port: Int32 = basePort + Int32(getpid() % 1000)
        for (size, iters, gid) in runs {
            port += 1
            let args = ["-d", "sluice0", "-p", String(port), "-s", String(size), "-n", String(iters)] + (gid ? ["-g", "0"] : [])
            let server = try TenantProcess(ip, ["netns", "exec", hosts[0], pingpong] + args, socket: serverSocket)
            adopt(server.process)
            var client: TenantProcess?
            // The server's TCP listener takes a moment; a client that could not connect exits at once.
            for _ in 0..<50 {
                usleep(100_000)
                let c = try TenantProcess(ip, ["netns", "exec", hosts[1], pingpong] + args + [address(0)], socket: clientSocket)
                adopt(c.process)
                var waited = 0
                while c.process.isRunning && waited < 300 { usleep(10_000); waited += 10 }
                if c.process.isRunning || c.process.terminationStatus == 0 || !c.output.contains("Couldn't connect") {
                    client = c
                    break
                }
            }
            let c = try XCTUnwrap(client, "the client never reached the server", file: file, line: line)
            XCTAssertEqual(c.wait(seconds: clientSeconds), 0, "size \(size): client: \(c.output)", file: file, line: line)
            XCTAssertEqual(server.wait(seconds: 60), 0, "size \(size): server: \(server.output)", file: file, line: line)
            XCTAssert(c.output.contains("\(size * iters * 2) bytes in"), "size \(size): \(c.output)", file: file, line: line)
        }
    }
}
