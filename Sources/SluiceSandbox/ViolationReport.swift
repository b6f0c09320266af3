#if canImport(Glibc)
import Glibc
#endif
import CSeccomp

/// The SIGSYS report of `--sandbox enforce`. The filter traps a forbidden
/// call (SCMP_ACT_TRAP) instead of killing outright, so that this handler can
/// write `<program>: seccomp violation: syscall <name> (<number>)` to stderr
/// (and a second fd if given), then die by SIGSYS all the same: the handler
/// is installed with SA_RESETHAND, unblocks SIGSYS and raises it again.
///
/// The handler may run at any moment in any thread, so it only reads memory
/// prepared here before the filter is loaded (the syscall names come from
/// libseccomp now; resolving them then would not be async-signal-safe) and
/// calls write, sigprocmask, raise and _exit. It uses no Swift allocation,
/// reference counting or generics.
enum ViolationReport {
    static let slotSize = 32
    static let slotCount = 512

    // Layout of the memory the handler reads.
    private static let fdsOffset = 0            // 2 × Int32: stderr and an extra fd (-1 if none)
    private static let archOffset = 8           // UInt32: the native audit arch
    private static let prefixLengthOffset = 12  // Int32
    private static let prefixOffset = 16        // up to 200 bytes
    private static let archTextOffset = 224     // " (arch 0x", 9 bytes
    private static let scratchOffset = 256      // 64 bytes for the number and the newline
    private static let namesOffset = 320        // slotCount × slotSize, NUL-padded
    static let size = namesOffset + slotCount * slotSize

    /// Installs the SIGSYS handler with the names of every native syscall.
    static func install(program: String, extraFD: Int32?, system: SandboxSystem) throws {
        let m = ReportMemory.shared
        m.bytes.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        m.bytes.storeBytes(of: Int32(STDERR_FILENO), toByteOffset: fdsOffset, as: Int32.self)
        m.bytes.storeBytes(of: extraFD ?? -1, toByteOffset: fdsOffset + 4, as: Int32.self)
        m.bytes.storeBytes(of: seccomp_arch_native(), toByteOffset: archOffset, as: UInt32.self)
        let prefix = Array("\(program): seccomp violation: syscall ".utf8.prefix(200))
        m.bytes.storeBytes(of: Int32(prefix.count), toByteOffset: prefixLengthOffset, as: Int32.self)
        (m.bytes + prefixOffset).copyMemory(from: prefix, byteCount: prefix.count)
        (m.bytes + archTextOffset).copyMemory(from: Array(" (arch 0x".utf8), byteCount: 9)
        for n in 0..<slotCount {
            guard let name = system.resolveSyscallNumber(Int32(n)) else { continue }
            let bytes = Array(name.utf8.prefix(slotSize - 1))
            (m.bytes + namesOffset + n * slotSize).copyMemory(from: bytes, byteCount: bytes.count)
        }
        sigemptyset(m.sigsys)
        sigaddset(m.sigsys, SIGSYS)
        let e = system.installSignalHandler(SIGSYS, handleViolation, Int32(bitPattern: UInt32(SA_RESETHAND)))
        if e != 0 { throw SandboxError(step: .violationReport, call: "sigaction(SIGSYS)", errno: e) }
    }

    /// The name the report would give syscall `number` (for tests).
    static func reportedName(_ number: Int32) -> String? {
        guard number >= 0, number < slotCount else { return nil }
        let p = (ReportMemory.shared.bytes + namesOffset + Int(number) * slotSize).assumingMemoryBound(to: CChar.self)
        return p.pointee == 0 ? nil : String(cString: p)
    }

    fileprivate static func write(_ p: UnsafeRawPointer, _ count: Int) {
        let m = ReportMemory.shared.bytes
        for i in 0..<2 {
            let fd = m.load(fromByteOffset: fdsOffset + 4 * i, as: Int32.self)
            if fd >= 0 { _ = Glibc.write(fd, p, count) }
        }
    }

    fileprivate static func report(_ info: UnsafeMutablePointer<siginfo_t>?) {
        let m = ReportMemory.shared.bytes
        write(m + prefixOffset, Int(m.load(fromByteOffset: prefixLengthOffset, as: Int32.self)))
        var number: Int32 = -1
        var arch: UInt32 = 0
        if let info {
            number = info.pointee._sifields._sigsys._syscall
            arch = info.pointee._sifields._sigsys._arch
        }
        let native = info != nil && arch == m.load(fromByteOffset: archOffset, as: UInt32.self)
        var nameLength = 0
        if native && number >= 0 && number < Int32(slotCount) {
            let slot = m + namesOffset + Int(number) * slotSize
            while nameLength < slotSize && slot.load(fromByteOffset: nameLength, as: UInt8.self) != 0 { nameLength += 1 }
            write(slot, nameLength)
        }
        // "<name> (<number>)", "<number> (arch 0x<arch>)" for another ABI, then a newline.
        let s = m + scratchOffset
        var i = 0
        if nameLength > 0 { i = put(0x20, s, i); i = put(0x28, s, i) } // " ("
        if number < 0 { i = put(0x2d, s, i) }
        i = putNumber(UInt64(number.magnitude), radix: 10, s, i)
        if nameLength > 0 { i = put(0x29, s, i) }
        if !native {
            write(s, i)
            write(m + archTextOffset, 9)
            i = putNumber(UInt64(arch), radix: 16, s, 0)
            i = put(0x29, s, i)
        }
        i = put(0x0a, s, i)
        write(s, i)
    }

    private static func put(_ b: UInt8, _ s: UnsafeMutableRawPointer, _ i: Int) -> Int {
        guard i < 64 else { return i }
        s.storeBytes(of: b, toByteOffset: i, as: UInt8.self)
        return i + 1
    }

    private static func putNumber(_ value: UInt64, radix: UInt64, _ s: UnsafeMutableRawPointer, _ start: Int) -> Int {
        var digits: UInt64 = 1
        while value / digits >= radix { digits *= radix }
        var i = start
        while digits > 0 {
            let d = UInt8((value / digits) % radix)
            i = put(d < 10 ? 0x30 + d : 0x57 + d, s, i)
            digits /= radix
        }
        return i
    }
}

/// Memory the handler reads, allocated once and never freed.
private struct ReportMemory {
    let bytes: UnsafeMutableRawPointer
    let sigsys: UnsafeMutablePointer<sigset_t>

    static let shared = ReportMemory(
        bytes: UnsafeMutableRawPointer.allocate(byteCount: ViolationReport.size, alignment: 16),
        sigsys: UnsafeMutablePointer<sigset_t>.allocate(capacity: 1))
}

/// The SIGSYS handler (a C function pointer: it captures nothing).
private func handleViolation(_ signal: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    ViolationReport.report(info)
    // SA_RESETHAND made SIGSYS's action the default again; it is blocked while
    // this handler runs, so unblock it and raise it: the process dies by SIGSYS.
    sigprocmask(SIG_UNBLOCK, ReportMemory.shared.sigsys, nil)
    raise(SIGSYS)
    _exit(128 + SIGSYS)
}
