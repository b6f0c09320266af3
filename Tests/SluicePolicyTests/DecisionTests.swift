import Glibc
import XCTest
@testable import SluicePolicy

/// Every decision: the rule that decided, the reason and the errno.
final class DecisionTests: XCTestCase {
    var engine: PolicyEngine!

    override func setUpWithError() throws {
        let limited = tenant("limited", operations: "[send, write]", peers: [("limited", "[send, write]")], extra: """
              memoryAccess: [localWrite, remoteRead]
              quotas:
                protectionDomains: 2
                memoryRegions: 3
                registeredBytes: 1Gi
                largestRegionBytes: 256Mi
                completionQueues: 2
                completionQueueDepth: 1024
                queuePairs: 2
                sendQueueDepth: 256
                receiveQueueDepth: 512
                sgesPerRequest: 2
                inlineBytes: 64

            """)
        let zero = tenant("zero", extra: """
              quotas: {protectionDomains: 0, memoryRegions: 0, completionQueues: 0, queuePairs: 0}

            """)
        engine = PolicyEngine(try set([
            "limited.yaml": limited,
            "open.yaml": tenant("open", operations: "[send]"),
            "zero.yaml": zero,
            // a and b consent to each other; c lists a, but a does not list c.
            "a.yaml": tenant("a", operations: "[send, write, read]",
                             peers: [("a", "[send]"), ("b", "[send, write]"), ("d", "[read]"), ("e", "[write]")]),
            "b.yaml": tenant("b", operations: "[send, write]", peers: [("a", "[send, read]")]),
            "c.yaml": tenant("c", operations: "[send]", peers: [("a", "[send]")]),
            "d.yaml": tenant("d", operations: "[send]", peers: [("a", "[send]")]),
            "e.yaml": tenant("e", operations: "[send]", peers: [("a", "[send]")]),
        ]))
    }

    func d(_ decision: Decision) -> String { decision.description }

    // MARK: identity

    func testUnknownTenantsAreDeniedByIdentity() {
        let expected = #"deny (rule: identity): no tenant named "ghost" is defined (EACCES)"#
        XCTAssertEqual(d(engine.allocPD(tenant: "ghost", current: 0)), expected)
        XCTAssertEqual(d(engine.regMR(tenant: "ghost", bytes: 1, access: 0, currentCount: 0, currentBytes: 0)), expected)
        XCTAssertEqual(d(engine.createCQ(tenant: "ghost", depth: 1, current: 0)), expected)
        XCTAssertEqual(d(engine.createQP(tenant: "ghost", sendDepth: 1, recvDepth: 1, sendSGE: 1, recvSGE: 1, inlineBytes: 0, current: 0)), expected)
        XCTAssertEqual(d(engine.connect(from: "ghost", to: "open")), expected)
        XCTAssertEqual(d(engine.admit(tenant: "ghost", uid: 0, gid: 0)), expected)
        XCTAssertEqual(engine.connectionOperations(from: "ghost", to: "open"), [])
    }

    func testAdmission() {
        let s = try! set(["x.yaml": validPolicy])
        let e = PolicyEngine(s)
        XCTAssertEqual(e.admit(tenant: "alpha", uid: 1000, gid: 5), .allow(rule: "identity.uids"))
        XCTAssertEqual(e.admit(tenant: "alpha", uid: 5, gid: 2000), .allow(rule: "identity.gids"))
        XCTAssertEqual(d(e.admit(tenant: "alpha", uid: 5, gid: 6)),
                       "deny (rule: identity): uid 5 and gid 6 are not admitted by alpha's identity (uids [0, 1000], gids [2000]) (EACCES)")
    }

    // MARK: quotas

    func testProtectionDomains() {
        XCTAssertEqual(engine.allocPD(tenant: "limited", current: 1), .allow(rule: "quotas.protectionDomains"))
        XCTAssertEqual(d(engine.allocPD(tenant: "limited", current: 2)),
                       "deny (rule: quotas.protectionDomains): limited already holds 2 protection domains, the most quotas.protectionDomains allows (2) (ENOMEM)")
        XCTAssertEqual(d(engine.allocPD(tenant: "limited", current: 5)),
                       "deny (rule: quotas.protectionDomains): limited already holds 5 protection domains, more than quotas.protectionDomains allows (2) (ENOMEM)")
        XCTAssertEqual(d(engine.allocPD(tenant: "zero", current: 0)),
                       "deny (rule: quotas.protectionDomains): quotas.protectionDomains is 0: zero may not hold any protection domains (ENOMEM)")
        XCTAssertEqual(engine.allocPD(tenant: "open", current: 1_000_000), .allow(rule: "quotas.protectionDomains"))
    }

