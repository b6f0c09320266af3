import XCTest
@testable import SluiceCluster

final class FabricMessageTests: XCTestCase {
    func testRequestsAndResponsesRoundTrip() throws {
        let req = RemoteRequest(opcode: 4, solicited: true, sourceQPN: 0xabcdef, sourceLID: 1234, sourceIPv4: 0x0a4d_0102, id: .max - 1,
                                rkey: 0xdead_beef, remoteAddress: 0x7fff_0000_1234, compareAdd: 5, swap: 6, immediate: 0x0102_0304,
                                length: 3, tenant: "alpha", payload: [1, 2, 3])
        XCTAssertEqual(try RemoteRequest.decode(req.encode()), req)
        let resp = RemoteResponse(status: .receiverNotReady, rnrDelayCode: 14, sourceQPN: 9, id: 77, tenant: "beta", payload: [9])
        XCTAssertEqual(try RemoteResponse.decode(resp.encode()), resp)
    }

    func testTruncatedAndMalformedMessagesAreErrorsNotCrashes() {
        let req = RemoteRequest(opcode: 0, sourceQPN: 1, sourceLID: 1, sourceIPv4: 1, id: 1, length: 0, tenant: "alpha").encode()
        for cut in 0..<req.count {
            XCTAssertThrowsError(try RemoteRequest.decode(Array(req.prefix(cut))), "cut at \(cut)")
        }
        var badName = req
        badName[badName.count - 5] = 0x01 // a control character in the tenant's name
        XCTAssertThrowsError(try RemoteRequest.decode(badName))
        var bigLID = req
        bigLID[8] = 1 // the LID field's high half
        XCTAssertThrowsError(try RemoteRequest.decode(bigLID))
        var status = RemoteResponse(status: .ok, sourceQPN: 1, id: 1, tenant: "a").encode()
        status[1] = 99
        XCTAssertThrowsError(try RemoteResponse.decode(status))
        XCTAssertThrowsError(try RemoteResponse.decode(req), "a request is not a response")
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...80, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? RemoteRequest.decode(bytes)
            _ = try? RemoteResponse.decode(bytes)
        }
    }
}
