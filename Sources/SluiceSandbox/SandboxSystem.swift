#if canImport(Glibc)
import Glibc
#endif
import CCap
import CSeccomp

/// The capability sets of one thread, as bit masks indexed by capability number.
struct CapabilitySets: Equatable {
    var effective: UInt64 = 0
    var permitted: UInt64 = 0
    var inheritable: UInt64 = 0
}

/// Every libseccomp, libcap, prctl and credential call the sandbox makes
/// goes through one of these function values, so tests can force each one
/// to fail without root and without touching the test process. Each names
/// its C function. Calls return 0 on success or a positive errno (libseccomp's
/// negative returns and libc's -1/errno are both normalized to that).
struct SandboxSystem {
    // MARK: libseccomp

    /// `seccomp_init(3)`: a filter context with a default action; nil on failure.
    var seccompInit: (_ defaultAction: UInt32) -> scmp_filter_ctx?
    /// `seccomp_release(3)`.
    var seccompRelease: (_ ctx: scmp_filter_ctx) -> Void
    /// `seccomp_attr_set(3)`.
    var seccompAttrSet: (_ ctx: scmp_filter_ctx, _ attr: scmp_filter_attr, _ value: UInt32) -> Int32
    /// `seccomp_rule_add_array(3)` (the non-variadic form of `seccomp_rule_add`).
    var seccompRuleAdd: (_ ctx: scmp_filter_ctx, _ action: UInt32, _ syscall: Int32, _ args: [scmp_arg_cmp]) -> Int32
    /// `seccomp_load(3)`: installs the filter (with TSYNC when that attribute is set).
    var seccompLoad: (_ ctx: scmp_filter_ctx) -> Int32
    /// `seccomp_syscall_resolve_name(3)`: the native number, or nil for a name the architecture lacks.
    var resolveSyscallName: (_ name: String) -> Int32?
    /// `seccomp_syscall_resolve_num_arch(3)` for the native architecture.
    var resolveSyscallNumber: (_ number: Int32) -> String?

    // MARK: libcap and prctl

    /// `cap_prctl(3)`: libcap's non-variadic `prctl(2)` (Swift cannot call variadic C).
    var prctl: (_ option: Int32, _ arg2: UInt) -> Int32
    /// `cap_get_proc(3)` and `cap_get_flag(3)`: the calling thread's sets; nil on failure.
    var capabilities: () -> CapabilitySets?
    /// `cap_init(3)`, `cap_set_flag(3)` and `cap_set_proc(3)`: replaces the calling thread's sets.
    var setCapabilities: (_ sets: CapabilitySets) -> Int32
    /// `cap_get_bound(3)`: 1 if `cap` is in the bounding set, 0 if not, -1 if unknown.
    var capabilityInBoundingSet: (_ cap: Int32) -> Int32
    /// `cap_drop_bound(3)`.
    var dropBoundingCapability: (_ cap: Int32) -> Int32
    /// `cap_reset_ambient(3)`.
    var resetAmbientCapabilities: () -> Int32
    /// `cap_max_bits(3)`: how many capabilities this kernel knows.
    var capabilityCount: () -> Int32
    /// `cap_from_name(3)`.
    var capabilityNumber: (_ name: String) -> Int32?
    /// `cap_to_name(3)`.
    var capabilityName: (_ cap: Int32) -> String

    // MARK: credentials

    /// `getpwnam_r(3)`: a user's uid and primary gid; nil when there is no such user.
    var lookUpUser: (_ name: String) -> (uid: uid_t, gid: gid_t)?
    /// `setgroups(2)` (glibc applies it to every thread).
    var setGroups: (_ groups: [gid_t]) -> Int32
    /// `setgid(2)`: with CAP_SETGID it sets the real, effective and saved
    /// gid (glibc applies it to every thread).
    var setGID: (_ gid: gid_t) -> Int32
    /// `setuid(2)`: with CAP_SETUID it sets the real, effective and saved
    /// uid, which clears every thread's capabilities unless kept
    /// (glibc applies it to every thread).
    var setUID: (_ uid: uid_t) -> Int32

    // MARK: signals and threads

