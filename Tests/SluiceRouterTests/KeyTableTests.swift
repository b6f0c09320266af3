import XCTest
@testable import SluiceRouter

/// The flat key table against a Dictionary model: same answers after every
/// step of long random sequences, with keys chosen to collide.
final class KeyTableTests: XCTestCase {
    final class Box {
        let id: Int
        init(_ id: Int) { self.id = id }
    }

    /// xorshift64*: the same sequence on every run.
    struct Seeded: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
    }

    func testInsertLookupAndRemoveMatchADictionary() {
        var rng = Seeded(state: 0x5eed)
        var table = KeyTable<Box>()
        var model: [UInt32: Box] = [:]
        // Few distinct low bits, so runs form, wrap around the end of the
        // table and are shifted back on removal.
        func key() -> UInt32 { UInt32.random(in: 1...40, using: &rng) << (UInt32.random(in: 0...1, using: &rng) == 0 ? 0 : 20) | UInt32.random(in: 0...3, using: &rng) << 28 }
        for step in 0..<20_000 {
            let k = key()
            if k == 0 { continue }
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<5:
                let b = Box(step)
                table[k] = b
                model[k] = b
            case 5..<8:
                table[k] = nil
                model[k] = nil
            default:
                table.removeAll()
                model.removeAll()
                if step % 3 != 0 { continue }
            }
            XCTAssertEqual(table.count, model.count, "step \(step)")
            // Every key ever used, present or not.
            for probe in model.keys { XCTAssertTrue(table[probe] === model[probe], "step \(step) key \(probe)") }
            let absent = key()
            XCTAssertTrue(table[absent] === model[absent], "step \(step) absent \(absent)")
        }
        XCTAssertEqual(Set(table.values.map(\.id)), Set(model.values.map(\.id)))
    }

    func testKeyZeroIsNeverFoundAndManyKeysGrowTheTable() {
        var table = KeyTable<Box>()
        XCTAssertNil(table[0])
        var rng = Seeded(state: 42)
        var keys: [UInt32] = []
        for i in 0..<10_000 {
            var k: UInt32 = 0
            while k == 0 || table[k] != nil { k = UInt32.random(in: 1...UInt32.max, using: &rng) }
            table[k] = Box(i)
            keys.append(k)
        }
        XCTAssertEqual(table.count, 10_000)
        for (i, k) in keys.enumerated() { XCTAssertEqual(table[k]?.id, i) }
        for k in keys where k % 2 == 0 { table[k] = nil }
        for (i, k) in keys.enumerated() { XCTAssertEqual(table[k]?.id, k % 2 == 0 ? nil : i) }
        XCTAssertNil(table[0])
    }
}
