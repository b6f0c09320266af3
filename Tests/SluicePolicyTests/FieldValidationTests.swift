import XCTest
@testable import SluicePolicy

/// One test per field: the exact text of each error, line and column included.
final class FieldValidationTests: XCTestCase {
    func testTheValidBaseLoads() throws {
        let p = try PolicySet.parseFile(validPolicy, file: "t.yaml")
        XCTAssertEqual(p.name, "alpha")
        XCTAssertEqual(p.identity, Identity(uids: [0, 1000], gids: [2000]))
        XCTAssertEqual(p.source, "t.yaml")
        // Defaults for everything left out.
        XCTAssertNil(p.addressPool)
        XCTAssertEqual(p.quotas, Quotas())
        XCTAssertEqual(p.memoryAccess, [.localWrite])
        XCTAssertEqual(p.operations, [])
        XCTAssertEqual(p.peers, [])
        XCTAssertEqual(p.rateLimits, RateLimits())
    }

    // MARK: document, apiVersion, kind, metadata

    func testApiVersionAndKind() {
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "sluice/v1", with: "sluice/v9")),
                       [#"t.yaml:1:13: apiVersion: Unsupported value: "sluice/v9": supported values: "sluice/v1""#])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "kind: TenantPolicy", with: "kind: Tenant")),
                       [#"t.yaml:2:7: kind: Unsupported value: "Tenant": supported values: "TenantPolicy""#])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "kind: TenantPolicy\n", with: "")),
                       ["t.yaml:1:1: kind: Required value"])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "apiVersion: sluice/v1", with: "apiVersion: 1")),
                       ["t.yaml:1:13: apiVersion: Invalid type: expected a string, got an integer"])
    }

    func testTheDocumentMustBeAMapping() {
        XCTAssertEqual(headlines("- alpha\n"), ["t.yaml:1:1: Invalid type: expected a mapping, got a list"])
        XCTAssertEqual(headlines("just words\n"), ["t.yaml:1:1: Invalid type: expected a mapping, got a string"])
        XCTAssertEqual(headlines(""), ["t.yaml: Required value: the file holds no YAML document; expected a TenantPolicy"])
        XCTAssertEqual(headlines("# only a comment\n"), ["t.yaml: Required value: the file holds no YAML document; expected a TenantPolicy"])
    }

    func testUnknownFieldsAreErrorsAtEveryLevel() {
        XCTAssertEqual(headlines(validPolicy + "status: {}\n"),
                       ["t.yaml:9:1: status: Unknown field: supported fields here: apiVersion, kind, metadata, spec"])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "  name: alpha", with: "  name: alpha\n  labels: {}")),
                       ["t.yaml:5:3: metadata.labels: Unknown field: supported fields here: name"])
        XCTAssertEqual(headlines(policy("  colour: red")),
                       ["t.yaml:9:3: spec.colour: Unknown field: supported fields here: addressPool, identity, keyGuessing, memoryAccess, operations, peers, quotas, rateLimits"])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "    gids: [2000]", with: "    gids: [2000]\n    colour: red")),
                       ["t.yaml:9:5: spec.identity.colour: Unknown field: supported fields here: gids, uids"])
    }

    func testMetadataName() {
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "name: alpha", with: "name: Alpha_1")),
                       [#"t.yaml:4:9: metadata.name: Invalid value: "Alpha_1": must be a DNS label (lower-case letters, digits and '-', at most 63)"#])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "name: alpha", with: "name: -alpha")),
                       [#"t.yaml:4:9: metadata.name: Invalid value: "-alpha": must be a DNS label (lower-case letters, digits and '-', at most 63)"#])
        let long = String(repeating: "a", count: 64)
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "name: alpha", with: "name: \(long)")),
                       [#"t.yaml:4:9: metadata.name: Invalid value: "\#(long)": must be a DNS label (lower-case letters, digits and '-', at most 63)"#])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "name: alpha", with: "name: 123")),
                       ["t.yaml:4:9: metadata.name: Invalid type: expected a string, got an integer"])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "metadata:\n  name: alpha\n", with: "metadata: alpha\n")),
                       ["t.yaml:3:11: metadata: Invalid type: expected a mapping, got a string"])
        XCTAssertEqual(headlines(validPolicy.replacingOccurrences(of: "metadata:\n  name: alpha\n", with: "")),
                       ["t.yaml:1:1: metadata: Required value"])
        // Quoting makes a numeric-looking name a string, and a valid label.
        XCTAssertEqual(try PolicySet.parseFile(validPolicy.replacingOccurrences(of: "name: alpha", with: "name: \"123\""),
                                               file: "t.yaml").name, "123")
    }

    // MARK: spec.identity

    func testIdentity() {
        func with(_ ids: String) -> [String] {
            headlines(validPolicy.replacingOccurrences(of: "uids: [0, 1000]", with: ids))
        }
        XCTAssertEqual(with("uids: [0, -3]"), ["t.yaml:7:15: spec.identity.uids[1]: Invalid value: -3: must be >= 0"])
        XCTAssertEqual(with("uids: [4294967296]"),
                       ["t.yaml:7:12: spec.identity.uids[0]: Invalid value: 4294967296: must be <= 4294967295"])
        XCTAssertEqual(with("uids: [99999999999999999999]"),
                       ["t.yaml:7:12: spec.identity.uids[0]: Invalid value: 99999999999999999999: must be <= 4294967295"])
        XCTAssertEqual(with("uids: root"), ["t.yaml:7:11: spec.identity.uids: Invalid type: expected a list of numeric ids, got a string"])
        XCTAssertEqual(with(#"uids: ["0"]"#), ["t.yaml:7:12: spec.identity.uids[0]: Invalid type: expected an integer, got a string"])
        XCTAssertEqual(with("uids: [root]"), [#"t.yaml:7:12: spec.identity.uids[0]: Invalid value: "root": must be an integer"#])
        XCTAssertEqual(with("uids: [0, 0]"), ["t.yaml:7:15: spec.identity.uids[1]: Duplicate value: 0"])
        XCTAssertEqual(with("uids: [true]"), ["t.yaml:7:12: spec.identity.uids[0]: Invalid type: expected an integer, got a boolean"])

        let empty = validPolicy.replacingOccurrences(of: "    uids: [0, 1000]\n    gids: [2000]\n", with: "    uids: []\n")
        XCTAssertEqual(headlines(empty), ["t.yaml:7:5: spec.identity: Required value: at least one uid or gid must be admitted"])
        let flowEmpty = validPolicy.replacingOccurrences(of: "  identity:\n    uids: [0, 1000]\n    gids: [2000]\n", with: "  identity: {}\n")
        XCTAssertEqual(headlines(flowEmpty), ["t.yaml:6:13: spec.identity: Required value: at least one uid or gid must be admitted"])
        let missing = validPolicy.replacingOccurrences(of: "  identity:\n    uids: [0, 1000]\n    gids: [2000]\n", with: "  operations: [send]\n")
        XCTAssertEqual(headlines(missing), ["t.yaml:6:3: spec.identity: Required value"])
        // gids alone are enough.
        let gidsOnly = validPolicy.replacingOccurrences(of: "    uids: [0, 1000]\n", with: "")
        XCTAssertEqual(try PolicySet.parseFile(gidsOnly, file: "t.yaml").identity, Identity(uids: [], gids: [2000]))
    }

    // MARK: spec.addressPool

    func testAddressPool() throws {
        XCTAssertEqual(try PolicySet.parseFile(policy("  addressPool: 10.77.1.0/24"), file: "t.yaml").addressPool?.description,
                       "10.77.1.0/24")
        XCTAssertEqual(try PolicySet.parseFile(policy(#"  addressPool: "10.77.0.0/16""#), file: "t.yaml").addressPool?.description,
                       "10.77.0.0/16")
        let cases: [(String, String)] = [
            ("10.77.1.5/24", #"t.yaml:9:16: spec.addressPool: Invalid value: "10.77.1.5/24": host bits are set; the block is 10.77.1.0/24"#),
            ("10.77.1.0", #"t.yaml:9:16: spec.addressPool: Invalid value: "10.77.1.0": must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"#),
            ("10.77.1.0/31", #"t.yaml:9:16: spec.addressPool: Invalid value: "10.77.1.0/31": the prefix length must be from 8 to 30"#),
            ("10.0.0.0/7", #"t.yaml:9:16: spec.addressPool: Invalid value: "10.0.0.0/7": the prefix length must be from 8 to 30"#),
            ("10.77.1.0/33", #"t.yaml:9:16: spec.addressPool: Invalid value: "10.77.1.0/33": must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"#),
            ("300.1.1.0/24", #"t.yaml:9:16: spec.addressPool: Invalid value: "300.1.1.0/24": must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"#),
            ("010.1.1.0/24", #"t.yaml:9:16: spec.addressPool: Invalid value: "010.1.1.0/24": must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"#),
            ("fd00::/64", #"t.yaml:9:16: spec.addressPool: Invalid value: "fd00::/64": must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"#),
            ("127.0.0.0/24", #"t.yaml:9:16: spec.addressPool: Invalid value: "127.0.0.0/24": overlaps 127.0.0.0/8 (loopback)"#),
            ("224.0.0.0/8", #"t.yaml:9:16: spec.addressPool: Invalid value: "224.0.0.0/8": overlaps 224.0.0.0/4 (multicast)"#),
            ("[10.0.0.0/8]", "t.yaml:9:16: spec.addressPool: Invalid type: expected a string, got a list"),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(headlines(policy("  addressPool: \(value)")), [expected], value)
        }
    }

    // MARK: spec.quotas

    static let countQuotas = ["protectionDomains", "memoryRegions", "completionQueues", "completionQueueDepth",
                              "queuePairs", "sendQueueDepth", "receiveQueueDepth", "sgesPerRequest"]
    static let byteQuotas = ["registeredBytes", "largestRegionBytes", "inlineBytes"]

    func testEveryCountQuotaTakesANonNegativeInteger() throws {
        for field in Self.countQuotas {
            let col = 4 + field.count + 3
            let text = { (v: String) in policy("  quotas:\n    \(field): \(v)") }
            XCTAssertEqual(headlines(text("-1")), ["t.yaml:10:\(col): spec.quotas.\(field): Invalid value: -1: must be >= 0"])
            XCTAssertEqual(headlines(text("2147483648")),
                           ["t.yaml:10:\(col): spec.quotas.\(field): Invalid value: 2147483648: must be <= 2147483647"])
            XCTAssertEqual(headlines(text("4K")), [#"t.yaml:10:\#(col): spec.quotas.\#(field): Invalid value: "4K": must be an integer"#])
            XCTAssertEqual(headlines(text("1.5")), [#"t.yaml:10:\#(col): spec.quotas.\#(field): Invalid value: "1.5": must be an integer"#])
            XCTAssertEqual(headlines(text(#""4""#)), ["t.yaml:10:\(col): spec.quotas.\(field): Invalid type: expected an integer, got a string"])
            XCTAssertEqual(headlines(text("")), ["t.yaml:10:\(col - 1): spec.quotas.\(field): Invalid type: expected an integer, got null"])
            XCTAssertEqual(headlines(text("[1]")), ["t.yaml:10:\(col): spec.quotas.\(field): Invalid type: expected an integer, got a list"])
            XCTAssertEqual(headlines(text("0")), [])
            XCTAssertEqual(headlines(text("2147483647")), [])
        }
        let q = try PolicySet.parseFile(policy("""
              quotas:
                protectionDomains: 1
                memoryRegions: 2
                completionQueues: 3
                completionQueueDepth: 4
                queuePairs: 5
                sendQueueDepth: 6
                receiveQueueDepth: 7
                sgesPerRequest: 8
            """), file: "t.yaml").quotas
        XCTAssertEqual(q, Quotas(protectionDomains: 1, memoryRegions: 2, completionQueues: 3, completionQueueDepth: 4,
                                 queuePairs: 5, sendQueueDepth: 6, receiveQueueDepth: 7, sgesPerRequest: 8))
    }

    func testByteQuotasTakeSizes() throws {
        let q = try PolicySet.parseFile(policy("""
              quotas:
                registeredBytes: 4Gi
                largestRegionBytes: "256Mi"
                inlineBytes: 4096
            """), file: "t.yaml").quotas
        XCTAssertEqual(q.registeredBytes, 4 << 30)
        XCTAssertEqual(q.largestRegionBytes, 256 << 20)
        XCTAssertEqual(q.inlineBytes, 4096)
        for field in Self.byteQuotas {
            let col = 4 + field.count + 3
            let text = { (v: String) in policy("  quotas:\n    \(field): \(v)") }
            XCTAssertEqual(headlines(text("-1")), ["t.yaml:10:\(col): spec.quotas.\(field): Invalid value: -1: must be >= 0"])
            XCTAssertEqual(headlines(text("4GB")),
                           [#"t.yaml:10:\#(col): spec.quotas.\#(field): Invalid value: "4GB": must be a size: a whole number of bytes, optionally with a binary suffix (Ki, Mi, Gi, Ti, Pi, Ei) or a decimal one (K, M, G, T, P, E), e.g. 4096, 256Mi, 4Gi"#])
            XCTAssertEqual(headlines(text("{}")), ["t.yaml:10:\(col): spec.quotas.\(field): Invalid type: expected a size, got a mapping"])
        }
        XCTAssertEqual(headlines(policy("  quotas:\n    inlineBytes: 4Gi")),
                       [#"t.yaml:10:18: spec.quotas.inlineBytes: Invalid value: "4Gi": must be <= 4294967295 bytes"#])
        XCTAssertEqual(headlines(policy("  quotas:\n    registeredBytes: 16Ei")),
                       [#"t.yaml:10:22: spec.quotas.registeredBytes: Invalid value: "16Ei": must be <= 18446744073709551615 bytes"#])
        XCTAssertEqual(headlines(policy("  quotas:\n    registeredBytes: 1Gi\n    largestRegionBytes: 2Gi")),
                       [#"t.yaml:11:25: spec.quotas.largestRegionBytes: Invalid value: "2Gi": must be <= quotas.registeredBytes (1 GiB)"#])
    }

    func testQuotasSection() {
        XCTAssertEqual(headlines(policy("  quotas: [queuePairs]")), ["t.yaml:9:11: spec.quotas: Invalid type: expected a mapping, got a list"])
        XCTAssertEqual(headlines(policy("  quotas:")), ["t.yaml:9:10: spec.quotas: Invalid type: expected a mapping, got null"])
        XCTAssertEqual(headlines(policy("  quotas:\n    queuePair: 4")),
                       ["t.yaml:10:5: spec.quotas.queuePair: Unknown field: supported fields here: completionQueueDepth, completionQueues, inlineBytes, largestRegionBytes, memoryRegions, protectionDomains, queuePairs, receiveQueueDepth, registeredBytes, sendQueueDepth, sgesPerRequest"])
    }

    // MARK: spec.memoryAccess and spec.operations

    func testMemoryAccess() throws {
        XCTAssertEqual(try PolicySet.parseFile(policy("  memoryAccess: [localWrite, remoteRead, relaxedOrdering]"), file: "t.yaml").memoryAccess,
                       [.localWrite, .remoteRead, .relaxedOrdering])
        XCTAssertEqual(try PolicySet.parseFile(policy("  memoryAccess: []"), file: "t.yaml").memoryAccess, [])
        XCTAssertEqual(headlines(policy("  memoryAccess: [localWrite, remoteExec]")),
                       [#"t.yaml:9:30: spec.memoryAccess[1]: Unsupported value: "remoteExec": supported values: "localWrite", "remoteWrite", "remoteRead", "remoteAtomic", "relaxedOrdering""#])
        XCTAssertEqual(headlines(policy("  memoryAccess: [localWrite, localWrite]")),
                       [#"t.yaml:9:30: spec.memoryAccess[1]: Duplicate value: "localWrite""#])
        XCTAssertEqual(headlines(policy("  memoryAccess: localWrite")),
                       ["t.yaml:9:17: spec.memoryAccess: Invalid type: expected a list of access flags, got a string"])
        XCTAssertEqual(headlines(policy("  memoryAccess: [1]")),
                       ["t.yaml:9:18: spec.memoryAccess[0]: Invalid type: expected a string, got an integer"])
        XCTAssertEqual(headlines(policy("  memoryAccess: [remoteWrite, remoteRead]")),
                       ["t.yaml:9:17: spec.memoryAccess: Invalid value: [remoteWrite, remoteRead]: remoteWrite needs localWrite (libibverbs refuses remoteWrite without it)"])
        XCTAssertEqual(headlines(policy("  memoryAccess: [remoteAtomic]")),
                       ["t.yaml:9:17: spec.memoryAccess: Invalid value: [remoteAtomic]: remoteAtomic needs localWrite (libibverbs refuses remoteAtomic without it)"])
    }

    func testOperations() throws {
        XCTAssertEqual(try PolicySet.parseFile(policy("  operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]"),
                                               file: "t.yaml").operations, .all)
        XCTAssertEqual(try PolicySet.parseFile(policy("  operations: []"), file: "t.yaml").operations, [])
        XCTAssertEqual(headlines(policy("  operations: [send, atomicWrite]")),
                       [#"t.yaml:9:22: spec.operations[1]: Unsupported value: "atomicWrite": supported values: "send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd""#])
        XCTAssertEqual(headlines(policy("  operations: [send, send]")), [#"t.yaml:9:22: spec.operations[1]: Duplicate value: "send""#])
        XCTAssertEqual(headlines(policy("  operations: {send: true}")),
                       ["t.yaml:9:15: spec.operations: Invalid type: expected a list of operations, got a mapping"])
    }

    // MARK: spec.peers

    func testPeers() throws {
        let p = try PolicySet.parseFile(policy("""
              peers:
                - tenant: alpha
                  operations: [send, write]
                - {tenant: beta, operations: [read]}
            """), file: "t.yaml")
        XCTAssertEqual(p.peers, [PeerRule(tenant: "alpha", operations: [.send, .write]), PeerRule(tenant: "beta", operations: [.read])])
        XCTAssertEqual(p.peer("beta")?.operations, [.read])
        XCTAssertNil(p.peer("gamma"))

        XCTAssertEqual(headlines(policy("  peers: alpha")), ["t.yaml:9:10: spec.peers: Invalid type: expected a list of peer entries, got a string"])
        XCTAssertEqual(headlines(policy("  peers: [alpha]")), ["t.yaml:9:11: spec.peers[0]: Invalid type: expected a mapping, got a string"])
        XCTAssertEqual(headlines(policy("  peers:\n    - operations: [send]")), ["t.yaml:10:7: spec.peers[0].tenant: Required value"])
        XCTAssertEqual(headlines(policy("  peers:\n    - tenant: beta")), ["t.yaml:10:7: spec.peers[0].operations: Required value"])
        XCTAssertEqual(headlines(policy("  peers:\n    - {tenant: beta, operations: []}")),
                       ["t.yaml:10:34: spec.peers[0].operations: Invalid value: []: must list at least one operation; remove the entry to refuse the peer"])
        XCTAssertEqual(headlines(policy("  peers:\n    - {tenant: beta, operations: [send]}\n    - {tenant: beta, operations: [write]}")),
                       [#"t.yaml:11:16: spec.peers[1].tenant: Duplicate value: "beta": one entry per peer tenant"#])
        XCTAssertEqual(headlines(policy("  peers:\n    - {tenant: Beta, operations: [send]}")),
                       [#"t.yaml:10:16: spec.peers[0].tenant: Invalid value: "Beta": must be a DNS label (lower-case letters, digits and '-', at most 63)"#])
        XCTAssertEqual(headlines(policy("  peers:\n    - {tenant: beta, ops: [send]}")),
                       ["t.yaml:10:7: spec.peers[0].operations: Required value",
                        "t.yaml:10:22: spec.peers[0].ops: Unknown field: supported fields here: operations, tenant"])
        XCTAssertEqual(headlines(policy("  peers:\n    - {tenant: beta, operations: [teleport]}")),
                       [#"t.yaml:10:35: spec.peers[0].operations[0]: Unsupported value: "teleport": supported values: "send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd""#])
    }

    // MARK: spec.rateLimits

    func testRateLimitsParse() throws {
        let r = try PolicySet.parseFile(policy("""
              rateLimits:
                tenant: {bandwidth: 10Gbit/s, operations: 2M/s, burstBytes: 4Mi, burstOperations: 1000}
                queuePair: {bandwidth: 512MiB/s, operations: 500K/s}
            """), file: "t.yaml").rateLimits
        XCTAssertEqual(r.tenant, RateLimit(bandwidth: 1_250_000_000, operations: 2_000_000, burstBytes: 4 << 20, burstOperations: 1000))
        XCTAssertEqual(r.queuePair, RateLimit(bandwidth: 512 << 20, operations: 500_000))
        XCTAssertEqual(r.queuePair?.burstBytesOrDefault, (512 << 20) / 10)
        XCTAssertEqual(r.queuePair?.burstOperationsOrDefault, 50_000)
        XCTAssertEqual(r.tenant?.burstBytesOrDefault, 4 << 20)
        XCTAssertEqual(RateLimit(operations: 5).burstOperationsOrDefault, 1)
        XCTAssertNil(RateLimit(operations: 5).burstBytesOrDefault)
    }

    func testRateLimitErrors() {
        func limit(_ body: String) -> [String] { headlines(policy("  rateLimits:\n    tenant: \(body)")) }
        XCTAssertEqual(limit("{bandwidth: 10Gbps}"),
                       [#"t.yaml:10:25: spec.rateLimits.tenant.bandwidth: Invalid value: "10Gbps": must be a bandwidth: a whole number with an optional K, M, G, T (decimal) or Ki, Mi, Gi, Ti (binary) prefix and a unit of bit/s or B/s, e.g. 10Gbit/s, 100Mbit/s, 1GB/s, 512MiB/s"#])
        XCTAssertEqual(limit("{bandwidth: 1000000}"),
                       [#"t.yaml:10:25: spec.rateLimits.tenant.bandwidth: Invalid value: 1000000: must be a bandwidth: a whole number with an optional K, M, G, T (decimal) or Ki, Mi, Gi, Ti (binary) prefix and a unit of bit/s or B/s, e.g. 10Gbit/s, 100Mbit/s, 1GB/s, 512MiB/s"#])
        XCTAssertEqual(limit("{bandwidth: 0Gbit/s}"),
                       [#"t.yaml:10:25: spec.rateLimits.tenant.bandwidth: Invalid value: "0Gbit/s": must be > 0; omit the field for no limit"#])
        XCTAssertEqual(limit("{bandwidth: 1001bit/s}"),
                       [#"t.yaml:10:25: spec.rateLimits.tenant.bandwidth: Invalid value: "1001bit/s": must be a whole number of bytes per second (a multiple of 8 bits)"#])
        XCTAssertEqual(limit("{bandwidth: -5Gbit/s}"),
                       [#"t.yaml:10:25: spec.rateLimits.tenant.bandwidth: Invalid value: "-5Gbit/s": must be >= 0"#])
        XCTAssertEqual(limit("{operations: 2M}"),
                       [#"t.yaml:10:26: spec.rateLimits.tenant.operations: Invalid value: "2M": must be an operation rate: a whole number of operations with an optional K, M or G (decimal) prefix and /s, e.g. 1000/s, 500K/s, 2M/s"#])
        XCTAssertEqual(limit("{operations: 2Mi/s}"),
                       [#"t.yaml:10:26: spec.rateLimits.tenant.operations: Invalid value: "2Mi/s": must be an operation rate: a whole number of operations with an optional K, M or G (decimal) prefix and /s, e.g. 1000/s, 500K/s, 2M/s"#])
        XCTAssertEqual(limit("{operations: 99999999999G/s}"),
                       [#"t.yaml:10:26: spec.rateLimits.tenant.operations: Invalid value: "99999999999G/s": too large: must be < 2^64 operations per second"#])
        XCTAssertEqual(limit("{}"), ["t.yaml:10:13: spec.rateLimits.tenant: Required value: at least one of bandwidth, operations"])
        XCTAssertEqual(limit("{operations: 1K/s, burstBytes: 1Mi}"),
                       ["t.yaml:10:32: spec.rateLimits.tenant.burstBytes: Forbidden: needs bandwidth to be set"])
        XCTAssertEqual(limit("{bandwidth: 1GB/s, burstOperations: 10}"),
                       ["t.yaml:10:32: spec.rateLimits.tenant.burstOperations: Forbidden: needs operations to be set"])
        XCTAssertEqual(limit("{bandwidth: 1GB/s, burstBytes: 0}"),
                       ["t.yaml:10:44: spec.rateLimits.tenant.burstBytes: Invalid value: 0: must be > 0"])
        XCTAssertEqual(limit("{operations: 1K/s, burstOperations: 0}"),
                       ["t.yaml:10:49: spec.rateLimits.tenant.burstOperations: Invalid value: 0: must be > 0"])
        XCTAssertEqual(limit("{bandwidth: 1GB/s, perQP: 1}"),
                       ["t.yaml:10:32: spec.rateLimits.tenant.perQP: Unknown field: supported fields here: bandwidth, burstBytes, burstOperations, operations"])
        XCTAssertEqual(headlines(policy("  rateLimits:\n    qp: {bandwidth: 1GB/s}")),
                       ["t.yaml:10:5: spec.rateLimits.qp: Unknown field: supported fields here: controlVerbs, minimumRequestBytes, queuePair, tenant, weight"])
    }

    // MARK: YAML-level problems

    func testRepeatedKeysAreReportedWhereTheyRepeat() {
        XCTAssertEqual(headlines(policy("  quotas:\n    queuePairs: 4\n    memoryRegions: 8\n    queuePairs: 5")),
                       [#"t.yaml:12:5: spec.quotas.queuePairs: Duplicate value: "queuePairs": already set at line 10"#])
        XCTAssertEqual(headlines(validPolicy + "spec:\n  identity: {uids: [1]}\n"),
                       [#"t.yaml:9:1: spec: Duplicate value: "spec": already set at line 5"#])
        XCTAssertEqual(headlines(policy("  quotas: {queuePairs: 1, queuePairs: 2, queuePairs: 3}")),
                       [#"t.yaml:9:27: spec.quotas.queuePairs: Duplicate value: "queuePairs": already set at line 9"#,
                        #"t.yaml:9:42: spec.quotas.queuePairs: Duplicate value: "queuePairs": already set at line 9"#])
        // A quoted repetition is the same key.
        XCTAssertEqual(headlines(policy("  quotas:\n    queuePairs: 4\n    \"queuePairs\": 5")),
                       [#"t.yaml:11:5: spec.quotas.queuePairs: Duplicate value: "queuePairs": already set at line 10"#])
        // Two keys that YAML types differently but read the same.
        XCTAssertEqual(headlines(policy("  quotas:\n    1: 4\n    \"1\": 5")),
                       ["t.yaml:10:5: spec.quotas.1: Unknown field: supported fields here: completionQueueDepth, completionQueues, inlineBytes, largestRegionBytes, memoryRegions, protectionDomains, queuePairs, receiveQueueDepth, registeredBytes, sendQueueDepth, sgesPerRequest",
                        #"t.yaml:11:5: spec.quotas.1: Duplicate value: "1": already set at line 10"#])
    }

    func testRepeatedKeysYamsCannotHandBackAreStillReported() {
        // An anchored or complex key cannot be renamed in place, so Yams'
        // own finding is reported, at the first occurrence.
        XCTAssertEqual(errors(policy("  quotas:\n    &k queuePairs: 1\n    queuePairs: 2")), [#"""
            t.yaml:10:5: Duplicate value: "queuePairs": the key appears more than once in its mapping
                    &k queuePairs: 1
                    ^
            """#])
        XCTAssertEqual(headlines(policy("  quotas:\n    ? [a]\n    : 1\n    ? [a]\n    : 2")),
                       ["t.yaml:10:7: Duplicate value: a key appears more than once in its mapping"])
    }

    func testSyntaxErrorsNameTheirPlace() {
        XCTAssertEqual(headlines("apiVersion: sluice/v1\nkind: [TenantPolicy\n"),
                       ["t.yaml:3:1: Invalid YAML: while parsing a flow sequence, did not find expected ',' or ']'"])
        XCTAssertEqual(headlines("apiVersion: sluice/v1\n  kind: TenantPolicy\n"),
                       ["t.yaml:2:7: Invalid YAML: mapping values are not allowed in this context"])
        XCTAssertEqual(headlines(validPolicy + "---\n" + validPolicy),
                       ["t.yaml:9:1: Invalid YAML: expected a single document in the stream, but found another document"])
        XCTAssertEqual(headlines(policy("\tquotas: {}")),
                       ["t.yaml:9:1: Invalid YAML: while scanning for the next token, found character that cannot start any token"])
    }

    func testAllErrorsOfAFileAreReportedInReadingOrder() {
        let text = policy("""
              colour: red
              quotas:
                queuePairs: -1
                memoryRegions: lots
              operations: [send, beam]
            """).replacingOccurrences(of: "name: alpha", with: "name: Alpha")
        XCTAssertEqual(headlines(text), [
            #"t.yaml:4:9: metadata.name: Invalid value: "Alpha": must be a DNS label (lower-case letters, digits and '-', at most 63)"#,
            "t.yaml:9:3: spec.colour: Unknown field: supported fields here: addressPool, identity, keyGuessing, memoryAccess, operations, peers, quotas, rateLimits",
            "t.yaml:11:17: spec.quotas.queuePairs: Invalid value: -1: must be >= 0",
            #"t.yaml:12:20: spec.quotas.memoryRegions: Invalid value: "lots": must be an integer"#,
            #"t.yaml:13:22: spec.operations[1]: Unsupported value: "beam": supported values: "send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd""#,
        ])
    }

    func testAnchorsAndAliasesAreFollowed() throws {
        let p = try PolicySet.parseFile(policy("""
              operations: &ops [send, write]
              peers:
                - {tenant: alpha, operations: *ops}
            """), file: "t.yaml")
        XCTAssertEqual(p.peer("alpha")?.operations, [.send, .write])
    }
}
