import XCTest
@testable import SluicePolicy

/// Checks across files, and loading a directory as one all-or-nothing set.
final class PolicySetTests: XCTestCase {
    func testASetIndexesTenantsAndKeepsTheFilesAsRead() throws {
        let files = ["d/b.yaml": tenant("beta"), "d/a.yaml": tenant("alpha")]
        let s = try set(files)
        XCTAssertEqual(s.names, ["alpha", "beta"])
        XCTAssertEqual(s["beta"]?.source, "d/b.yaml")
        XCTAssertNil(s["gamma"])
        XCTAssertEqual(s.files.map(\.path), ["d/a.yaml", "d/b.yaml"])
        XCTAssertEqual(s.files[0].bytes, Array(tenant("alpha").utf8))
    }

    func testTwoFilesMayNotDefineOneTenant() {
        XCTAssertEqual(setHeadlines(["a.yaml": tenant("alpha"), "b.yaml": tenant("alpha")]),
                       [#"b.yaml:4:9: metadata.name: Duplicate value: "alpha": tenant already defined in a.yaml"#])
    }

    func testAddressPoolsMayNotOverlap() {
        XCTAssertEqual(setHeadlines(["a.yaml": tenant("alpha", pool: "10.77.1.0/24"),
                                     "b.yaml": tenant("beta", pool: "10.77.0.0/16"),
                                     "c.yaml": tenant("gamma", pool: "10.77.2.0/24")]),
                       [#"b.yaml:9:16: spec.addressPool: Invalid value: "10.77.0.0/16": overlaps 10.77.1.0/24 of tenant alpha (a.yaml)"#,
                        #"c.yaml:9:16: spec.addressPool: Invalid value: "10.77.2.0/24": overlaps 10.77.0.0/16 of tenant beta (b.yaml)"#])
        XCTAssertEqual(setHeadlines(["a.yaml": tenant("alpha", pool: "10.77.1.0/24"), "b.yaml": tenant("beta", pool: "10.77.2.0/24")]), [])
    }

    func testPeersMustNameATenantOfTheSet() {
        XCTAssertEqual(setHeadlines(["a.yaml": tenant("alpha", peers: [("alpha", "[send]"), ("omega", "[send]")]),
                                     "b.yaml": tenant("beta")]),
                       [#"a.yaml:12:15: spec.peers[1].tenant: Not found: "omega": no such tenant; defined tenants: "alpha", "beta""#])
    }

    func testABrokenFileDoesNotMakeItsNameUnknownToItsPeers() {
        let broken = tenant("beta", peers: [("alpha", "[send]")], extra: "  quotas: {queuePairs: -1}\n")
        XCTAssertEqual(setHeadlines(["a.yaml": tenant("alpha", peers: [("beta", "[send]")]), "b.yaml": broken]),
                       ["b.yaml:12:24: spec.quotas.queuePairs: Invalid value: -1: must be >= 0"])
    }

    func testEveryErrorOfEveryFileIsReportedSorted() {
        let a = tenant("alpha", extra: "  quotas: {queuePairs: -1, memoryRegions: x}\n")
        let b = tenant("beta", operations: "[fly]")
        XCTAssertEqual(setHeadlines(["b.yaml": b, "a.yaml": a, "c.yaml": tenant("alpha")]), [
            "a.yaml:9:24: spec.quotas.queuePairs: Invalid value: -1: must be >= 0",
            #"a.yaml:9:43: spec.quotas.memoryRegions: Invalid value: "x": must be an integer"#,
            #"b.yaml:8:16: spec.operations[0]: Unsupported value: "fly": supported values: "send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd""#,
            #"c.yaml:4:9: metadata.name: Duplicate value: "alpha": tenant already defined in a.yaml"#,
        ])
    }

    func testAFileThatIsNotUTF8IsAnError() {
        XCTAssertThrowsError(try PolicySet(files: [PolicyFile(path: "x.yaml", bytes: [0x61, 0xff, 0x0a])])) { error in
            XCTAssertEqual("\(error)", "x.yaml: Invalid value: the file is not UTF-8 text")
        }
    }

    // MARK: directories

    func testADirectoryLoadsItsYAMLFilesOnly() throws {
        let dir = try temporaryPolicyDirectory([
            "alpha.yaml": tenant("alpha"), "beta.yml": tenant("beta"),
            "README.md": "not a policy", ".gamma.yaml": "garbage: [", "notes.yaml~": "garbage: [",
        ], test: self)
        // A ConfigMap mount: the real files live in a hidden directory.
        try FileManager.default.createDirectory(atPath: dir + "/..data", withIntermediateDirectories: true)
        try "garbage: [".write(toFile: dir + "/..data/delta.yaml", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir + "/sub.yaml", withIntermediateDirectories: true)
        let s = try PolicySet.load(directory: dir)
        XCTAssertEqual(s.names, ["alpha", "beta"])
        XCTAssertEqual(s.files.map { ($0.path as NSString).lastPathComponent }, ["alpha.yaml", "beta.yml"])
    }

    func testADirectoryWithOneBadFileLoadsNothing() throws {
        let dir = try temporaryPolicyDirectory(["alpha.yaml": tenant("alpha"), "beta.yaml": tenant("beta", operations: "send")],
                                               test: self)
        XCTAssertThrowsError(try PolicySet.load(directory: dir)) { error in
            XCTAssertEqual((error as? PolicyLoadError)?.errors.map(\.headline),
                           ["\(dir)/beta.yaml:8:15: spec.operations: Invalid type: expected a list of operations, got a string"])
        }
    }

    func testAnEmptyOrMissingDirectoryIsAnError() throws {
        let dir = try temporaryPolicyDirectory(["README.md": "x"], test: self)
        XCTAssertThrowsError(try PolicySet.load(directory: dir)) { error in
            XCTAssertEqual("\(error)", "\(dir): Required value: no policy files (*.yaml, *.yml) in the directory")
        }
        XCTAssertThrowsError(try PolicySet.load(directory: dir + "/missing")) { error in
            XCTAssertEqual("\(error)", "\(dir)/missing: cannot read the policy directory")
        }
    }

    func testTheShippedExamplesLoadAsOneSet() throws {
        let s = try PolicySet.load(directory: Paths.policies)
        XCTAssertEqual(s.names, ["alpha", "beta", "delta", "gamma"])
        let pools = s.tenants.compactMap(\.addressPool)
        XCTAssertEqual(pools.count, 4, "every example has its own pool")
        for t in s.tenants {
            XCTAssertTrue(t.identity.admits(uid: 0, gid: 0), "\(t.name) admits root, for the demo and the tests")
        }
        let alpha = try XCTUnwrap(s["alpha"])
        XCTAssertEqual(alpha.operations, .all)
        XCTAssertEqual(alpha.memoryAccess, [.localWrite, .remoteWrite, .remoteRead, .remoteAtomic, .relaxedOrdering])
        XCTAssertEqual(alpha.peers, [PeerRule(tenant: "alpha", operations: .all)])
        let beta = try XCTUnwrap(s["beta"])
        XCTAssertEqual(beta.operations, [.send, .sendWithImm])
        XCTAssertEqual(beta.memoryAccess, [.localWrite])
        XCTAssertEqual(beta.peers.map(\.tenant), ["beta"])
        XCTAssertNotNil(beta.quotas.queuePairs)
        let engine = PolicyEngine(s)
        XCTAssertEqual(engine.connectionOperations(from: "gamma", to: "delta"), [.send])
        XCTAssertEqual(engine.connectionOperations(from: "delta", to: "gamma"), [.send])
        XCTAssertEqual(engine.connectionOperations(from: "gamma", to: "gamma"), [.send, .write])
        XCTAssertEqual(engine.connectionOperations(from: "alpha", to: "beta"), [])
    }
}
