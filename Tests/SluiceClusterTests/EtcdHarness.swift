#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Foundation
import XCTest

/// A private etcd for one test: loopback ports chosen free, a data directory
/// under /tmp that the test created and removes. Nothing else is touched.
struct EtcdStartFailure: Error, CustomStringConvertible {
    let description: String
}

final class EtcdServer {
    static var binary: String? {
        for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        return nil
    }

    let dataDir: String
    let clientPort: UInt16
    let peerPort: UInt16
    let host: String
    private var process: Process?
    private(set) var log = ""
    private let logPath: String

    var endpoint: String { "\(host):\(clientPort)" }

    /// Starts etcd; throws XCTSkip when it is not installed, and an error
    /// (the test fails) when it is but does not start.
    init(host: String = "127.0.0.1") throws {
        guard let bin = EtcdServer.binary else {
            throw XCTSkip("etcd is not installed (Debian: apt-get install etcd-server; `make test` installs it)")
        }
        self.host = host
        dataDir = "/tmp/sluice-etcd-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: false)
        logPath = dataDir + ".log"
        clientPort = EtcdServer.freePort(host)
        peerPort = EtcdServer.freePort(host)
        _ = bin
        try start()
    }

    static func freePort(_ host: String) -> UInt16 {
        var port: UInt16 = 0
        let fd = sluice_net_listen(host, 0, &port)
        if fd >= 0 { close(fd) }
        return port
    }

    func start(wipe: Bool = false) throws {
        if wipe {
            try? FileManager.default.removeItem(atPath: dataDir)
            try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: false)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: EtcdServer.binary!)
        p.arguments = ["--name", "sluice-test", "--data-dir", dataDir + "/data",
                       "--listen-client-urls", "http://\(host):\(clientPort)", "--advertise-client-urls", "http://\(host):\(clientPort)",
                       "--listen-peer-urls", "http://\(host):\(peerPort)", "--initial-advertise-peer-urls", "http://\(host):\(peerPort)",
                       "--initial-cluster", "sluice-test=http://\(host):\(peerPort)", "--initial-cluster-state", "new",
                       "--log-level", "warn"]
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let out = FileHandle(forWritingAtPath: logPath)
        p.standardOutput = out
        p.standardError = out
        try p.run()
        process = p
        // Ready when a range answers.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if !p.isRunning { break }
            if let c = try? EtcdClientProbe.ready(host: host, port: clientPort), c { return }
            usleep(100_000)
        }
        let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        stop()
        // Installed but not starting is a failure, not a skip: `make test`
        // installs etcd for these tests to run.
        throw EtcdStartFailure(description: "etcd is installed but could not start on \(host):\(clientPort): \(text.suffix(600))")
    }

    func stop() {
        guard let p = process else { return }
        if p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        process = nil
    }

    func kill9() {
        guard let p = process, p.isRunning else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: dataDir)
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

enum EtcdClientProbe {
    static func ready(host: String, port: UInt16) throws -> Bool {
        let fd = sluice_net_connect_timeout(host, port, 300)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let body = "{\"key\":\"AA==\"}"
        let req = "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n\(body)"
        _ = Array(req.utf8).withUnsafeBytes { sluice_net_send_blocking(fd, $0.baseAddress, $0.count) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &buf, buf.count)
        return n > 0 && String(decoding: buf.prefix(n), as: UTF8.self).hasPrefix("HTTP/1.1 200")
    }
}
