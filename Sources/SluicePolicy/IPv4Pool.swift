/// The IPv4 block a tenant's virtual endpoint addresses are drawn from
/// (`10.77.1.0/24`). Tenants see the address as GID 0, `::ffff:a.b.c.d`.
public struct IPv4Pool: Hashable, Sendable, CustomStringConvertible {
    /// The network address, host byte order, host bits zero.
    public let network: UInt32
    public let prefixLength: Int

    /// Shortest and longest prefix a pool may have: a /30 leaves two usable
    /// addresses, a /8 is already more endpoints than a router serves.
    public static let prefixRange = 8...30

    /// Blocks an address pool may not touch: tenants would see addresses
    /// that mean something else to their own stack.
    static let reserved: [(IPv4Pool, String)] = [
        (IPv4Pool(unchecked: 0x0000_0000, 8), "\"this network\""),
        (IPv4Pool(unchecked: 0x7f00_0000, 8), "loopback"),
        (IPv4Pool(unchecked: 0xe000_0000, 4), "multicast"),
        (IPv4Pool(unchecked: 0xf000_0000, 4), "reserved and broadcast"),
    ]

    init(unchecked network: UInt32, _ prefixLength: Int) {
        self.network = network
        self.prefixLength = prefixLength
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength) }
    /// The broadcast-like last address of the block.
    public var last: UInt32 { network | ~mask }
    /// Addresses an endpoint may be given: the block without its first and
    /// last address, as on a real subnet.
    public var usableAddresses: ClosedRange<UInt32> { (network + 1)...(last - 1) }

    public func contains(_ address: UInt32) -> Bool { address & mask == network }
    public func overlaps(_ other: IPv4Pool) -> Bool { contains(other.network) || other.contains(network) }

    public var description: String { "\(IPv4Pool.dotted(network))/\(prefixLength)" }

    public static func dotted(_ a: UInt32) -> String {
        "\(a >> 24).\((a >> 16) & 0xff).\((a >> 8) & 0xff).\(a & 0xff)"
    }

    /// Parses `a.b.c.d/n`; the failure is a sentence for a field error.
    public static func parse(_ text: String) -> Result<IPv4Pool, PoolError> {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = parseDotted(parts[0]), let prefix = parseDecimal(parts[1], max: 32) else {
            return .failure(.malformed)
        }
        guard prefixRange.contains(prefix) else { return .failure(.prefixOutOfRange) }
        let pool = IPv4Pool(unchecked: address & IPv4Pool(unchecked: 0, prefix).mask, prefix)
        guard pool.network == address else { return .failure(.hostBitsSet(network: pool)) }
        if let (block, what) = reserved.first(where: { $0.0.overlaps(pool) }) {
            return .failure(.reserved(block: block, what: what))
        }
        return .success(pool)
    }

    public enum PoolError: Error, Equatable, Sendable, CustomStringConvertible {
        case malformed
        case prefixOutOfRange
        case hostBitsSet(network: IPv4Pool)
        case reserved(block: IPv4Pool, what: String)

        public var description: String {
            switch self {
            case .malformed:
                return "must be an IPv4 block in CIDR form, e.g. 10.77.1.0/24"
            case .prefixOutOfRange:
                return "the prefix length must be from \(IPv4Pool.prefixRange.lowerBound) to \(IPv4Pool.prefixRange.upperBound)"
            case .hostBitsSet(let network):
                return "host bits are set; the block is \(network)"
            case .reserved(let block, let what):
                return "overlaps \(block) (\(what))"
            }
        }
    }

    private static func parseDotted(_ text: Substring) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for o in octets {
            guard let n = parseDecimal(o, max: 255) else { return nil }
            value = value << 8 | UInt32(n)
        }
        return value
    }

    /// 1-3 ASCII digits, no leading zero (`010` is octal to some parsers).
    private static func parseDecimal(_ text: Substring, max: Int) -> Int? {
        guard (1...3).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }),
              text == "0" || !text.hasPrefix("0"), let n = Int(text), n <= max else { return nil }
        return n
    }
}
