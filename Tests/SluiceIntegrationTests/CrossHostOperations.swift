import Foundation
import SluiceVerbs
import XCTest

/// WRITE (100 KiB at odd offsets), READ, SEND into a posted receive,
/// WRITE_WITH_IMM, fetch-and-add, compare-and-swap and order per QP
/// between endpoints `a` and `b` on two hosts, every byte checked, the
/// completions carrying only virtual identifiers. The same checks run on
/// the software fabric between routers (FabricVerbsNetnsTests) and on
/// routers on NICs (VerbsClusterNetnsTests), which add their own. Returns
/// the QPs and regions it used.
@discardableResult
func checkCrossHostOperations(_ a: VerbsEndpoint, _ b: VerbsEndpoint, access rw: ibv_access_flags, useGID: Bool) throws
    -> (qa: UnsafeMutablePointer<ibv_qp>, qb: UnsafeMutablePointer<ibv_qp>, amr: UnsafeMutablePointer<ibv_mr>, bmr: UnsafeMutablePointer<ibv_mr>) {
    let qa = try a.createQP(), qb = try b.createQP()
    try a.connect(qa, to: qb, of: b, access: rw, useGID: useGID)
    try b.connect(qb, to: qa, of: a, access: rw, useGID: useGID)
    let abuf = TestBuffer(pages: 64), bbuf = TestBuffer(pages: 64)
    let amr = try a.register(abuf.base, abuf.size, rw), bmr = try b.register(bbuf.base, bbuf.size, rw)

    // WRITE a → b, 100 KiB at an odd offset.
    let n = 100_000
    abuf.fill(3, n, seed: 11)
    try a.postSend(qa, id: 1, IBV_WR_RDMA_WRITE, [sge(abuf.base + 3, n, amr)], remote: (addr(bbuf.base + 5), bmr.pointee.rkey))
    var wc = a.poll(1, seconds: 20)
    XCTAssertEqual(wc.first?.status, IBV_WC_SUCCESS)
    XCTAssertEqual(wc.first?.opcode, IBV_WC_RDMA_WRITE)
    XCTAssertEqual(wc.first?.qp_num, qa.pointee.qp_num)
    XCTAssert(bbuf.bytes(5, n) == abuf.bytes(3, n), "the written bytes arrived on the other host")

    // READ b → a.
    bbuf.fill(200_000, 5000, seed: 99)
    try a.postSend(qa, id: 2, IBV_WR_RDMA_READ, [sge(abuf.base + 150_000, 5000, amr)], remote: (addr(bbuf.base + 200_000), bmr.pointee.rkey))
    wc = a.poll(1)
    XCTAssertEqual(wc.first?.status, IBV_WC_SUCCESS)
    XCTAssertEqual(wc.first?.byte_len, 5000)
    XCTAssertEqual(abuf.bytes(150_000, 5000), bbuf.bytes(200_000, 5000), "the READ response flowed back")

    // SEND b → a, into a posted receive; and WRITE_WITH_IMM.
    try a.postRecv(qa, id: 10, [sge(abuf.base + 180_000, 4096, amr)])
    bbuf.fill(100, 3000, seed: 5)
    try b.postSend(qb, id: 3, IBV_WR_SEND, [sge(bbuf.base + 100, 3000, bmr)])
    XCTAssertEqual(b.poll(1).first?.status, IBV_WC_SUCCESS)
    wc = a.poll(1)
    XCTAssertEqual(wc.first?.status, IBV_WC_SUCCESS)
    XCTAssertEqual(wc.first?.opcode, IBV_WC_RECV)
    XCTAssertEqual(wc.first?.byte_len, 3000)
    XCTAssertEqual(wc.first?.wr_id, 10)
    XCTAssertEqual(wc.first?.src_qp, qb.pointee.qp_num, "the sender's virtual QPN, not its real one")
    XCTAssertEqual(wc.first?.slid, b.lid, "the sender's virtual LID, by LID or GID")
    XCTAssertEqual((wc.first?.wc_flags ?? 0) & IBV_WC_GRH.rawValue != 0, useGID)
    XCTAssertEqual(abuf.bytes(180_000, 3000), bbuf.bytes(100, 3000))
    try a.postRecv(qa, id: 11, [])
    try b.postSend(qb, id: 4, IBV_WR_RDMA_WRITE_WITH_IMM, [sge(bbuf.base, 64, bmr)], remote: (addr(abuf.base + 190_000), amr.pointee.rkey), imm: 0xfeed)
    XCTAssertEqual(b.poll(1).first?.status, IBV_WC_SUCCESS)
    wc = a.poll(1)
    XCTAssertEqual(wc.first?.opcode, IBV_WC_RECV_RDMA_WITH_IMM)
    XCTAssertEqual(wc.first.map { UInt32(bigEndian: $0.imm_data) }, 0xfeed)
    XCTAssertEqual(abuf.bytes(190_000, 64), bbuf.bytes(0, 64))

    // Atomics on b's memory from a.
    let word = bbuf.base + 8192
    word.storeBytes(of: UInt64(40), as: UInt64.self)
    var wr = ibv_send_wr()
    var s = sge(abuf.base + 240_000, 8, amr)
    wr.wr_id = 5
    wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD
    wr.send_flags = IBV_SEND_SIGNALED.rawValue
    wr.num_sge = 1
    wr.wr.atomic.remote_addr = addr(word)
    wr.wr.atomic.rkey = bmr.pointee.rkey
    wr.wr.atomic.compare_add = 2
    var bad: UnsafeMutablePointer<ibv_send_wr>?
    withUnsafeMutablePointer(to: &s) { sp in
        wr.sg_list = sp
        XCTAssertEqual(ibv_post_send(qa, &wr, &bad), 0)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual((abuf.base + 240_000).load(as: UInt64.self), 40, "fetch-and-add returns the old value")
        XCTAssertEqual(word.load(as: UInt64.self), 42)
        wr.wr_id = 6
        wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP
        wr.wr.atomic.compare_add = 42
        wr.wr.atomic.swap = 7
        XCTAssertEqual(ibv_post_send(qa, &wr, &bad), 0)
        XCTAssertEqual(a.poll(1).first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(word.load(as: UInt64.self), 7)
    }

    // Order per QP: fifty WRITEs in a row to ONE remote word, write i
    // carrying the value i. Only in order does the word end as 49 (any
    // reordering leaves an earlier value); a READ after them, on the
    // same QP, must see it too.
    let target = bbuf.base + 4096 * 20
    target.storeBytes(of: UInt32.max, as: UInt32.self)
    for i in 0..<50 {
        (abuf.base + 4096 * 11 + i * 4).storeBytes(of: UInt32(i), as: UInt32.self)
        try a.postSend(qa, id: 100 + UInt64(i), IBV_WR_RDMA_WRITE, [sge(abuf.base + 4096 * 11 + i * 4, 4, amr)],
                       flags: i == 49 ? IBV_SEND_SIGNALED : ibv_send_flags(0), remote: (addr(target), bmr.pointee.rkey))
    }
    let readBack = abuf.base + 4096 * 12
    readBack.storeBytes(of: UInt32.max, as: UInt32.self)
    try a.postSend(qa, id: 150, IBV_WR_RDMA_READ, [sge(readBack, 4, amr)], remote: (addr(target), bmr.pointee.rkey))
    wc = a.poll(2)
    XCTAssertEqual(wc.map(\.wr_id), [149, 150])
    XCTAssertEqual(wc.map(\.status), [IBV_WC_SUCCESS, IBV_WC_SUCCESS])
    XCTAssertEqual(target.load(as: UInt32.self), 49, "the last WRITE posted is the last one applied")
    XCTAssertEqual(readBack.load(as: UInt32.self), 49, "a READ after the WRITEs sees the last")
    return (qa, qb, amr, bmr)
}
