import Crypto
import XCTest
@testable import SluiceCluster

final class HandshakeTests: XCTestCase {
    let key = SymmetricKey(data: Array("0123456789abcdef0123456789abcdef".utf8))

    func acceptor(key: SymmetricKey? = nil, name: String = "b", admits: @escaping (String) -> Bool = { _ in true }) -> LinkHandshake {
        LinkHandshake(role: .acceptor(admits: admits), localName: name, key: key ?? self.key)
    }

    func dialer(key: SymmetricKey? = nil, name: String = "a", expecting: String = "b") -> LinkHandshake {
        LinkHandshake(role: .dialer(expecting: expecting), localName: name, key: key ?? self.key)
    }

    /// Runs a handshake to completion or the first error; returns the frames
    /// the dialer sent (for replay tests).
    @discardableResult
    func run(_ d: inout LinkHandshake, _ a: inout LinkHandshake) throws -> [LinkFrame.Frame] {
        var sent: [LinkFrame.Frame] = []
        let hello = d.start()
        sent += hello
        guard case .send(let challenge) = try a.receive(hello[0]) else { XCTFail("no challenge"); return sent }
        guard case .established(let auth) = try d.receive(challenge[0]) else { XCTFail("dialer not established"); return sent }
        sent += auth
        guard case .established = try a.receive(auth[0]) else { XCTFail("acceptor not established"); return sent }
        return sent
    }

    func testSameKeyAuthenticatesBothWaysAndDerivesMatchingDirectionalKeys() throws {
        var d = dialer(), a = acceptor()
        try run(&d, &a)
        XCTAssertEqual(d.peerName, "b")
        XCTAssertEqual(a.peerName, "a")
        XCTAssertEqual(d.sendKey, a.receiveKey)
        XCTAssertEqual(d.receiveKey, a.sendKey)
        XCTAssertNotEqual(d.sendKey, d.receiveKey, "one key per direction, so a frame cannot be reflected")
        // A fresh handshake between the same routers yields fresh keys.
        var d2 = dialer(), a2 = acceptor()
        try run(&d2, &a2)
        XCTAssertNotEqual(d.sendKey, d2.sendKey)
    }

    func testAWrongKeyIsRefusedByTheDialerWhenTheAcceptorLacksIt() {
        var d = dialer(), a = acceptor(key: SymmetricKey(size: .bits256))
        XCTAssertThrowsError(try run(&d, &a)) { e in
            XCTAssertEqual(e as? LinkError, .authenticationFailed("the peer does not hold the cluster key"))
        }
        XCTAssertFalse(d.isEstablished)
    }

    func testADialerWithAWrongKeyIsRefusedByTheAcceptor() throws {
        // The dialer cannot check the challenge (wrong key), so force it on
        // with a forged AUTH: the acceptor must refuse it.
        var a = acceptor()
        var d = dialer(key: SymmetricKey(size: .bits256))
        let hello = d.start()
        _ = try a.receive(hello[0])
        XCTAssertThrowsError(try a.receive(LinkFrame.Frame(.auth, body: [UInt8](repeating: 0x41, count: 32)))) { e in
            guard case .authenticationFailed = e as? LinkError else { return XCTFail("\(e)") }
        }
        XCTAssertFalse(a.isEstablished)
        XCTAssertNil(a.sendKey)
    }

    func testAReplayedHandshakeIsRefused() throws {
        var d = dialer(), a = acceptor()
        let recorded = try run(&d, &a)
        // An eavesdropper replays the dialer's HELLO and AUTH to the acceptor:
        // its new nonce makes the old AUTH worthless.
        var fresh = acceptor()
        _ = try fresh.receive(recorded[0])
        XCTAssertThrowsError(try fresh.receive(recorded[1])) { e in
            guard case .authenticationFailed = e as? LinkError else { return XCTFail("\(e)") }
        }
        XCTAssertFalse(fresh.isEstablished)
    }

    func testAReplayedChallengeIsRefusedByANewDialer() throws {
        var d = dialer(), a = acceptor()
        let hello = d.start()
        guard case .send(let challenge) = try a.receive(hello[0]) else { return XCTFail() }
        var d2 = dialer()
        _ = d2.start()
        XCTAssertThrowsError(try d2.receive(challenge[0])) { e in
            XCTAssertEqual(e as? LinkError, .authenticationFailed("the peer does not hold the cluster key"))
        }
    }

    func testTheAcceptorsProofCannotBeReflectedAsTheDialers() throws {
        var d = dialer(), a = acceptor()
        let hello = d.start()
        guard case .send(let challenge) = try a.receive(hello[0]) else { return XCTFail() }
        let acceptorMAC = Array(challenge[0].body.suffix(32))
        XCTAssertThrowsError(try a.receive(LinkFrame.Frame(.auth, body: acceptorMAC)))
    }

    func testUnknownRoutersWrongTargetsAndOwnNameAreRefused() throws {
        var a = acceptor(admits: { $0 == "c" })
        var d = dialer()
        XCTAssertThrowsError(try a.receive(d.start()[0])) { e in
            XCTAssertEqual(e as? LinkError, .authenticationFailed("router \"a\" is not in the cluster directory"))
        }
        var a2 = acceptor()
        var d2 = dialer(expecting: "z")
        XCTAssertThrowsError(try a2.receive(d2.start()[0])) { e in
            XCTAssert("\(e)".contains("wants router \"z\""), "\(e)")
        }
        var a3 = acceptor()
        var d3 = dialer(name: "b")
        XCTAssertThrowsError(try a3.receive(d3.start()[0]))
        // The dialer checks the acceptor's name too.
        var d4 = dialer(expecting: "b")
        var a4 = acceptor(name: "b")
        let hello = d4.start()
        guard case .send(let ch) = try a4.receive(hello[0]) else { return XCTFail() }
        var renamed = ch[0]
        renamed.body[1] = UInt8(ascii: "x")
        XCTAssertThrowsError(try d4.receive(renamed))
    }

    func testMalformedHandshakeBodiesAreViolationsNotCrashes() {
        let bodies: [[UInt8]] = [[], [0], [65], [3, 0x41, 0x42], [1, 0x20, 1, 0x62] + [UInt8](repeating: 0, count: 32),
                                 [1, 0x61, 1, 0x62] + [UInt8](repeating: 0, count: 31),
                                 [1, 0x61, 1, 0x62] + [UInt8](repeating: 0, count: 33)]
        for b in bodies {
            var a = acceptor()
            XCTAssertThrowsError(try a.receive(LinkFrame.Frame(.hello, body: b)), "\(b)")
        }
        var a = acceptor()
        XCTAssertThrowsError(try a.receive(LinkFrame.Frame(.auth, body: [UInt8](repeating: 0, count: 32))), "AUTH before HELLO")
        var d = dialer()
        XCTAssertThrowsError(try d.receive(LinkFrame.Frame(.challenge, body: [])), "CHALLENGE before HELLO")
    }

    func testTheClusterKeyFileMustBePrivateAndLongEnough() throws {
        let dir = NSTemporaryDirectory() + "sluice-key-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/cluster.key"
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 32), attributes: [.posixPermissions: 0o644])
        XCTAssertThrowsError(try ClusterKey.load(path: path)) { XCTAssert("\($0)".contains("readable by others"), "\($0)") }
        chmod(path, 0o600)
        XCTAssertNoThrow(try ClusterKey.load(path: path))
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 31), attributes: [.posixPermissions: 0o600])
        XCTAssertThrowsError(try ClusterKey.load(path: path)) { XCTAssert("\($0)".contains("at least 32"), "\($0)") }
    }
}
