import XCTest
import SluiceWire
@testable import SluiceRouter

final class QPStateMachineTests: XCTestCase {
    typealias M = QPStateMachine.Mask

    func check(_ from: QPState, _ mask: M, _ to: QPState) -> Result<QPState, ModifyRefusal> {
        QPStateMachine.check(current: from, mask: mask.rawValue, requested: to.rawValue)
    }

    func testTheRCConnectSequenceIsAccepted() {
        XCTAssertEqual(try check(.reset, [.state, .pkeyIndex, .port, .accessFlags], .initialized).get(), .initialized)
        XCTAssertEqual(try check(.initialized, [.state, .av, .pathMTU, .destQPN, .rqPSN, .maxDestRdAtomic, .minRNRTimer], .rtr).get(), .rtr)
        XCTAssertEqual(try check(.rtr, [.state, .timeout, .retryCount, .rnrRetry, .sqPSN, .maxQPRdAtomic], .rts).get(), .rts)
    }

    func testMissingRequiredAttributesAreRefusedAndNamed() {
        // RESET -> INIT without the port.
        guard case .failure(let f) = check(.reset, [.state, .pkeyIndex, .accessFlags], .initialized) else {
            return XCTFail("accepted a transition without IBV_QP_PORT")
        }
        XCTAssertTrue(f.reason.contains("requires attribute mask 0x\(String(M.port.rawValue, radix: 16))"), f.reason)
        // INIT -> RTR without the destination QPN.
        guard case .failure = check(.initialized, [.state, .av, .pathMTU, .rqPSN, .maxDestRdAtomic, .minRNRTimer], .rtr) else {
            return XCTFail("accepted RTR without IBV_QP_DEST_QPN")
        }
    }

    func testAttributesNotAllowedForTheTransitionAreRefused() {
        // RESET -> INIT may not carry a destination.
        guard case .failure(let f) = check(.reset, [.state, .pkeyIndex, .port, .accessFlags, .destQPN], .initialized) else {
            return XCTFail("accepted IBV_QP_DEST_QPN on RESET -> INIT")
        }
        XCTAssertTrue(f.reason.contains("does not accept"), f.reason)
    }

    func testSkippingStatesIsRefused() {
        guard case .failure(let f) = check(.reset, [.state], .rts) else { return XCTFail("RESET -> RTS accepted") }
        XCTAssertTrue(f.reason.contains("RESET -> RTS"), f.reason)
        guard case .failure = check(.initialized, [.state, .timeout, .retryCount, .rnrRetry, .sqPSN, .maxQPRdAtomic], .rts) else {
            return XCTFail("INIT -> RTS accepted")
        }
    }

    func testAnyStateMayGoToResetOrError() {
        for s in [QPState.reset, .initialized, .rtr, .rts, .error] {
            XCTAssertEqual(try check(s, [.state], .error).get(), .error)
            XCTAssertEqual(try check(s, [.state], .reset).get(), .reset)
        }
    }

    func testUnknownStateValueIsRefused() {
        guard case .failure = QPStateMachine.check(current: .reset, mask: M.state.rawValue, requested: 42) else {
            return XCTFail("state 42 accepted")
        }
    }
}
