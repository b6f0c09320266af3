import Crypto
import XCTest
@testable import SluiceCluster

final class LinkFramingTests: XCTestCase {
    func header(magic: UInt32 = LinkFrame.magic, version: UInt8 = 1, type: UInt8 = 16, reserved: UInt16 = 0,
                length: UInt32 = 0, stream: UInt32 = 0) -> [UInt8] {
        var b: [UInt8] = []
        b.appendBE(magic)
        b.append(version)
        b.append(type)
        b.appendBE(reserved)
        b.appendBE(length)
        b.appendBE(stream)
        return b
    }

    func decode(_ bytes: [UInt8], key: SymmetricKey? = SymmetricKey(size: .bits256), max: Int = LinkFrame.maxBody) -> Result<[LinkFrame.Frame], LinkError> {
        var d = FrameDecoder()
        d.key = key
        d.maxBody = max
        d.feed(bytes)
        var out: [LinkFrame.Frame] = []
        do {
            while let f = try d.next() { out.append(f) }
            return .success(out)
        } catch let e as LinkError {
            return .failure(e)
        } catch {
            XCTFail("unexpected \(error)")
            return .success([])
        }
    }

    func testFramesRoundTripWithTagsInOrder() throws {
        let key = SymmetricKey(size: .bits256)
        var enc = FrameEncoder()
        enc.key = key
        let frames = [LinkFrame.Frame(.data, stream: 7, body: Array(0..<200)), LinkFrame.Frame(.ping), LinkFrame.Frame(.data, stream: 0xffff_ffff, body: [1])]
        let bytes = frames.flatMap { enc.encode($0) }
        var d = FrameDecoder()
        d.key = key
        d.maxBody = LinkFrame.maxBody
        // One byte at a time: a frame is returned only when complete.
        var got: [LinkFrame.Frame] = []
        for b in bytes {
            d.feed([b])
            while let f = try d.next() { got.append(f) }
        }
        XCTAssertEqual(got, frames)
        XCTAssertEqual(d.buffered, 0)
    }

    func testBadMagicVersionReservedTypeAndLengthAreRejectedWithTheReason() {
        let cases: [([UInt8], String)] = [
            (header(magic: 0x4745_5420), "bad magic 0x47455420"),         // "GET " : an HTTP client
            (header(version: 2), "unsupported version 2"),
            (header(type: 99), "unknown frame type 99"),
            (header(reserved: 1), "reserved header bytes are not zero"),
            (header(type: 32, length: UInt32(LinkFrame.maxBody + 1)), "frame length \(LinkFrame.maxBody + 1) exceeds the limit"),
            (header(type: 32, length: 0xffff_ffff), "frame length 4294967295 exceeds the limit"),
        ]
        for (bytes, reason) in cases {
            guard case .failure(let e) = decode(bytes) else { return XCTFail("accepted: \(reason)") }
            XCTAssert("\(e)".contains(reason), "\(e) does not say \(reason)")
        }
    }

    func testAnOversizedLengthIsRejectedFromTheHeaderAloneBeforeTheBody() {
        // No body follows: the decoder must not wait for (or buffer) 4 GiB.
        guard case .failure = decode(header(type: 1, length: 100_000), key: nil, max: LinkFrame.maxHandshakeBody) else {
            return XCTFail("a 100 kB handshake frame was not refused from its header")
        }
    }

    func testATruncatedFrameIsIncompleteNotAnError() throws {
        let key = SymmetricKey(size: .bits256)
        var enc = FrameEncoder()
        enc.key = key
        let bytes = enc.encode(.init(.data, stream: 1, body: Array(repeating: 9, count: 1000)))
        for cut in [1, 15, 16, 17, 500, bytes.count - 1] {
            guard case .success(let frames) = decode(Array(bytes.prefix(cut)), key: key) else { return XCTFail("cut at \(cut) threw") }
            XCTAssertEqual(frames, [], "cut at \(cut)")
        }
    }

    func testATamperedReplayedOrUntaggedFrameFailsAuthentication() {
        let key = SymmetricKey(size: .bits256)
        var enc = FrameEncoder()
        enc.key = key
        let one = enc.encode(.init(.data, stream: 3, body: [1, 2, 3]))
        var flipped = one
        flipped[17] ^= 1
        guard case .failure(.authenticationFailed) = decode(flipped, key: key) else { return XCTFail("a changed body was accepted") }
        // The same frame twice: the second has the wrong sequence number.
        guard case .failure(.authenticationFailed) = decode(one + one, key: key) else { return XCTFail("a replayed frame was accepted") }
        // A frame tagged under another key (another link, or no key at all).
        guard case .failure(.authenticationFailed) = decode(one, key: SymmetricKey(size: .bits256)) else { return XCTFail("another key's frame was accepted") }
        var plain = FrameEncoder()
        guard case .failure = decode(plain.encode(.init(.data, stream: 3, body: [1, 2, 3])) + [UInt8](repeating: 0, count: 16), key: key) else {
            return XCTFail("an untagged frame was accepted")
        }
    }

    func testFabricFramesBeforeTheHandshakeAndHandshakeFramesAfterAreViolations() {
        guard case .failure(.protocolViolation(let a)) = decode(header(type: 32), key: nil, max: 512) else { return XCTFail() }
        XCTAssert(a.contains("before the handshake"), a)
        guard case .failure(.protocolViolation(let b)) = decode(header(type: 1), key: SymmetricKey(size: .bits256)) else { return XCTFail() }
        XCTAssert(b.contains("authenticated link"), b)
    }

    func testADecoderThatFailedStaysFailed() {
        var d = FrameDecoder()
        d.feed(header(magic: 1))
        XCTAssertThrowsError(try d.next())
        d.feed(header(type: 1))
        XCTAssertThrowsError(try d.next(), "a failed decoder accepted more input")
    }

    func testRandomGarbageNeverCrashesTheDecoder() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let n = Int.random(in: 0...64, using: &rng)
            var bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            // Often start with a valid magic and version, to reach deeper checks.
            if Bool.random(using: &rng), bytes.count >= 5 {
                bytes.replaceSubrange(0..<5, with: header().prefix(5))
            }
            _ = decode(bytes, key: Bool.random(using: &rng) ? SymmetricKey(size: .bits256) : nil,
                       max: Bool.random(using: &rng) ? LinkFrame.maxBody : LinkFrame.maxHandshakeBody)
        }
    }
}
