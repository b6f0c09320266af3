import Foundation
import XCTest
import SluiceVerbs

/// Issue 5's attack suite: each attack of examples/attacks runs as a tenant
/// process against one real router shared by the whole class, with the
/// victim (and a third party) played here through the verbs API, while a
/// bystander tenant runs verified traffic from before each attack until
/// after it. Each test asserts what the attacker observed (its RESULT lines:
/// completion statuses and errnos), what the router recorded (audit records
/// with the rule that refused), that the victim's bytes are unchanged, and
/// that the bystander never failed or stalled. SECURITY.md ("Attack suite")
/// maps each attack to its test.
final class AttackSuiteTests: XCTestCase {
    static let all = "[send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]"

    static let hogQuotas = """
          quotas:
            protectionDomains: 3
            memoryRegions: 4
            registeredBytes: 64Ki
            largestRegionBytes: 32Ki
            completionQueues: 3
            completionQueueDepth: 64
            queuePairs: 4
            sendQueueDepth: 32
            receiveQueueDepth: 32

        """

    static let keyGuessing = """
          keyGuessing:
            maxFailures: 8
            windowSeconds: 10
            quarantine: true

        """

    /// attacker, victim and a third party may all connect to each other;
    /// guesser only to the victim, under a strict key-guessing detector;
    /// owner and reader share reads only; the bystander and the hog (with
    /// tight quotas) keep to themselves.
    static var policies: [String: String] {
        [
            "victim": RouterProcess.permissive("victim", peers: ["attacker": all, "third": all, "guesser": all]),
            "attacker": RouterProcess.permissive("attacker", peers: ["victim": all, "third": all]),
            "third": RouterProcess.permissive("third", peers: ["victim": all, "attacker": all]),
            "guesser": RouterProcess.permissive("guesser", peers: ["victim": all], extra: keyGuessing),
            "bystander": RouterProcess.permissive("bystander"),
            "hog": RouterProcess.permissive("hog", extra: hogQuotas),
            "owner": RouterProcess.permissive("owner", peers: ["reader": "[read]"]),
            "reader": RouterProcess.permissive("reader", peers: ["owner": "[read]"]),
        ]
    }

    static var shared: RouterProcess?
    var router: RouterProcess!
    var bystander: Bystander?
    /// The newest audit record before the test: only later ones count.
    var mark = 0

