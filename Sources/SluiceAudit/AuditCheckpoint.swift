#if canImport(Glibc)
import Glibc
#endif
import Crypto

/// The operator's checkpoint key: the bytes of a key file, minus trailing
/// newlines. At least 16 bytes (`head -c 32 /dev/urandom > audit.key` is
/// right); the file must not be readable by other users.
public struct AuditKey: @unchecked Sendable {
    let key: SymmetricKey

    public init(bytes: [UInt8]) throws {
        var b = bytes
        while let last = b.last, last == 0x0a || last == 0x0d { b.removeLast() }
        guard b.count >= 16 else {
            throw AuditError("the checkpoint key has \(b.count) bytes; it needs at least 16 (head -c 32 /dev/urandom > key)")
        }
        key = SymmetricKey(data: b)
    }

    public init(file path: String) throws {
        let fd = try AuditSys.open(path, O_RDONLY)
        defer { AuditSys.close(fd) }
        let st = try AuditSys.status(of: fd, path: path)
        guard st.st_mode & 0o007 == 0 else {
            throw AuditError("\(path): the checkpoint key file is accessible to other users (mode \(String(st.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        do {
            try self.init(bytes: try AuditSys.pread(fd, count: 4096, offset: 0, path: path))
        } catch let e as AuditError {
            throw AuditError("\(path): \(e.message)")
        }
    }
}

/// A signed statement "the log's record `seq` has hash `hash`", one JSON line
/// in the checkpoint file:
///
///     {"hash":"<64 hex>","mac":"<64 hex>","seq":1234,"time":"2025-03-01T12:00:00.000000000Z"}
///
/// `mac` is HMAC-SHA256 under the operator's key of the bytes
/// `sluice-audit-checkpoint/1\n` followed by the line without its `mac`
/// member (`{"hash":…,"seq":…,"time":…}`, same canonical rules as records).
/// The prefix keeps a MAC made for something else from passing as one.
/// Because `hash` commits to every record up to `seq`, one authentic
/// checkpoint vouches for that whole prefix of the log.
public struct AuditCheckpoint: Equatable, Sendable {
    public var seq: UInt64
    public var hash: String
    public var time: String
    public var mac: String

    static let domain = Array("sluice-audit-checkpoint/1\n".utf8)

    func signedBytes() -> [UInt8] {
        var out = Self.domain
        out.append(0x7b)
        CanonicalJSON.appendKey("hash", to: &out)
        CanonicalJSON.appendString(hash, to: &out)
        out.append(0x2c)
        CanonicalJSON.appendKey("seq", to: &out)
        CanonicalJSON.appendInteger(seq, to: &out)
        out.append(0x2c)
        CanonicalJSON.appendKey("time", to: &out)
        CanonicalJSON.appendString(time, to: &out)
        out.append(0x7d)
        return out
    }

    public static func sign(seq: UInt64, hash: String, time: AuditTimestamp, key: AuditKey) -> AuditCheckpoint {
        var c = AuditCheckpoint(seq: seq, hash: hash, time: time.rfc3339, mac: "")
        c.mac = CanonicalJSON.hex(HMAC<SHA256>.authenticationCode(for: c.signedBytes(), using: key.key))
        return c
    }

    public func isAuthentic(under key: AuditKey) -> Bool {
        guard let macBytes = Self.unhex(mac) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(macBytes, authenticating: signedBytes(), using: key.key)
    }

    /// The line, without its newline.
    public var lineBytes: [UInt8] {
        var out = [UInt8]()
        out.append(0x7b)
        CanonicalJSON.appendKey("hash", to: &out)
        CanonicalJSON.appendString(hash, to: &out)
        out.append(0x2c)
        CanonicalJSON.appendKey("mac", to: &out)
        CanonicalJSON.appendString(mac, to: &out)
        out.append(0x2c)
        CanonicalJSON.appendKey("seq", to: &out)
        CanonicalJSON.appendInteger(seq, to: &out)
        out.append(0x2c)
        CanonicalJSON.appendKey("time", to: &out)
        CanonicalJSON.appendString(time, to: &out)
        out.append(0x7d)
        return out
    }

    /// Parses one line strictly: exactly these four members, in canonical form.
    public init(line: some Collection<UInt8>) throws {
        func fail(_ m: String) -> AuditRecordError { AuditRecordError(message: m) }
        let value: JSONValue
        do {
            value = try CanonicalJSON.parse(line)
        } catch let e as JSONSyntaxError {
            throw fail("not valid JSON: \(e)")
        }
        guard case .object(let o) = value else { throw fail("not a JSON object") }
        guard Set(o.keys) == ["hash", "mac", "seq", "time"] else {
            throw fail("a checkpoint has exactly the members hash, mac, seq, time")
        }
        guard case .string(let h) = o["hash"]!, CanonicalJSON.isLowerHex(h, count: 64) else { throw fail("\"hash\" is not 64 lowercase hex digits") }
        guard case .string(let m) = o["mac"]!, CanonicalJSON.isLowerHex(m, count: 64) else { throw fail("\"mac\" is not 64 lowercase hex digits") }
        guard case .number(let s) = o["seq"]!, let seq = UInt64(s) else { throw fail("\"seq\" is not an integer") }
        guard case .string(let t) = o["time"]!, AuditTimestamp(rfc3339: t) != nil else { throw fail("\"time\" is not an RFC 3339 time") }
        self.init(seq: seq, hash: h, time: t, mac: m)
        guard lineBytes.elementsEqual(line) else { throw fail("not in canonical form") }
    }

    init(seq: UInt64, hash: String, time: String, mac: String) {
        self.seq = seq
        self.hash = hash
        self.time = time
        self.mac = mac
    }

    static func unhex(_ s: String) -> [UInt8]? {
        let b = Array(s.utf8)
        guard b.count % 2 == 0 else { return nil }
        func v(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(b.count / 2)
        var i = 0
        while i < b.count {
            guard let hi = v(b[i]), let lo = v(b[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }
}
