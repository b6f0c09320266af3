import XCTest
import SluiceWire
@testable import SluiceRouter

/// The verbs backend turns each real completion (ibv_wc) into the tenant's
/// virtual one: the tenant must see its own virtual QPN and its peer's, and
/// nothing real.
final class CompletionMappingTests: XCTestCase {
    let qpn: UInt32 = 0x4a1b2c, peerQPN: UInt32 = 0x17e3d5, peerLID: UInt16 = 0x2e41
    let realQPN: UInt32 = 0x000123, realPeer: UInt32 = 0x000456, realLID: UInt16 = 3

    private func real(_ status: Int, _ opcode: Int, bytes: UInt32 = 0, imm: UInt32 = 0, flags: UInt32 = 0) -> RealCompletion {
        var r = RealCompletion()
        r.wrID = 0xfeed_beef_0000_0001
        r.status = UInt32(status)
        r.opcode = UInt32(opcode)
        r.byteLength = bytes
        r.immData = imm
        r.flags = flags
        r.qpNum = realQPN
        r.srcQP = realPeer
        r.slid = realLID
        r.vendorError = 0x99
        r.pkeyIndex = 5
        r.sl = 2
        r.dlidPathBits = 1
        return r
    }

    private func map(_ r: RealCompletion) -> sluice_cqe {
        CompletionMapping.virtualCompletion(r, qpn: qpn, peerQPN: peerQPN, peerLID: peerLID)
    }

    func testASuccessfulSendKeepsItsIdentityAndGetsTheVirtualQPN() {
        let c = map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_SEND, bytes: 4096))
        XCTAssertEqual(c.wr_id, 0xfeed_beef_0000_0001)
        XCTAssertEqual(c.status, UInt32(SLUICE_WC_SUCCESS))
        XCTAssertEqual(c.opcode, UInt32(SLUICE_WC_OP_SEND))
        XCTAssertEqual(c.byte_len, 4096)
        XCTAssertEqual(c.qp_num, qpn)
        // A requester completion names no source.
        XCTAssertEqual(c.src_qp, 0)
        XCTAssertEqual(c.slid, 0)
        XCTAssertEqual(c.vendor_err, 0)
        XCTAssertEqual(c.pkey_index, 0)
    }

    func testEveryRequesterOpcodePasses() {
        for op in [SLUICE_WC_OP_SEND, SLUICE_WC_OP_RDMA_WRITE, SLUICE_WC_OP_RDMA_READ, SLUICE_WC_OP_COMP_SWAP, SLUICE_WC_OP_FETCH_ADD] {
            let c = map(real(SLUICE_WC_SUCCESS, op, bytes: 8))
            XCTAssertEqual(c.opcode, UInt32(op))
            XCTAssertEqual(c.status, UInt32(SLUICE_WC_SUCCESS))
            XCTAssertEqual(c.byte_len, 8)
        }
    }

    func testAReceiveNamesTheVirtualPeerNeverTheRealOne() {
        let c = map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_RECV, bytes: 100, flags: UInt32(SLUICE_WC_FLAG_GRH)))
        XCTAssertEqual(c.opcode, UInt32(SLUICE_WC_OP_RECV))
        XCTAssertEqual(c.byte_len, 100)
        XCTAssertEqual(c.qp_num, qpn)
        XCTAssertEqual(c.src_qp, peerQPN)
        XCTAssertEqual(c.slid, peerLID)
        XCTAssertEqual(c.sl, 2)
        XCTAssertEqual(c.wc_flags, UInt32(SLUICE_WC_FLAG_GRH))
        XCTAssertEqual(c.imm_data, 0)
        XCTAssertEqual(c.dlid_path_bits, 0)
        for v in [c.qp_num, c.src_qp] { XCTAssertFalse([realQPN, realPeer].contains(v)) }
        XCTAssertNotEqual(c.slid, realLID)
    }

    func testImmediateDataPassesInNetworkOrderOnlyWithItsFlag() {
        let imm = UInt32(0x1234_5678).bigEndian
        let send = map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_RECV, bytes: 16, imm: imm, flags: UInt32(SLUICE_WC_FLAG_WITH_IMM)))
        XCTAssertEqual(send.imm_data, imm)
        XCTAssertEqual(send.wc_flags, UInt32(SLUICE_WC_FLAG_WITH_IMM))
        let write = map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_RECV_RDMA_WITH_IMM, bytes: 0, imm: imm,
                             flags: UInt32(SLUICE_WC_FLAG_WITH_IMM)))
        XCTAssertEqual(write.opcode, UInt32(SLUICE_WC_OP_RECV_RDMA_WITH_IMM))
        XCTAssertEqual(write.imm_data, imm)
        XCTAssertEqual(write.src_qp, peerQPN)
        // Without the flag the field means nothing and is not copied.
        XCTAssertEqual(map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_RECV, imm: imm)).imm_data, 0)
        // Flags the wire does not define are dropped.
        XCTAssertEqual(map(real(SLUICE_WC_SUCCESS, SLUICE_WC_OP_RECV, flags: 0xfc)).wc_flags, 0)
    }

    func testErrorStatusesPassAndCarryNothingElse() {
        for st in [SLUICE_WC_LOC_LEN_ERR, SLUICE_WC_LOC_QP_OP_ERR, SLUICE_WC_LOC_PROT_ERR, SLUICE_WC_WR_FLUSH_ERR,
                   SLUICE_WC_LOC_ACCESS_ERR, SLUICE_WC_REM_INV_REQ_ERR, SLUICE_WC_REM_ACCESS_ERR, SLUICE_WC_REM_OP_ERR,
                   SLUICE_WC_RETRY_EXC_ERR, SLUICE_WC_RNR_RETRY_EXC_ERR, SLUICE_WC_GENERAL_ERR] {
            let c = map(real(st, SLUICE_WC_OP_RDMA_WRITE, bytes: 77,
                             imm: 5, flags: UInt32(SLUICE_WC_FLAG_WITH_IMM)))
            XCTAssertEqual(c.status, UInt32(st))
            XCTAssertEqual(c.qp_num, qpn)
            XCTAssertEqual(c.wr_id, 0xfeed_beef_0000_0001)
            XCTAssertEqual(c.byte_len, 0)
            XCTAssertEqual(c.imm_data, 0)
            XCTAssertEqual(c.wc_flags, 0)
            XCTAssertEqual(c.src_qp, 0)
            XCTAssertEqual(c.vendor_err, 0)
        }
    }

    func testWhatTheWireDoesNotDefineBecomesAGeneralError() {
        // IBV_WC_MW_BIND_ERR (6), IBV_WC_BAD_RESP_ERR (7): not on the wire.
        for st: Int in [6, 7, 14, 20, 22, 99] {
            let c = map(real(st, SLUICE_WC_OP_SEND, bytes: 9))
            XCTAssertEqual(c.status, UInt32(SLUICE_WC_GENERAL_ERR), "status \(st)")
            XCTAssertEqual(c.byte_len, 0)
        }
        // A success with an opcode the wire lacks (IBV_WC_BIND_MW = 5, TSO = 7,
        // IBV_WC_TM_* ...) is not shown as a success of something else.
        for op: Int in [5, 7, 6, 130, 135] {
            let c = map(real(SLUICE_WC_SUCCESS, op, bytes: 9))
            XCTAssertEqual(c.status, UInt32(SLUICE_WC_GENERAL_ERR), "opcode \(op)")
            XCTAssertEqual(c.opcode, 0)
        }
    }
}