    func testMemoryRegionCountAndBytes() {
        func reg(_ bytes: UInt64, count: Int = 0, total: UInt64 = 0, tenant: String = "limited") -> String {
            d(engine.regMR(tenant: tenant, bytes: bytes, access: 1, currentCount: count, currentBytes: total))
        }
        XCTAssertEqual(reg(256 << 20, count: 2, total: 768 << 20), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(1 << 30),
                       "deny (rule: quotas.largestRegionBytes): region of 1 GiB exceeds quotas.largestRegionBytes (256 MiB) (ENOMEM)")
        XCTAssertEqual(reg((256 << 20) + 1),
                       "deny (rule: quotas.largestRegionBytes): region of 268435457 bytes exceeds quotas.largestRegionBytes (256 MiB) (ENOMEM)")
        XCTAssertEqual(reg(4096, count: 3),
                       "deny (rule: quotas.memoryRegions): limited already holds 3 memory regions, the most quotas.memoryRegions allows (3) (ENOMEM)")
        XCTAssertEqual(reg(256 << 20, count: 2, total: (768 << 20) + 1),
                       "deny (rule: quotas.registeredBytes): limited has 805306369 bytes registered; 256 MiB more would exceed quotas.registeredBytes (1 GiB) (ENOMEM)")
        // Usage the router reports is added without wrapping.
        XCTAssertEqual(reg(4096, total: .max),
                       "deny (rule: quotas.registeredBytes): limited has 18446744073709551615 bytes registered; 4 KiB more would exceed quotas.registeredBytes (1 GiB) (ENOMEM)")
        XCTAssertEqual(reg(.max, tenant: "open"), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(1, tenant: "zero"),
                       "deny (rule: quotas.memoryRegions): quotas.memoryRegions is 0: zero may not hold any memory regions (ENOMEM)")
    }

