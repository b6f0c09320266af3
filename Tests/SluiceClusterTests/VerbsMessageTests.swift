import XCTest
@testable import SluiceCluster

/// The messages verbs-backend routers exchange (connect, key query, answer,
/// revocation): exact round trips, and every malformed one an error.
final class VerbsMessageTests: XCTestCase {
    let connect = VerbsConnect(sourceQPN: 0xabcdef, sourceLID: 5001, sourceIPv4: 0x0a58_0002, targetQPN: 0x123456, epoch: .max - 3,
                               yourEpoch: 42, realQPN: 0xfedcba, realLID: 1500, realGID: Array(1...16), sendPSN: 0xff_fffe,
                               operations: 0x7f, tenant: "alpha")
    let query = VerbsKeyQuery(sourceQPN: 7, sourceLID: 6001, sourceIPv4: 0, targetQPN: 8, id: 99, rkey: 0xdead_beef, access: 2,
                              tenant: "beta")
    let answer = VerbsKeyAnswer(sourceQPN: 8, targetQPN: 7, id: 99, rkey: 0xdead_beef, granted: true, access: 6, realRkey: 0x1234_5678,
                                virtualBase: 0x7f00_0000_1000, length: 1 << 20, realBase: 0x7e00_0000_2000)
    let revoke = VerbsKeyRevoke(sourceQPN: 8, targetQPN: 7, rkey: 0xdead_beef)

    func testEveryMessageRoundTrips() throws {
        XCTAssertEqual(try VerbsConnect.decode(connect.encode()), connect)
        XCTAssertEqual(try VerbsKeyQuery.decode(query.encode()), query)
        XCTAssertEqual(try VerbsKeyAnswer.decode(answer.encode()), answer)
        let refused = VerbsKeyAnswer(sourceQPN: 8, targetQPN: 7, id: 100, rkey: 1, granted: false)
        XCTAssertEqual(try VerbsKeyAnswer.decode(refused.encode()), refused)
        XCTAssertEqual(try VerbsKeyRevoke.decode(revoke.encode()), revoke)
        // Each kind is distinct from the software fabric's request and response.
        let kinds = [connect.encode()[0], query.encode()[0], answer.encode()[0], revoke.encode()[0]]
        XCTAssertEqual(Set(kinds).count, 4)
        XCTAssertFalse(kinds.contains(RemoteRequest.kind))
        XCTAssertFalse(kinds.contains(RemoteResponse.kind))
    }

    func testTruncatedTrailingAndOutOfRangeMessagesAreErrors() {
        let all: [([UInt8], ([UInt8]) throws -> Any)] = [
            (connect.encode(), { try VerbsConnect.decode($0) }),
            (query.encode(), { try VerbsKeyQuery.decode($0) }),
            (answer.encode(), { try VerbsKeyAnswer.decode($0) }),
            (revoke.encode(), { try VerbsKeyRevoke.decode($0) }),
        ]
        for (bytes, decode) in all {
            for cut in 0..<bytes.count {
                XCTAssertThrowsError(try decode(Array(bytes.prefix(cut))), "cut at \(cut) of kind \(bytes[0])")
            }
            XCTAssertThrowsError(try decode(bytes + [0]), "a trailing byte, kind \(bytes[0])")
        }
        // Each decoder refuses the others' kinds.
        XCTAssertThrowsError(try VerbsConnect.decode(query.encode()))
        XCTAssertThrowsError(try VerbsKeyAnswer.decode(revoke.encode()))
        // A QPN or PSN above 24 bits, a LID above 16, a zero epoch.
        var c = connect.encode()
        c[4] = 1 // sourceQPN's top byte
        XCTAssertThrowsError(try VerbsConnect.decode(c))
        c = connect.encode()
        c[8] = 1 // sourceLID's high half
        XCTAssertThrowsError(try VerbsConnect.decode(c))
        var zero = connect
        zero.epoch = 0
        XCTAssertThrowsError(try VerbsConnect.decode(zero.encode()))
        // The key messages' QPNs too (each message's first field after the
        // kind word is the source QPN).
        for (bytes, decode) in all.dropFirst() {
            var b = bytes
            b[4] = 1
            XCTAssertThrowsError(try decode(b), "a source QPN above 24 bits, kind \(bytes[0])")
        }
        var flag = answer.encode()
        flag[1] = 2
        XCTAssertThrowsError(try VerbsKeyAnswer.decode(flag))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...100, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? VerbsConnect.decode(bytes)
            _ = try? VerbsKeyQuery.decode(bytes)
            _ = try? VerbsKeyAnswer.decode(bytes)
            _ = try? VerbsKeyRevoke.decode(bytes)
        }
    }
}
