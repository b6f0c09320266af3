import Foundation
@testable import SluiceSandbox

/// Calls a syscall by number with raw register values, as bubblewrap's
/// try-syscall.c does, so a probe can pass exactly the arguments a rule pins.
enum RawSyscall {
    typealias Function = @convention(c) (Int, Int, Int, Int, Int, Int, Int) -> Int

    // SAFETY: glibc's syscall(2) is variadic, which Swift cannot call. Its
    // x86_64 implementation (sysdeps/unix/sysv/linux/x86_64/syscall.S) only
    // moves rdi, rsi, rdx, rcx, r8, r9 and the first stack slot into the
    // kernel's registers; a non-variadic call with seven integer arguments
    // puts them in exactly those places, and %al (the vector-register count
    // of a variadic call) is not read.
    static let function: Function = {
        guard let p = dlsym(dlopen(nil, RTLD_NOW), "syscall") else { fatalError("no syscall(2) in libc") }
        return unsafeBitCast(p, to: Function.self)
    }()

    /// The native number of `name` (libseccomp's table, as the filter uses).
    static func number(_ name: String) -> Int {
        guard let n = SandboxSystem.live.resolveSyscallName(name) else { fatalError("unknown syscall \(name)") }
        return Int(n)
    }

    /// (return value, errno): errno is 0 when the call succeeded.
    static func call(_ number: Int, _ args: [Int]) -> (result: Int, errno: Int32) {
        var a = args
        while a.count < 6 { a.append(0) }
        errno = 0
        let r = function(number, a[0], a[1], a[2], a[3], a[4], a[5])
        return (r, r == -1 ? errno : 0)
    }
}

/// Memory and strings the probes point at, made before the filter is loaded.
final class ProbeArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    /// A zeroed, page-aligned buffer.
    func buffer(_ size: Int = 4096) -> Int {
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        blocks.append(p)
        return Int(bitPattern: p)
    }

    /// A NUL-terminated copy of `s`.
    func string(_ s: String) -> Int {
        let bytes = Array(s.utf8) + [0]
        let p = UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 8)
        p.copyMemory(from: bytes, byteCount: bytes.count)
        blocks.append(p)
        return Int(bitPattern: p)
    }

    /// An anonymous private page from mmap (for mprotect, madvise, munmap).
    func page() -> Int {
        Int(bitPattern: mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
    }
}
