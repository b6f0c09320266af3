/// Work-request operations a policy may allow. Bit `n` is libibverbs'
/// `IBV_WR_*` opcode `n`, so the data path checks a work request with one
/// shift and one AND on a mask computed when the QP connected.
public struct OperationSet: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let write = OperationSet(rawValue: 1 << 0)          // IBV_WR_RDMA_WRITE
    public static let writeWithImm = OperationSet(rawValue: 1 << 1)   // IBV_WR_RDMA_WRITE_WITH_IMM
    public static let send = OperationSet(rawValue: 1 << 2)           // IBV_WR_SEND
    public static let sendWithImm = OperationSet(rawValue: 1 << 3)    // IBV_WR_SEND_WITH_IMM
    public static let read = OperationSet(rawValue: 1 << 4)           // IBV_WR_RDMA_READ
    public static let compareSwap = OperationSet(rawValue: 1 << 5)    // IBV_WR_ATOMIC_CMP_AND_SWP
    public static let fetchAdd = OperationSet(rawValue: 1 << 6)       // IBV_WR_ATOMIC_FETCH_AND_ADD

    public static let all: OperationSet = [.send, .sendWithImm, .write, .writeWithImm, .read, .compareSwap, .fetchAdd]

    /// Policy names, in the order the documentation lists them.
    public static let names: [(String, OperationSet)] = [
        ("send", .send), ("sendWithImm", .sendWithImm), ("write", .write), ("writeWithImm", .writeWithImm),
        ("read", .read), ("compareSwap", .compareSwap), ("fetchAdd", .fetchAdd),
    ]

    public init?(name: String) {
        guard let op = OperationSet.names.first(where: { $0.0 == name }) else { return nil }
        self = op.1
    }

    /// The operation for an `IBV_WR_*` opcode; nil for opcodes policies do not
    /// name (local invalidate, bind MW, TSO...), which no policy allows.
    @inlinable
    public static func wireOpcode(_ op: UInt32) -> OperationSet? {
        op < 7 ? OperationSet(rawValue: 1 << op) : nil
    }

    /// The data-path check: whether this set allows the `IBV_WR_*` opcode.
    /// No allocation, no lookup: a compare, a shift and an AND.
    @inlinable
    public func allowsWireOpcode(_ op: UInt32) -> Bool {
        op < 7 && rawValue & (1 << op) != 0
    }

    /// Policy names of the members, in documentation order.
    public var names: [String] { OperationSet.names.filter { contains($0.1) }.map(\.0) }

    /// `[send, write]`, or `[]`.
    public var description: String { "[" + names.joined(separator: ", ") + "]" }
}

/// Memory-region access flags a policy may allow. Raw values are libibverbs'
/// `IBV_ACCESS_*` bits, so a registration's flags are checked with masks.
public struct MemoryAccess: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let localWrite = MemoryAccess(rawValue: 1 << 0)       // IBV_ACCESS_LOCAL_WRITE
    public static let remoteWrite = MemoryAccess(rawValue: 1 << 1)      // IBV_ACCESS_REMOTE_WRITE
    public static let remoteRead = MemoryAccess(rawValue: 1 << 2)       // IBV_ACCESS_REMOTE_READ
    public static let remoteAtomic = MemoryAccess(rawValue: 1 << 3)     // IBV_ACCESS_REMOTE_ATOMIC
    public static let relaxedOrdering = MemoryAccess(rawValue: 1 << 20) // IBV_ACCESS_RELAXED_ORDERING

    /// `IBV_ACCESS_OPTIONAL_RANGE` (bits 20-29): flags a device may ignore,
    /// which only tune performance. Always tolerated.
    public static let optionalRange = MemoryAccess(rawValue: 0x3ff0_0000)

    /// What a policy that does not say gets: local writes only.
    public static let defaultAllowed: MemoryAccess = [.localWrite]

    public static let names: [(String, MemoryAccess)] = [
        ("localWrite", .localWrite), ("remoteWrite", .remoteWrite), ("remoteRead", .remoteRead),
        ("remoteAtomic", .remoteAtomic), ("relaxedOrdering", .relaxedOrdering),
    ]

    /// Bits libibverbs defines that policies do not name; a registration that
    /// asks for one is refused, and the reason names it.
    static let unnamedBits: [(String, UInt32)] = [
        ("mwBind", 1 << 4), ("zeroBased", 1 << 5), ("onDemand", 1 << 6), ("hugetlb", 1 << 7),
    ]

    public init?(name: String) {
        guard let a = MemoryAccess.names.first(where: { $0.0 == name }) else { return nil }
        self = a.1
    }

    /// Names of the bits set, policy names first, then other known bits, then hex.
    public var names: [String] {
        var out = MemoryAccess.names.filter { contains($0.1) }.map(\.0)
        var rest = rawValue & ~MemoryAccess.names.reduce(0) { $0 | $1.1.rawValue }
        for (name, bit) in MemoryAccess.unnamedBits where rest & bit != 0 {
            out.append(name)
            rest &= ~bit
        }
        var bit: UInt32 = 1
        while rest != 0 {
            if rest & bit != 0 {
                out.append("0x" + String(bit, radix: 16))
                rest &= ~bit
            }
            bit = bit &<< 1
        }
        return out
    }

    public var description: String { "[" + names.joined(separator: ", ") + "]" }
}