    /// `sigaction(2)` with `SA_SIGINFO` and `flags`; the previous action is kept for `restoreSignal`.
    var installSignalHandler: (_ signal: Int32, _ handler: SignalHandler, _ flags: Int32) -> Int32
    /// `sigaction(2)`: `SIG_IGN` first, which discards an instance still
    /// pending in a thread that blocks it, then the action `installSignalHandler` replaced.
    var restoreSignal: (_ signal: Int32) -> Int32
    /// `sigaction(2)` with `SIG_DFL`.
    var defaultSignalAction: (_ signal: Int32) -> Int32
    /// `tgkill(2)`: sends `signal` to one thread of this process.
    var signalThread: (_ tid: Int32, _ signal: Int32) -> Int32
    /// `getpid(2)`.
    var processID: () -> Int32
    /// `gettid(2)`.
    var threadID: () -> Int32
    /// The ids of this process's threads (`/proc/self/task`).
    var threadIDs: () -> [Int32]
    /// The text of `/proc/self/task/<tid>/status`, nil if the thread is gone.
    var threadStatus: (_ tid: Int32) -> String?
    /// The text of `/proc/self/status`.
    var processStatus: () -> String?
    /// `nanosleep(2)`, while waiting for other threads.
    var sleepMicroseconds: (_ us: UInt32) -> Void
}

typealias SignalHandler = @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void