    let rw = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)
    let rwa = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
        | IBV_ACCESS_REMOTE_ATOMIC.rawValue)

    override func setUpWithError() throws {
        signal(SIGPIPE, SIG_IGN)
        guard Paths.attackPrograms.dir != nil else {
            throw XCTSkip("the attack programs cannot be built on this machine: \(Paths.attackPrograms.problem)")
        }
        if let r = Self.shared, r.process.isRunning {
            router = r
        } else {
            router = try RouterProcess(policies: Self.policies)
            Self.shared = router
        }
        mark = router.lastAuditSeq
        bystander = try Bystander(router: router)
    }

    override func tearDownWithError() throws {
        bystander?.stopAndCheck()
        bystander = nil
        XCTAssertTrue(router.process.isRunning, "the router died: \(router.stderrText())")
        XCTAssertNoThrow(try router.status(), "the router still answers its operator")
    }

    override class func tearDown() {
        if let r = shared { _ = r.stop() }
        shared = nil
        super.tearDown()
    }

    // MARK: helpers

    func denials(_ tenant: String, event: String = "datapath") -> [[String: Any]] {
        router.audit(since: mark, ["event": event, "tenant": tenant, "decision": "deny"])
    }

    /// Asserts that `records` are exactly `expected` denials per rule: each
    /// attempt audited once, with the rule that refused it, and nothing else.
    func assertDenials(_ records: [[String: Any]], _ expected: [String: Int],
                       file: StaticString = #filePath, line: UInt = #line) {
        var n: [String: Int] = [:]
        for r in records { n[(r["rule"] as? String) ?? "(none)", default: 0] += 1 }
        XCTAssertEqual(n, expected, "recorded: \(ruleSummary(records))", file: file, line: line)
    }

    /// Starts an attack program and reads its HELLO.
    func attack(_ program: String, as tenant: String = "attacker") throws -> (AttackProcess, AttackLine) {
        let a = try AttackProcess(program, tenant: tenant, router: router)
        return (a, try a.expect("HELLO"))
    }

    func qpn(_ l: AttackLine, _ key: String = "qpn") -> UInt32 { UInt32(l.number(key) ?? 0) }
    func lid(_ l: AttackLine) -> UInt16 { UInt16(l.number("lid") ?? 0) }

    // MARK: 1. rkey brute force

    /// ReDMArk's key guessing: the guesser knows where the victim's region
    /// is but not its key, and guesses (sequential and random, WRITE and
    /// READ), resetting its QP after each failure. The detector trips after
    /// maxFailures and quarantines the tenant until an operator clears it.
    func testRkeyGuessingTripsTheDetectorAndQuarantinesTheTenant() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let vqp = try victim.createQP()
        let buf = TestBuffer(pages: 1)
        buf.fill(0, 4096, seed: 21)
        let before = buf.bytes(0, 4096)
        _ = try victim.register(buf.base, 4096, rw)
        let (atk, hello) = try attack("attack_rkey_guess", as: "guesser")
        try victim.connect(vqp, toQPN: qpn(hello), lid: lid(hello), access: rw)
        atk.send(["qpn": vqp.pointee.qp_num, "lid": victim.lid, "addr": addr(buf.base), "len": 4096])
        XCTAssertEqual(atk.finish(), 0, "no guess may succeed:\n\(atk.transcript)")

        atk.assertRefused("rkey_guess", status: "IBV_WC_REM_ACCESS_ERR")
        atk.assertResult("quarantine", "refused", ["errno": "EACCES", "failures": "8"])
        atk.assertRefused("quarantine_create_qp", errno: "EACCES")
        atk.assertResult("qp_fatal", "observed")
        XCTAssertEqual(buf.bytes(0, 4096), before, "the victim's region is unchanged")
        XCTAssertEqual(victim.state(vqp), IBV_QPS_RTS, "the victim's QP is untouched")

        let failures = Int(atk.results["rkey_guess"]?["failures"] ?? "") ?? -1
        assertDenials(denials("guesser"), ["rkey": failures])
        let alerts = router.audit(since: mark, ["event": "alert", "verb": "key_guessing", "tenant": "guesser"])
        XCTAssertEqual(alerts.count, 1, "one alert when the detector trips")
        XCTAssertEqual(alerts.first?["decision"] as? String, "deny")
        XCTAssertEqual(alerts.first?["rule"] as? String, "keyGuessing")
        let control = denials("guesser", event: "control")
        for verb in ["modify_qp", "create_qp"] {
            XCTAssertTrue(control.contains { ($0["verb"] as? String) == verb && ($0["rule"] as? String) == "keyGuessing" },
                          "\(verb) refused by keyGuessing; recorded: \(ruleSummary(control))")
        }

        // The operator sees the quarantine, clears it, and the tenant works again.
        XCTAssertEqual(try router.status()["quarantined"] as? [String], ["guesser"])
        let cli = try XCTUnwrap(Paths.sluiceCLI, "the sluice CLI was not built")
        let clear = try runTool(cli, ["quarantine", "clear", "guesser", "--runtime-dir", router.runtimeDir])
        XCTAssertEqual(clear.status, 0, clear.stdout + clear.stderr)
        XCTAssertEqual(try router.status()["quarantined"] as? [String], [])
        let g = try VerbsEndpoint(socket: router.socket("guesser"))
        let vqp2 = try victim.createQP()
        XCTAssertNoThrow(try g.connect(try g.createQP(), to: vqp2, of: victim, access: rw), "cleared: QPs and connections again")
    }

    // MARK: 2. stale rkey

    /// The victim deregisters its region (and registers the same buffer
    /// again under a new key) while the attacker holds the old key.
    func testAStaleRkeyIsDeadAfterDeregistration() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let vqp = try victim.createQP()
        let buf = TestBuffer(pages: 1)
        buf.fill(0, 4096, seed: 33)
        let before = buf.bytes(0, 4096)
        let mr = try victim.register(buf.base, 4096, rw)
        let old = mr.pointee.rkey
        let (atk, hello) = try attack("attack_stale_rkey")
        try victim.connect(vqp, toQPN: qpn(hello), lid: lid(hello), access: rw)
        atk.send(["qpn": vqp.pointee.qp_num, "lid": victim.lid, "addr": addr(buf.base), "rkey": old, "len": 4096])
        _ = try atk.expect("WAIT")
        victim.deregister(mr)
        let again = try victim.register(buf.base, 4096, rw)
        XCTAssertNotEqual(again.pointee.rkey, old, "a new registration gets a new key")
        atk.send("GO")
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        atk.assertResult("before_dereg", "allowed", ["fnv": fnv1a(before)])
        atk.assertRefused("stale_write", status: "IBV_WC_REM_ACCESS_ERR")
        atk.assertRefused("stale_read", status: "IBV_WC_REM_ACCESS_ERR")
        XCTAssertEqual(buf.bytes(0, 4096), before)
        assertDenials(denials("attacker"), ["rkey": 2])
    }

    // MARK: 3. another tenant's rkey

    /// The victim's valid key, used by the attacker over a QP connected to a
    /// third party, and over a QP connected to the victim's QP in another PD.
    func testAnotherTenantsRkeyResolvesNowhereElse() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let third = try VerbsEndpoint(socket: router.socket("third"))
        let pd2 = try XCTUnwrap(ibv_alloc_pd(victim.context))
        let vqp = try victim.createQP(in: pd2)
        defer {
            ibv_destroy_qp(vqp)
            ibv_dealloc_pd(pd2)
        }
        let tqp = try third.createQP()
        let buf = TestBuffer(pages: 1)
        buf.fill(0, 4096, seed: 44)
        let before = buf.bytes(0, 4096)
        let mr = try victim.register(buf.base, 4096, rw)
        let tbuf = TestBuffer(pages: 1)
        tbuf.fill(0, 4096, seed: 45)
        let tbefore = tbuf.bytes(0, 4096)
        _ = try third.register(tbuf.base, 4096, rw)

        let (atk, hello) = try attack("attack_foreign_rkey")
        try third.connect(tqp, toQPN: qpn(hello), lid: lid(hello), access: rw)
        try victim.connect(vqp, toQPN: qpn(hello, "qpn2"), lid: lid(hello), access: rw)
        atk.send(["t_qpn": tqp.pointee.qp_num, "t_lid": third.lid, "v_qpn": vqp.pointee.qp_num, "v_lid": victim.lid,
                  "addr": addr(buf.base), "rkey": mr.pointee.rkey, "len": 4096])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        for name in ["via_third_write", "via_third_read", "other_pd_write", "other_pd_read"] {
            atk.assertRefused(name, status: "IBV_WC_REM_ACCESS_ERR")
        }
        XCTAssertEqual(buf.bytes(0, 4096), before, "the victim's region")
        XCTAssertEqual(tbuf.bytes(0, 4096), tbefore, "the third party's region")
        assertDenials(denials("attacker"), ["rkey": 4])
    }

    // MARK: 4. bounds and overflow

    /// A valid key, and ranges a byte outside the region on either side, or
    /// whose end wraps around 2^64.
    func testOutOfBoundsAndWrappingRangesAreRefused() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let vqp = try victim.createQP()
        let buf = TestBuffer(pages: 3)
        buf.fill(0, buf.size, seed: 55)
        let before = buf.bytes(0, buf.size)
        let mr = try victim.register(buf.base + 4096, 4096, rw)
        let (atk, hello) = try attack("attack_bounds")
        try victim.connect(vqp, toQPN: qpn(hello), lid: lid(hello), access: rw)
        atk.send(["qpn": vqp.pointee.qp_num, "lid": victim.lid, "addr": addr(buf.base + 4096), "rkey": mr.pointee.rkey, "len": 4096])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        atk.assertResult("in_bounds", "allowed", ["fnv": fnv1a(buf.bytes(4096, 4096))])
        let cases = ["write_last_byte_out", "write_one_before", "read_just_past_end", "read_one_too_long",
                     "write_wrapping_2_64", "read_wrapping_2_64", "write_far_away"]
        for name in cases { atk.assertRefused(name, status: "IBV_WC_REM_ACCESS_ERR") }
        XCTAssertEqual(buf.bytes(0, buf.size), before, "the region and the pages around it are unchanged")
        assertDenials(denials("attacker"), ["rkey.bounds": cases.count])
    }

    // MARK: 5. access flags

    /// A WRITE to a read-only region, a READ from a region without
    /// REMOTE_READ, atomics on a region without REMOTE_ATOMIC, a WRITE
    /// through a QP whose access flags lack it, and atomics that are
    /// misaligned or have the wrong local length. Atomics where everything
    /// allows them work (the control: the refusals are about the flags).
    func testAccessFlagsOfRegionsAndQueuePairsAreEnforced() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        var dev = ibv_device_attr()
        XCTAssertEqual(ibv_query_device(victim.context, &dev), 0)
        XCTAssertNotEqual(dev.atomic_cap, IBV_ATOMIC_NONE, "the device reports atomics")
        let v1 = try victim.createQP(), v2 = try victim.createQP()
        let buf = TestBuffer(pages: 4)
        buf.fill(0, 3 * 4096, seed: 66)
        buf.base.storeBytes(of: UInt64(1000), toByteOffset: 3 * 4096, as: UInt64.self)
        let before = buf.bytes(0, 3 * 4096)
        let ro = try victim.register(buf.base, 64, ibv_access_flags(IBV_ACCESS_REMOTE_READ.rawValue))
        let nr = try victim.register(buf.base + 4096, 64, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue))
        let na = try victim.register(buf.base + 8192, 64, rw)
        let at = try victim.register(buf.base + 3 * 4096, 64,
                                     ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_ATOMIC.rawValue))
        let (atk, hello) = try attack("attack_access")
        try victim.connect(v1, toQPN: qpn(hello), lid: lid(hello), access: rwa)
        try victim.connect(v2, toQPN: qpn(hello, "qpn2"), lid: lid(hello), access: ibv_access_flags(0))
        atk.send(["qpn": v1.pointee.qp_num, "lid": victim.lid, "v2_qpn": v2.pointee.qp_num, "v2_lid": victim.lid,
                  "ro_addr": addr(buf.base), "ro_rkey": ro.pointee.rkey, "nr_addr": addr(buf.base + 4096), "nr_rkey": nr.pointee.rkey,
                  "na_addr": addr(buf.base + 8192), "na_rkey": na.pointee.rkey,
                  "at_addr": addr(buf.base + 3 * 4096), "at_rkey": at.pointee.rkey])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        for name in ["write_read_only", "read_without_remote_read", "fetch_add_without_atomic", "cmp_swap_without_atomic"] {
            atk.assertRefused(name, status: "IBV_WC_REM_ACCESS_ERR")
        }
        atk.assertRefused("write_qp_without_access", status: "IBV_WC_REM_INV_REQ_ERR")
        atk.assertRefused("atomic_unaligned", status: "IBV_WC_REM_INV_REQ_ERR")
        atk.assertRefused("atomic_short_sge", status: "IBV_WC_LOC_LEN_ERR")
        atk.assertResult("fetch_add_allowed", "allowed", ["old": "1000"])
        atk.assertResult("cmp_swap_allowed", "allowed", ["old": "1005"])
        XCTAssertEqual(buf.base.load(fromByteOffset: 3 * 4096, as: UInt64.self), 0xfeed, "1000 + 5, then swapped")
        XCTAssertEqual(buf.bytes(0, 3 * 4096), before, "the regions the attacks aimed at are unchanged")

        assertDenials(denials("attacker"), ["rkey.access": 4, "qp.access": 1, "atomic.alignment": 1, "atomic.length": 1])
    }

    // MARK: 6. QP hijack

    /// The attacker moves its own QPs to RTR towards the victim's: one
    /// already connected to a third party (with any PSN, and with the PSNs
    /// that connection uses), QPNs at the wrong address, guessed QPNs and
    /// GIDs, another source GID index, a fiddled GRH; a second QP towards a
    /// QP already connected to its first; a QP already claimed. The victim's
    /// real connection keeps working, and a fiddled GRH reaches exactly the
    /// QP its GID and QPN name.
    func testQueuePairsCannotBeHijacked() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let third = try VerbsEndpoint(socket: router.socket("third"))
        let v1 = try victim.createQP(), v2 = try victim.createQP(), v3 = try victim.createQP()
        let t1 = try third.createQP()
        try victim.connect(v1, to: t1, of: third, access: rw)
        try third.connect(t1, to: v1, of: victim, access: rw)
        let vbuf = TestBuffer(pages: 1), tbuf = TestBuffer(pages: 1)
        let vmr = try victim.register(vbuf.base, 4096, rw)
        let tmr = try third.register(tbuf.base, 4096, rw)
        try victim.postRecv(v1, id: 100, [sge(vbuf.base, 64, vmr)])

        let (atk, hello) = try attack("attack_qp_hijack")
        atk.send(["v1_qpn": v1.pointee.qp_num, "v2_qpn": v2.pointee.qp_num, "v3_qpn": v3.pointee.qp_num,
                  "v_lid": victim.lid, "v_gid": victim.gidHex, "t_lid": third.lid, "t_gid": third.gidHex, "psn": 0])
        let back = try atk.expect("WAIT")
        try victim.connect(v2, toQPN: UInt32(back.number("qpn") ?? 0), lid: lid(hello), access: rw)
        try victim.postRecv(v2, id: 200, [sge(vbuf.base + 1024, 64, vmr)])
        atk.send("GO")
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        for name in ["hijack_connected", "hijack_psn", "wrong_lid", "guessed_qpn", "guessed_gid", "sgid_index",
                     "grh_fiddle_other", "second_qp", "claimed"] {
            atk.assertRefused(name, errno: "EINVAL")
        }
        XCTAssertNil(atk.results["hijack_send"], "no hijacking connection existed to send on")
        atk.assertResult("grh_fiddle_exact", "allowed")
        atk.assertResult("grh_send", "allowed")
        atk.assertResult("claim_free", "allowed")

        // The fiddled GRH reached v2 and only v2; then the third party's
        // message reaches v1, whose receive no hijacker consumed.
        tbuf.fill(0, 64, seed: 77)
        try third.postSend(t1, id: 1, IBV_WR_SEND, [sge(tbuf.base, 64, tmr)])
        XCTAssertEqual(third.poll(1).first?.status, IBV_WC_SUCCESS)
        let got = victim.poll(2)
        let byID = Dictionary(got.map { ($0.wr_id, $0) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(byID[200]?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(byID[200]?.src_qp, UInt32(back.number("qpn") ?? 0), "v2's message came from the QP the GRH named it to")
        XCTAssertEqual(vbuf.bytes(1024, 32), [UInt8](repeating: 0x5a, count: 32))
        XCTAssertEqual(byID[100]?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(byID[100]?.src_qp, t1.pointee.qp_num, "v1's receive went to its real peer")
        XCTAssertEqual(vbuf.bytes(0, 64), tbuf.bytes(0, 64))

        // Exclusive: hijack_connected, hijack_psn, second_qp, claimed. Address:
        // wrong_lid, guessed_gid, sgid_index, grh_fiddle_other, each guessed QPN.
        let d = denials("attacker", event: "control")
        XCTAssertTrue(d.allSatisfy { ($0["verb"] as? String) == "modify_qp" }, ruleSummary(d))
        let guessed = Int(atk.results["guessed_qpn"]?["tries"] ?? "") ?? 0
        assertDenials(d, ["connection.exclusive": 4, "connection.address": 4 + guessed])
    }

    /// QPNs, LIDs and virtual addresses are drawn at random: an attacker who
    /// sees its own cannot predict its neighbours'.
    func testAddressesAndQueuePairNumbersAreNotSequential() throws {
        var eps: [VerbsEndpoint] = []
        for _ in 0..<6 { eps.append(try VerbsEndpoint(socket: router.socket("third"))) }
        var qpns: [Int] = []
        for e in eps {
            for _ in 0..<2 {
                let qp = try e.createQP()
                qpns.append(Int(qp.pointee.qp_num))
            }
        }
        func nearSteps(_ xs: [Int]) -> Int { zip(xs, xs.dropFirst()).filter { abs($1 - $0) <= 2 }.count }
        let lids = eps.map { Int($0.lid) }, ips = eps.map { Int($0.ipv4) }
        XCTAssertLessThanOrEqual(nearSteps(lids), 1, "LIDs of successive sessions: \(lids)")
        XCTAssertLessThanOrEqual(nearSteps(ips), 1, "addresses of successive sessions: \(ips.map { String($0, radix: 16) })")
        XCTAssertLessThanOrEqual(nearSteps(qpns), 1, "QPNs of successive QPs: \(qpns)")
    }

    // MARK: 7. lkeys and SGEs

    /// Bad local SGEs on WRITEs that the remote side would accept: a forged
    /// lkey, SGEs past or wrapping around the attacker's region, the
    /// victim's own lkey, an lkey from another of the attacker's PDs.
    func testForgedLkeysAndForeignSGEsAreRefused() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let vqp = try victim.createQP()
        let buf = TestBuffer(pages: 3)
        buf.fill(0, buf.size, seed: 88)
        let before = buf.bytes(0, buf.size)
        let mr = try victim.register(buf.base + 4096, 4096, rw)
        let (atk, hello) = try attack("attack_lkey")
        try victim.connect(vqp, toQPN: qpn(hello), lid: lid(hello), access: rw)
        atk.send(["qpn": vqp.pointee.qp_num, "lid": victim.lid, "addr": addr(buf.base + 4096), "rkey": mr.pointee.rkey,
                  "len": 4096, "lkey": mr.pointee.lkey])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        atk.assertResult("control_write", "allowed")
        let cases = ["forged_lkey", "sge_past_region", "sge_wrapping_2_64", "victims_lkey", "other_pd_lkey", "read_into_forged_lkey"]
        for name in cases { atk.assertRefused(name, status: "IBV_WC_LOC_PROT_ERR") }
        XCTAssertEqual(buf.bytes(4096, 64), (0..<64).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }, "the control write landed")
        XCTAssertEqual(buf.bytes(4096 + 64, buf.size - 4096 - 64), Array(before[(4096 + 64)...]), "nothing else did")
        XCTAssertEqual(buf.bytes(0, 4096), Array(before[0..<4096]))
        assertDenials(denials("attacker"), ["lkey": cases.count])
    }

    // MARK: 8. TOCTOU on memory and rings

    /// The attacker shrinks, grows, reseals, truncates and punches its
    /// region's memfd, maps other memory over the region, scribbles on its
    /// send ring while posting, and publishes a corrupt producer index.
    func testTheTenantCannotPullMemoryOrRingsFromUnderTheRouter() throws {
        let victim = try VerbsEndpoint(socket: router.socket("victim"))
        let v1 = try victim.createQP(), v2 = try victim.createQP()
        let buf = TestBuffer(pages: 6)
        buf.fill(0, buf.size, seed: 99)
        let before = buf.bytes(0, buf.size)
        let mr = try victim.register(buf.base + 4096, 4 * 4096, rw)
        let (atk, hello) = try attack("attack_toctou")
        try victim.connect(v1, toQPN: qpn(hello), lid: lid(hello), access: rw)
        try victim.connect(v2, toQPN: qpn(hello, "qpn2"), lid: lid(hello), access: rw)
        atk.send(["qpn": v1.pointee.qp_num, "lid": victim.lid, "v2_qpn": v2.pointee.qp_num, "v2_lid": victim.lid,
                  "addr": addr(buf.base + 4096), "rkey": mr.pointee.rkey])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        for name in ["memfd_shrink", "memfd_grow", "memfd_add_write_seal", "memfd_reopen_truncate"] {
            atk.assertRefused(name, errno: "EPERM")
        }
        for name in ["write_after_memfd_attacks", "write_after_remap", "write_after_punch", "write_after_ring_attacks"] {
            atk.assertResult(name, "allowed")
        }
        atk.assertResult("ring_corrupt_index", "refused", ["state": "IBV_QPS_ERR"])
        let race = atk.results["ring_race"]
        XCTAssertTrue(["refused", "allowed"].contains(race?.words[2] ?? ""), "ring_race: \(race?.text ?? "missing")")

        let pattern = (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 13 + 7) }
        XCTAssertEqual(buf.bytes(4096, 4096), pattern, "landing page 0: the region's first page")
        XCTAssertEqual(buf.bytes(2 * 4096, 4096), pattern, "landing page 1: the pages the router was given, not the ones mapped over them")
        let punched = atk.results["memfd_punch_hole"]?.words[2] == "allowed"
        XCTAssertEqual(buf.bytes(3 * 4096, 64), punched ? [UInt8](repeating: 0, count: 64) : Array(pattern[0..<64]),
                       "landing page 2: what the (punched) memfd holds")
        XCTAssertEqual(buf.bytes(3 * 4096 + 64, 4096 - 64), Array(before[(3 * 4096 + 64)..<(4 * 4096)]))
        XCTAssertEqual(buf.bytes(0, 4096), Array(before[0..<4096]), "the page before the region")
        XCTAssertEqual(buf.bytes(5 * 4096, 4096), Array(before[(5 * 4096)...]), "the page after the region")
        // One record for the corrupt index, and one for the request the
        // race broke (whichever check it failed), if it broke one.
        let d = denials("attacker")
        XCTAssertEqual(d.filter { ($0["rule"] as? String) == "ring" }.count, 1, ruleSummary(d))
        XCTAssertEqual(d.count, race?.words[2] == "refused" ? 2 : 1, ruleSummary(d))
    }

    // MARK: 9. resource exhaustion

    /// A tenant with quotas allocates PDs, MRs, CQs and QPs from two
    /// sessions until refused, and asks for queues deeper than allowed.
    func testQuotasStopResourceExhaustion() throws {
        let (atk, _) = try attack("attack_exhaust", as: "hog")
        atk.send(["deep_send": 33, "deep_recv": 33, "deep_cq": 65])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        atk.assertResult("pd", "refused", ["errno": "ENOMEM", "count": "3"])
        atk.assertResult("mr", "refused", ["errno": "ENOMEM", "count": "4"])
        atk.assertResult("cq", "refused", ["errno": "ENOMEM", "count": "3"])
        atk.assertResult("qp", "refused", ["errno": "ENOMEM", "count": "4"])
        for name in ["deep_cq", "huge_cq", "deep_send_queue", "deep_recv_queue", "huge_send_queue", "huge_recv_queue"] {
            atk.assertRefused(name, errno: "EINVAL")
        }
        atk.assertRefused("mr_too_large", errno: "ENOMEM")
        atk.assertResult("qp_after_free", "allowed")

        // One refusal per quota; the far-too-deep queues hit the device's
        // own limits first (or the library's), whichever rule those carry.
        let quotas = denials("hog", event: "control").filter { ($0["rule"] as? String ?? "").hasPrefix("quotas.") }
        assertDenials(quotas, ["quotas.protectionDomains": 1, "quotas.memoryRegions": 1, "quotas.completionQueues": 1,
                               "quotas.queuePairs": 1, "quotas.completionQueueDepth": 1, "quotas.sendQueueDepth": 1,
                               "quotas.receiveQueueDepth": 1, "quotas.largestRegionBytes": 1])
        // Everything it held is given back, and other tenants were never short.
        let s = try router.waitForStatus { ($0["tenants"] as? [String: Any])?["hog"] == nil }
        XCTAssertNil((s["tenants"] as? [String: Any])?["hog"], "the hog's objects are reclaimed")
        let other = try VerbsEndpoint(socket: router.socket("victim"))
        XCTAssertNoThrow(try other.createQP())
    }

    // MARK: sharing that policy allows

    /// The owner shares a region for reads with the reader, and both
    /// policies allow `read` between them: reads inside the region work
    /// (byte for byte), reads across its ends and writes do not.
    func testSharingThatPolicyAllowsWorksInsideTheRegionOnly() throws {
        let owner = try VerbsEndpoint(socket: router.socket("owner"))
        let oqp = try owner.createQP()
        let buf = TestBuffer(pages: 3)
        buf.fill(0, buf.size, seed: 111)
        let before = buf.bytes(0, buf.size)
        let len = 6000
        let mr = try owner.register(buf.base + 100, len, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue))
        let (atk, hello) = try attack("share_read", as: "reader")
        try owner.connect(oqp, toQPN: qpn(hello), lid: lid(hello), access: ibv_access_flags(IBV_ACCESS_REMOTE_READ.rawValue))
        atk.send(["qpn": oqp.pointee.qp_num, "lid": owner.lid, "addr": addr(buf.base + 100), "rkey": mr.pointee.rkey, "len": len])
        XCTAssertEqual(atk.finish(), 0, atk.transcript)

        for name in ["read_whole", "read_head", "read_middle", "read_tail"] {
            guard let r = atk.results[name], let off = r.number("offset"), let n = r.number("length") else {
                XCTFail("no RESULT \(name):\n\(atk.transcript)")
                continue
            }
            atk.assertResult(name, "allowed", ["fnv": fnv1a(buf.bytes(100 + Int(off), Int(n)))])
        }
        XCTAssertEqual(atk.results["read_whole"]?["length"], String(len))
        atk.assertRefused("read_past_end", status: "IBV_WC_REM_ACCESS_ERR")
        atk.assertRefused("read_before_start", status: "IBV_WC_REM_ACCESS_ERR")
        atk.assertRefused("write_not_in_policy", status: "IBV_WC_LOC_QP_OP_ERR")
        XCTAssertEqual(buf.bytes(0, buf.size), before)
        assertDenials(denials("reader"), ["rkey.bounds": 2, "peers.owner": 1])
    }
}