    func testMemoryAccessFlags() {
        func reg(_ access: UInt32, tenant: String = "limited") -> String {
            d(engine.regMR(tenant: tenant, bytes: 4096, access: access, currentCount: 0, currentBytes: 0))
        }
        let local: UInt32 = 1, remoteWrite: UInt32 = 2, remoteRead: UInt32 = 4, remoteAtomic: UInt32 = 8
        XCTAssertEqual(reg(local | remoteRead), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(0), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(local | remoteWrite),
                       "deny (rule: memoryAccess): access remoteWrite is not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
        XCTAssertEqual(reg(local | remoteWrite | remoteAtomic),
                       "deny (rule: memoryAccess): access flags remoteWrite, remoteAtomic are not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
        // Flags that policies do not name are refused, and named.
        XCTAssertEqual(reg(local | 1 << 4 | 1 << 6),
                       "deny (rule: memoryAccess): access flags mwBind, onDemand are not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
        XCTAssertEqual(reg(1 << 12),
                       "deny (rule: memoryAccess): access 0x1000 is not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
        // IBV_ACCESS_OPTIONAL_RANGE (relaxed ordering and friends) is always tolerated.
        XCTAssertEqual(reg(local | 1 << 20 | 1 << 29), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(1 << 30),
                       "deny (rule: memoryAccess): access 0x40000000 is not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
        // The default when a policy says nothing: local writes only.
        XCTAssertEqual(reg(local, tenant: "open"), "allow (rule: quotas.memoryRegions)")
        XCTAssertEqual(reg(local | remoteRead, tenant: "open"),
                       "deny (rule: memoryAccess): access remoteRead is not allowed by memoryAccess [localWrite] (EACCES)")
        // Access is checked before size: the more fundamental refusal wins.
        XCTAssertEqual(d(engine.regMR(tenant: "limited", bytes: 1 << 40, access: remoteWrite | local, currentCount: 9, currentBytes: 0)),
                       "deny (rule: memoryAccess): access remoteWrite is not allowed by memoryAccess [localWrite, remoteRead] (EACCES)")
    }

    func testCompletionQueues() {
        XCTAssertEqual(engine.createCQ(tenant: "limited", depth: 1024, current: 1), .allow(rule: "quotas.completionQueues"))
        XCTAssertEqual(d(engine.createCQ(tenant: "limited", depth: 1025, current: 0)),
                       "deny (rule: quotas.completionQueueDepth): CQ depth 1025 exceeds quotas.completionQueueDepth (1024) (EINVAL)")
        XCTAssertEqual(d(engine.createCQ(tenant: "limited", depth: 16, current: 2)),
                       "deny (rule: quotas.completionQueues): limited already holds 2 completion queues, the most quotas.completionQueues allows (2) (ENOMEM)")
        XCTAssertEqual(engine.createCQ(tenant: "open", depth: .max, current: 1 << 40), .allow(rule: "quotas.completionQueues"))
    }

    func testQueuePairs() {
        func qp(send: UInt32 = 256, recv: UInt32 = 512, sendSGE: UInt32 = 2, recvSGE: UInt32 = 2, inline: UInt32 = 64,
                current: Int = 1, tenant: String = "limited") -> String {
            d(engine.createQP(tenant: tenant, sendDepth: send, recvDepth: recv, sendSGE: sendSGE, recvSGE: recvSGE,
                              inlineBytes: inline, current: current))
        }
        XCTAssertEqual(qp(), "allow (rule: quotas.queuePairs)")
        XCTAssertEqual(qp(send: 257), "deny (rule: quotas.sendQueueDepth): send queue depth 257 exceeds quotas.sendQueueDepth (256) (EINVAL)")
        XCTAssertEqual(qp(recv: 513),
                       "deny (rule: quotas.receiveQueueDepth): receive queue depth 513 exceeds quotas.receiveQueueDepth (512) (EINVAL)")
        XCTAssertEqual(qp(sendSGE: 3), "deny (rule: quotas.sgesPerRequest): send requests of 3 SGEs exceed quotas.sgesPerRequest (2) (EINVAL)")
        XCTAssertEqual(qp(recvSGE: 4), "deny (rule: quotas.sgesPerRequest): receive requests of 4 SGEs exceed quotas.sgesPerRequest (2) (EINVAL)")
        XCTAssertEqual(qp(inline: 65), "deny (rule: quotas.inlineBytes): inline data of 65 bytes exceeds quotas.inlineBytes (64 bytes) (EINVAL)")
        XCTAssertEqual(qp(current: 2),
                       "deny (rule: quotas.queuePairs): limited already holds 2 queue pairs, the most quotas.queuePairs allows (2) (ENOMEM)")
        XCTAssertEqual(qp(current: 0, tenant: "zero"),
                       "deny (rule: quotas.queuePairs): quotas.queuePairs is 0: zero may not hold any queue pairs (ENOMEM)")
        XCTAssertEqual(qp(send: .max, recv: .max, sendSGE: .max, recvSGE: .max, inline: .max, current: 1 << 30, tenant: "open"),
                       "allow (rule: quotas.queuePairs)")
    }

    func testDenialsCarryTheirParts() {
        guard case .deny(let rule, let reason, let errno) = engine.allocPD(tenant: "zero", current: 0) else {
            return XCTFail("expected a denial")
        }
        XCTAssertEqual(rule, "quotas.protectionDomains")
        XCTAssertEqual(errno, ENOMEM)
        XCTAssertTrue(reason.hasPrefix("quotas.protectionDomains is 0"))
        XCTAssertFalse(engine.allocPD(tenant: "zero", current: 0).isAllowed)
        XCTAssertEqual(engine.allocPD(tenant: "zero", current: 0).rule, "quotas.protectionDomains")
    }

    // MARK: peers and operations

    func testConnectionsNeedBothSidesConsent() {
        XCTAssertEqual(engine.connect(from: "a", to: "b"), .allow(rule: "peers.b"))
        XCTAssertEqual(engine.connect(from: "b", to: "a"), .allow(rule: "peers.a"))
        XCTAssertEqual(d(engine.connect(from: "c", to: "a")),
                       "deny (rule: a:peers): a does not list c under peers; traffic between tenants needs both to consent (EACCES)")
        XCTAssertEqual(d(engine.connect(from: "a", to: "c")), "deny (rule: peers): a does not list c under peers (EACCES)")
        XCTAssertEqual(d(engine.connect(from: "a", to: "nobody")), #"deny (rule: peers): no tenant named "nobody" is defined (EACCES)"#)
        XCTAssertEqual(engine.connectionOperations(from: "c", to: "a"), [])
        XCTAssertEqual(engine.connectionOperations(from: "a", to: "c"), [])
    }

    func testTrafficWithinATenantNeedsItToListItself() {
        XCTAssertEqual(engine.connect(from: "limited", to: "limited"), .allow(rule: "peers.limited"))
        XCTAssertEqual(d(engine.connect(from: "open", to: "open")),
                       "deny (rule: peers): open does not list itself under peers, so its QPs may not connect to each other (EACCES)")
        XCTAssertEqual(engine.connectionOperations(from: "limited", to: "limited"), [.send, .write])
        XCTAssertEqual(engine.connectionOperations(from: "open", to: "open"), [])
    }

    func testConnectionOperationsAreWhatAllThreeListsAllow() {
        // a may send, write, read; a lists b for [send, write]; b lists a for [send, read].
        XCTAssertEqual(engine.connectionOperations(from: "a", to: "b"), [.send])
        // b may send, write; b lists a for [send, read]; a lists b for [send, write].
        XCTAssertEqual(engine.connectionOperations(from: "b", to: "a"), [.send])
        XCTAssertEqual(engine.connectionOperations(from: "a", to: "a"), [.send])
    }

    func testAConnectionWithNoCommonOperationIsRefused() {
        // a lists d for [read], d lists a for [send]: nothing both allow.
        XCTAssertEqual(d(engine.connect(from: "a", to: "d")),
                       "deny (rule: d:peers.a): no operation both consent to: a may use [read] toward d, d allows [send] from a (EACCES)")
        // d lists a for [send] and may send, but a allows only reads from d.
        XCTAssertEqual(d(engine.connect(from: "d", to: "a")),
                       "deny (rule: a:peers.d): no operation both consent to: d may use [send] toward a, a allows [read] from d (EACCES)")
        // a consents to writes from e, but e only sends.
        XCTAssertEqual(d(engine.connect(from: "e", to: "a")),
                       "deny (rule: a:peers.e): no operation both consent to: e may use [send] toward a, a allows [write] from e (EACCES)")
        XCTAssertEqual(d(engine.connect(from: "a", to: "e")),
                       "deny (rule: e:peers.a): no operation both consent to: a may use [write] toward e, e allows [send] from a (EACCES)")
        let lonely = try! set(["x.yaml": tenant("x", operations: "[send]", peers: [("x", "[write]")])])
        XCTAssertEqual(d(PolicyEngine(lonely).connect(from: "x", to: "x")),
                       "deny (rule: operations): none of the operations x lists for x [write] is in x's operations [send] (EACCES)")
    }

    func testWorkRequestsNameTheListThatLacksTheOperation() {
        XCTAssertEqual(engine.workRequest(from: "a", to: "b", operation: .send), .allow(rule: "peers.b"))
        XCTAssertEqual(d(engine.workRequest(from: "a", to: "b", operation: .compareSwap)),
                       "deny (rule: operations): compareSwap is not in a's operations [send, write, read] (EACCES)")
        XCTAssertEqual(d(engine.workRequest(from: "a", to: "b", operation: .read)),
                       "deny (rule: peers.b): a's peers entry for b allows [send, write], not read (EACCES)")
        XCTAssertEqual(d(engine.workRequest(from: "a", to: "b", operation: .write)),
                       "deny (rule: b:peers.a): b's peers entry for a allows [send, read], not write (EACCES)")
        XCTAssertEqual(d(engine.workRequest(from: "c", to: "a", operation: .send)),
                       "deny (rule: a:peers): a does not list c under peers; traffic between tenants needs both to consent (EACCES)")
    }

    // MARK: the data-path mask

    func testWireOpcodesMapToOperations() {
        // libibverbs' enum ibv_wr_opcode.
        let expected: [(UInt32, OperationSet)] = [(0, .write), (1, .writeWithImm), (2, .send), (3, .sendWithImm), (4, .read),
                                                   (5, .compareSwap), (6, .fetchAdd)]
        for (op, set) in expected {
            XCTAssertEqual(OperationSet.wireOpcode(op), set)
        }
        // Local invalidate, bind MW, send with invalidate, TSO, driver, atomic write: never allowed.
        for op: UInt32 in [7, 8, 9, 10, 11, 15, 32, .max] {
            XCTAssertNil(OperationSet.wireOpcode(op))
            XCTAssertFalse(OperationSet.all.allowsWireOpcode(op))
        }
        let mask = engine.connectionOperations(from: "limited", to: "limited")
        XCTAssertTrue(mask.allowsWireOpcode(2))   // SEND
        XCTAssertTrue(mask.allowsWireOpcode(0))   // RDMA_WRITE
        XCTAssertFalse(mask.allowsWireOpcode(1))  // RDMA_WRITE_WITH_IMM
        XCTAssertFalse(mask.allowsWireOpcode(4))  // RDMA_READ
        XCTAssertEqual(OperationSet.all.names, ["send", "sendWithImm", "write", "writeWithImm", "read", "compareSwap", "fetchAdd"])
    }

    func testDecisionsAreTheSameEveryTime() {
        // Pure: no hidden state between calls.
        let first = engine.createQP(tenant: "limited", sendDepth: 257, recvDepth: 1, sendSGE: 1, recvSGE: 1, inlineBytes: 0, current: 0)
        for _ in 0..<100 {
            XCTAssertEqual(engine.createQP(tenant: "limited", sendDepth: 257, recvDepth: 1, sendSGE: 1, recvSGE: 1, inlineBytes: 0, current: 0), first)
        }
    }
}