extension SandboxSystem {
    /// The real calls.
    static let live = SandboxSystem(
        seccompInit: { seccomp_init($0) },
        seccompRelease: { seccomp_release($0) },
        seccompAttrSet: { ctx, attr, value in -seccomp_attr_set(ctx, attr, value) },
        seccompRuleAdd: { ctx, action, syscall, args in
            args.withUnsafeBufferPointer { buf in
                -seccomp_rule_add_array(ctx, action, syscall, UInt32(buf.count), buf.baseAddress)
            }
        },
        seccompLoad: { -seccomp_load($0) },
        resolveSyscallName: { name in
            let n = seccomp_syscall_resolve_name(name)
            return n == __NR_SCMP_ERROR ? nil : n
        },
        resolveSyscallNumber: { number in
            guard let p = seccomp_syscall_resolve_num_arch(UInt32(SCMP_ARCH_NATIVE), number) else { return nil }
            defer { free(p) }
            return String(cString: p)
        },
        prctl: { option, arg2 in
            cap_prctl(Int(option), Int(bitPattern: arg2), 0, 0, 0, 0) < 0 ? errno : 0
        },
        capabilities: {
            guard let caps = cap_get_proc() else { return nil }
            defer { cap_free(UnsafeMutableRawPointer(caps)) }
            var sets = CapabilitySets()
            for cap in 0..<min(cap_max_bits(), 64) {
                for (flag, keyPath) in [(CAP_EFFECTIVE, \CapabilitySets.effective), (CAP_PERMITTED, \.permitted),
                                        (CAP_INHERITABLE, \.inheritable)] {
                    var value = CAP_CLEAR
                    guard cap_get_flag(caps, cap_value_t(cap), flag, &value) == 0 else { return nil }
                    if value == CAP_SET { sets[keyPath: keyPath] |= 1 << UInt64(cap) }
                }
            }
            return sets
        },
        setCapabilities: { sets in
            guard let caps = cap_init() else { return errno }
            defer { cap_free(UnsafeMutableRawPointer(caps)) }
            for cap in 0..<min(cap_max_bits(), 64) {
                var value = cap_value_t(cap)
                for (flag, mask) in [(CAP_EFFECTIVE, sets.effective), (CAP_PERMITTED, sets.permitted),
                                     (CAP_INHERITABLE, sets.inheritable)] where mask & (1 << UInt64(cap)) != 0 {
                    guard cap_set_flag(caps, flag, 1, &value, CAP_SET) == 0 else { return errno }
                }
            }
            return cap_set_proc(caps) == 0 ? 0 : errno
        },
        capabilityInBoundingSet: { cap_get_bound(cap_value_t($0)) },
        dropBoundingCapability: { cap_drop_bound(cap_value_t($0)) == 0 ? 0 : errno },
        resetAmbientCapabilities: { cap_reset_ambient() == 0 ? 0 : errno },
        capabilityCount: { cap_max_bits() },
        capabilityNumber: { name in
            var cap: cap_value_t = 0
            return cap_from_name(name, &cap) == 0 ? cap : nil
        },
        capabilityName: { cap in
            guard let p = cap_to_name(cap_value_t(cap)) else { return "cap_\(cap)" }
            defer { cap_free(UnsafeMutableRawPointer(p)) }
            return String(cString: p)
        },
        lookUpUser: { name in
            var pw = passwd()
            var result: UnsafeMutablePointer<passwd>?
            var buf = [CChar](repeating: 0, count: 16384)
            guard getpwnam_r(name, &pw, &buf, buf.count, &result) == 0, result != nil else { return nil }
            return (pw.pw_uid, pw.pw_gid)
        },
        setGroups: { groups in
            groups.withUnsafeBufferPointer { Glibc.setgroups($0.count, $0.baseAddress) } == 0 ? 0 : errno
        },
        setGID: { Glibc.setgid($0) == 0 ? 0 : errno },
        setUID: { Glibc.setuid($0) == 0 ? 0 : errno },
        installSignalHandler: { signal, handler, flags in
            var action = sigaction()
            action.__sigaction_handler.sa_sigaction = handler
            action.sa_flags = SA_SIGINFO | flags
            sigemptyset(&action.sa_mask)
            var previous = sigaction()
            guard sigaction(signal, &action, &previous) == 0 else { return errno }
            SavedSignalActions.shared.actions[signal] = previous
            return 0
        },
        restoreSignal: { signal in
            var ignore = sigaction()
            ignore.__sigaction_handler.sa_handler = SIG_IGN
            sigemptyset(&ignore.sa_mask)
            guard sigaction(signal, &ignore, nil) == 0 else { return errno }
            guard var previous = SavedSignalActions.shared.actions.removeValue(forKey: signal) else { return 0 }
            return sigaction(signal, &previous, nil) == 0 ? 0 : errno
        },
        defaultSignalAction: { signal in
            var action = sigaction()
            action.__sigaction_handler.sa_handler = SIG_DFL
            sigemptyset(&action.sa_mask)
            return sigaction(signal, &action, nil) == 0 ? 0 : errno
        },
        signalThread: { tid, signal in GNU.tgkill(getpid(), tid, signal) == 0 ? 0 : errno },
        processID: { getpid() },
        threadID: { GNU.gettid() },
        threadIDs: {
            guard let dir = opendir("/proc/self/task") else { return [] }
            defer { closedir(dir) }
            var tids: [Int32] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if let tid = Int32(name) { tids.append(tid) }
            }
            return tids.sorted()
        },
        threadStatus: { tid in ProcFile.read("/proc/self/task/\(tid)/status") },
        processStatus: { ProcFile.read("/proc/self/status") },
        sleepMicroseconds: { _ = usleep($0) }
    )
}

/// glibc functions that Swift's Glibc module hides (it is not compiled with
/// _GNU_SOURCE). They are plain, non-variadic C functions, so calling them
/// through a pointer of their exact C type is sound.
enum GNU {
    private static let libc = dlopen(nil, RTLD_NOW)

    private static func symbol<T>(_ name: String, as type: T.Type) -> T {
        guard let p = dlsym(libc, name) else { fatalError("glibc has no \(name)") }
        return unsafeBitCast(p, to: type)
    }

    /// `tgkill(2)`: `int tgkill(pid_t tgid, pid_t tid, int sig)`.
    static let tgkill = symbol("tgkill", as: (@convention(c) (Int32, Int32, Int32) -> Int32).self)
    /// `gettid(2)`: `pid_t gettid(void)`.
    static let gettid = symbol("gettid", as: (@convention(c) () -> Int32).self)
}

/// The actions `installSignalHandler` replaced (used from the applying thread only).
final class SavedSignalActions: @unchecked Sendable {
    static let shared = SavedSignalActions()
    var actions: [Int32: sigaction] = [:]
}

/// Reads small files under /proc.
enum ProcFile {
    /// `open(2)` and `read(2)` until end of file; nil if the file cannot be opened.
    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
