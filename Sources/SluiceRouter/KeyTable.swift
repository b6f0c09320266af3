/// The memory regions of a session by virtual key (lkey or rkey), looked up
/// on every work request. Keys are minted by the router uniformly at random
/// and are never 0, so their low bits index an open-addressing table
/// directly: a lookup is usually one probe into one flat array, where a
/// `Dictionary` hashes with SipHash and keeps keys, values and occupancy in
/// separate arrays (three cache misses per lookup once a tenant has
/// thousands of regions). Linear probing, at most half full, deletion by
/// shifting back the entries after the hole (no tombstones).
struct KeyTable<Value: AnyObject> {
    private struct Slot {
        var key: UInt32 = 0 // 0: empty
        var region: Value?
    }

    private var slots = [Slot](repeating: Slot(), count: 16)
    private var mask = 15
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    subscript(key: UInt32) -> Value? {
        get {
            guard key != 0 else { return nil }
            var i = Int(truncatingIfNeeded: key) & mask
            while true {
                let k = slots[i].key
                if k == key { return slots[i].region }
                if k == 0 { return nil }
                i = (i + 1) & mask
            }
        }
        set {
            precondition(key != 0, "key 0 is never minted")
            if let region = newValue { insert(key, region) } else { remove(key) }
        }
    }

    mutating func removeAll() {
        slots = [Slot](repeating: Slot(), count: 16)
        mask = 15
        count = 0
    }

    /// Every value, in table order.
    var values: [Value] { slots.compactMap { $0.key == 0 ? nil : $0.region } }

    private mutating func insert(_ key: UInt32, _ region: Value) {
        var i = Int(truncatingIfNeeded: key) & mask
        while slots[i].key != 0 {
            if slots[i].key == key {
                slots[i].region = region
                return
            }
            i = (i + 1) & mask
        }
        slots[i] = Slot(key: key, region: region)
        count += 1
        if count * 2 > slots.count { grow() }
    }

    private mutating func remove(_ key: UInt32) {
        var i = Int(truncatingIfNeeded: key) & mask
        while slots[i].key != key {
            if slots[i].key == 0 { return }
            i = (i + 1) & mask
        }
        slots[i] = Slot()
        count -= 1
        // Shift back the run after the hole, so every remaining key stays
        // reachable from its home slot without passing an empty one.
        var hole = i
        var j = (i + 1) & mask
        while slots[j].key != 0 {
            let home = Int(truncatingIfNeeded: slots[j].key) & mask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j)
            if !stays {
                slots[hole] = slots[j]
                slots[j] = Slot()
                hole = j
            }
            j = (j + 1) & mask
        }
    }

    private mutating func grow() {
        let old = slots
        slots = [Slot](repeating: Slot(), count: old.count * 2)
        mask = slots.count - 1
        count = 0
        for s in old where s.key != 0 { insert(s.key, s.region!) }
    }
}
