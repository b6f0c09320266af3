import Foundation
@testable import SluiceSandbox

/// The errno the test variant of the filter answers a refused call with.
/// No syscall a probe makes returns it on its own ("memory page has hardware
/// error"), so seeing it proves the filter refused the call.
let refusalErrno: Int32 = 133 // EHWPOISON

/// One call tried inside the sandboxed child.
struct Probe {
    enum Expect: Equatable {
        /// Runs: succeeds, or fails with an errno of its own (EBADF on fd -1…).
        case allowed
        /// The filter refuses it: -1 with `refusalErrno`.
        case refused
        /// The filter answers with this errno (clone3 → ENOSYS).
        case filterErrno(Int32)
    }

    enum Kind {
        /// A raw syscall with these arguments; `after` cleans up (closes an fd it made).
        case raw([Int], after: ((Int) -> Void)?)
        /// pthread_create and join: clone3 refused with ENOSYS, clone with CLONE_THREAD,
        /// the new thread's set_robust_list and rseq, and the thread's exit.
        case thread
        /// A signal handler that returns (rt_sigreturn), raised with raise(3) (tgkill).
        case signalReturn
        /// Proven by the child ending with status 0 (exit_group).
        case childExit
    }

    var syscall: String
    var label: String
    var expect: Expect
    var kind: Kind
}

private func p(_ syscall: String, _ label: String, _ expect: Probe.Expect, _ args: [Int],
               after: ((Int) -> Void)? = nil) -> Probe {
    Probe(syscall: syscall, label: label, expect: expect, kind: .raw(args, after: after))
}

private let closeResult: (Int) -> Void = { fd in if fd >= 0 { close(Int32(fd)) } }

/// The probes. Every syscall the data file allows has at least one allowed
/// probe with harmless arguments, every pinned argument a probe with a
/// changed value that must be refused, every forbidden syscall a probe that
/// would fail harmlessly if it ran. `FilterMatchesDataFileTests` checks this
/// catalog against the file, so a new entry without probes fails the tests.
enum ProbeCatalog {
    static func make(_ a: ProbeArena, multiHost: Bool, verbsDevice: Bool = false, nestedVerbs: Bool = false) -> [Probe] {
        let buf = a.buffer(), buf2 = a.buffer(), fds = a.buffer(), len = a.buffer()
        UnsafeMutableRawPointer(bitPattern: len)!.storeBytes(of: UInt32(12), as: UInt32.self)
        let missing = a.string("/nonexistent-sluice-probe/file")
        let missing2 = a.string("/nonexistent-sluice-probe/other")
        let status = a.string("/proc/self/status")
        let empty = a.string("")
        let page = a.page(), page2 = a.page(), page3 = a.page()
        let kernelSigaction = a.buffer() // zeroed: SIG_DFL, no flags, empty mask
        let futexWord = a.buffer()
        let pid = Int(getpid())
        let tid = Int(GNU.gettid())
        let fdPair: (Int) -> Void = { r in
            guard r == 0 else { return }
            let p = UnsafeMutableRawPointer(bitPattern: fds)!
            close(p.load(as: Int32.self))
            close(p.load(fromByteOffset: 4, as: Int32.self))
        }
        let AT_FDCWD = -100, AT_EMPTY_PATH = 0x1000
        let rdonly = 0, wronly = 1, rdwr = 2, creat = 0o100, trunc = 0o1000, append = 0o2000, cloexec = 0o2000000
        let sockStream = 1, sockDgram = 2
        let afUnix = 1, afInet = 2, afInet6 = 10, afNetlink = 16, afPacket = 17
        let cloneThread = 0x10000, cloneSighand = 0x800, cloneVfork = 0x4000, cloneNewuser = 0x1000_0000, cloneNewns = 0x20000
        let inetOutcome: Probe.Expect = multiHost ? .allowed : .refused
        let deviceOutcome: Probe.Expect = verbsDevice ? .allowed : .refused
        let nestedOutcome: Probe.Expect = nestedVerbs ? .allowed : .refused

        var probes: [Probe] = [
            // event-loop
            p("epoll_wait", "bad epfd", .allowed, [-1, buf, 1, 0]),
            p("epoll_ctl", "bad epfd", .allowed, [-1, 1, -1, buf]),
            p("read", "fd -1", .allowed, [-1, buf, 1]),
            p("write", "fd -1", .allowed, [-1, buf, 1]),
            p("close", "fd -1", .allowed, [-1]),
            p("recvmsg", "fd -1", .allowed, [-1, buf, 0]),
            p("sendmsg", "fd -1", .allowed, [-1, buf, 0]),
            p("accept4", "fd -1", .allowed, [-1, 0, 0, 0]),
            p("getsockopt", "SOL_SOCKET/SO_PEERCRED on fd -1", .allowed, [-1, 1, 17, buf, len]),
            p("getsockopt", "SO_ERROR", inetOutcome, [-1, 1, 4, buf, len]),
            p("getsockopt", "SO_RCVBUF", .refused, [-1, 1, 8, buf, len]),
            p("getsockopt", "IPPROTO_TCP level", .refused, [-1, 6, 17, buf, len]),
            p("socketpair", "AF_UNIX datagram pair", .allowed, [afUnix, sockDgram, 0, fds], after: fdPair),
            p("socketpair", "AF_INET", .refused, [afInet, sockStream, 0, fds], after: fdPair),
            p("socket", "AF_UNIX", .allowed, [afUnix, sockStream, 0], after: closeResult),
            p("socket", "AF_UNIX with garbage in the high bits the kernel ignores", .allowed, [(1 << 32) | afUnix, sockStream, 0], after: closeResult),
            p("socket", "AF_INET", inetOutcome, [afInet, sockStream, 0], after: closeResult),
            p("socket", "AF_INET6", inetOutcome, [afInet6, sockStream, 0], after: closeResult),
            p("socket", "AF_INET with garbage in the high bits", inetOutcome, [(1 << 32) | afInet, sockStream, 0], after: closeResult),
            p("socket", "AF_NETLINK", .refused, [afNetlink, 3, 0], after: closeResult),
            p("socket", "AF_PACKET", .refused, [afPacket, 3, 0], after: closeResult),
            p("connect", "sockaddr_in length on fd -1", inetOutcome, [-1, buf, 16]),
            p("connect", "sockaddr_in6 length on fd -1", inetOutcome, [-1, buf, 28]),
            p("connect", "sockaddr_un length (a unix socket path)", .refused, [-1, buf, 110]),
            p("connect", "length 16 with garbage in the high bits", inetOutcome, [-1, buf, (1 << 32) | 16]),
            p("setsockopt", "IPPROTO_TCP/TCP_NODELAY on fd -1", inetOutcome, [-1, 6, 1, buf, 4]),
            p("setsockopt", "SOL_SOCKET/SO_RCVTIMEO on fd -1", inetOutcome, [-1, 1, 20, buf, 16]),
            p("setsockopt", "SOL_SOCKET/SO_SNDTIMEO on fd -1", inetOutcome, [-1, 1, 21, buf, 16]),
            p("setsockopt", "SOL_SOCKET/SO_REUSEADDR", .refused, [-1, 1, 2, buf, 4]),
            p("setsockopt", "SOL_SOCKET/SO_BINDTODEVICE", .refused, [-1, 1, 25, buf, 4]),
            p("setsockopt", "IPPROTO_TCP/TCP_CONGESTION", .refused, [-1, 6, 13, buf, 4]),
            p("setsockopt", "IPPROTO_IP/IP_TOS", .refused, [-1, 0, 1, buf, 4]),
            p("bind", "fd -1", .allowed, [-1, buf, 16]),
            p("listen", "fd -1", .allowed, [-1, 1]),
            p("chmod", "0666 on a missing path", .allowed, [missing, 0o666]),
            p("chmod", "setuid bit", .refused, [missing, 0o4755]),
            p("chmod", "0777", .refused, [missing, 0o777]),
            p("unlink", "missing path", .allowed, [missing]),
            p("pipe2", "O_CLOEXEC", .allowed, [fds, cloexec], after: fdPair),
            p("pipe2", "no flags", .refused, [fds, 0], after: fdPair),
            p("pipe2", "O_NONBLOCK", .refused, [fds, 0o4000], after: fdPair),
            p("ioctl", "TCGETS on fd -1", .allowed, [-1, 0x5401, buf]),
            p("ioctl", "TIOCSTI (terminal input injection)", .refused, [-1, 0x5412, buf]),
            p("ioctl", "FIONBIO", .refused, [-1, 0x5421, buf]),
            p("ioctl", "RDMA_VERBS_IOCTL on fd -1 (verbsDevice)", deviceOutcome, [-1, 0xc018_1b01, buf]),
            p("ioctl", "another uverbs-looking ioctl", .refused, [-1, 0xc018_1b02, buf]),
            p("sendto", "MSG_NOSIGNAL|MSG_DONTWAIT on fd -1 (nestedVerbs)", nestedOutcome, [-1, buf, 1, 0x4040, 0, 0]),
            p("sendto", "blocking, SIGPIPE possible", .refused, [-1, buf, 1, 0, 0, 0]),
            p("poll", "no fds, timeout 0 (nestedVerbs)", nestedOutcome, [buf, 0, 0]),
            p("shutdown", "SHUT_RDWR on fd -1 (nestedVerbs)", nestedOutcome, [-1, 2]),
            p("shutdown", "SHUT_WR", .refused, [-1, 1]),
            p("poll", "a 1 ms wait", .refused, [buf, 0, 1]),
        ]
        for (name, cmd) in [("F_GETFD", 1), ("F_SETFD", 2), ("F_GETFL", 3), ("F_SETFL", 4), ("F_ADD_SEALS", 1033), ("F_GET_SEALS", 1034)] {
            probes.append(p("fcntl", "\(name) on fd -1", .allowed, [-1, cmd, 0]))
        }
        for (name, cmd) in [("F_DUPFD", 0), ("F_SETLK", 6), ("F_SETOWN", 8), ("F_SETLEASE", 1024), ("F_NOTIFY", 1026), ("F_SETPIPE_SZ", 1031)] {
            probes.append(p("fcntl", name, .refused, [-1, cmd, 0]))
        }
        probes += [
            // memory
            p("memfd_create", "MFD_CLOEXEC|MFD_ALLOW_SEALING", .allowed, [a.string("probe"), 3], after: closeResult),
            p("memfd_create", "without MFD_ALLOW_SEALING", .refused, [a.string("probe"), 1], after: closeResult),
            p("memfd_create", "MFD_HUGETLB", .refused, [a.string("probe"), 7], after: closeResult),
            p("memfd_create", "MFD_EXEC", .refused, [a.string("probe"), 0x13], after: closeResult),
            p("ftruncate", "fd -1", .allowed, [-1, 0]),
            p("mmap", "anonymous read-write", .allowed, [0, 4096, Int(PROT_READ | PROT_WRITE), Int(MAP_PRIVATE | MAP_ANONYMOUS), -1, 0],
              after: { r in if r != -1 { munmap(UnsafeMutableRawPointer(bitPattern: r), 4096) } }),
            p("mmap", "read-execute", .refused, [0, 4096, Int(PROT_READ | PROT_EXEC), Int(MAP_PRIVATE | MAP_ANONYMOUS), -1, 0]),
            p("mmap", "write-execute", .refused, [0, 4096, Int(PROT_READ | PROT_WRITE | PROT_EXEC), Int(MAP_PRIVATE | MAP_ANONYMOUS), -1, 0]),
            p("mprotect", "read-only", .allowed, [page, 4096, Int(PROT_READ)]),
            p("mprotect", "executable", .refused, [page, 4096, Int(PROT_READ | PROT_EXEC)]),
            p("munmap", "a page", .allowed, [page2, 4096]),
            p("mremap", "invalid (EINVAL)", .allowed, [0, 0, 0, 0]),
            p("brk", "query", .allowed, [0]),
            p("madvise", "MADV_DONTNEED", .allowed, [page3, 4096, Int(MADV_DONTNEED)]),
            p("madvise", "MADV_FREE", .allowed, [page3, 4096, 8]),
            p("madvise", "MADV_DONTFORK", .refused, [page3, 4096, 10]),
            p("madvise", "MADV_MERGEABLE", .refused, [page3, 4096, 12]),
            p("newfstatat", "fd -1", .allowed, [-1, empty, buf, AT_EMPTY_PATH]),
            // files
            p("openat", "O_RDONLY /proc/self/status", .allowed, [AT_FDCWD, status, rdonly | cloexec], after: closeResult),
            p("openat", "O_RDWR|O_APPEND|O_CREAT (audit rotation) on a missing dir", .allowed, [AT_FDCWD, missing, rdwr | append | creat | cloexec, 0o640]),
            p("openat", "O_WRONLY|O_APPEND on a missing dir", .allowed, [AT_FDCWD, missing, wronly | append]),
            p("openat", "O_WRONLY", .refused, [AT_FDCWD, missing, wronly]),
            p("openat", "O_RDWR", .refused, [AT_FDCWD, missing, rdwr]),
            p("openat", "O_RDONLY|O_CREAT", .refused, [AT_FDCWD, missing, rdonly | creat, 0o600]),
            p("openat", "O_RDONLY|O_TRUNC", .refused, [AT_FDCWD, missing, rdonly | trunc]),
            p("openat", "O_WRONLY|O_APPEND|O_TRUNC", .refused, [AT_FDCWD, missing, wronly | append | trunc]),
            p("getdents64", "fd -1", .allowed, [-1, buf, 4096]),
            p("pread64", "fd -1", .allowed, [-1, buf, 1, 0]),
            p("fsync", "fd -1", .allowed, [-1]),
            p("rename", "missing paths", .allowed, [missing, missing2]),
            // threads
            p("futex", "FUTEX_WAKE on a private word", .allowed, [futexWord, 1 /* FUTEX_WAKE */, 1]),
            p("clone", "CLONE_THREAD alone (the kernel refuses it: EINVAL)", .allowed, [cloneThread, 0, 0, 0, 0]),
            p("clone", "fork-like: no CLONE_THREAD", .refused, [cloneSighand, 0, 0, 0, 0]),
            p("clone", "CLONE_THREAD|CLONE_NEWUSER", .refused, [cloneThread | cloneNewuser, 0, 0, 0, 0]),
            p("clone", "CLONE_THREAD|CLONE_NEWNS", .refused, [cloneThread | cloneNewns, 0, 0, 0, 0]),
            p("clone", "CLONE_THREAD|CLONE_VFORK", .refused, [cloneThread | cloneVfork, 0, 0, 0, 0]),
            p("clone3", "any", .filterErrno(ENOSYS), [buf, 88]),
            p("set_robust_list", "bad length (EINVAL)", .allowed, [0, 0]),
            p("rseq", "bad arguments (EINVAL)", .allowed, [0, 0, 0, 0]),
            p("gettid", "", .allowed, []),
            p("getpid", "", .allowed, []),
            p("tgkill", "signal 0 to this thread", .allowed, [pid, tid, 0]),
            p("tgkill", "signal 0 to pid 1", .refused, [1, 1, 0]),
            Probe(syscall: "clone", label: "pthread_create", expect: .allowed, kind: .thread),
            Probe(syscall: "exit", label: "a thread ends", expect: .allowed, kind: .thread),
            Probe(syscall: "exit_group", label: "the child ends with status 0", expect: .allowed, kind: .childExit),
            // signals
            p("rt_sigprocmask", "query", .allowed, [0, 0, buf, 8]),
            Probe(syscall: "rt_sigreturn", label: "a SIGUSR1 handler returns", expect: .allowed, kind: .signalReturn),
            p("restart_syscall", "nothing to restart (EINTR)", .allowed, []),
            p("rt_sigaction", "query SIGSYS", .allowed, [Int(SIGSYS), 0, buf2, 8]),
            p("rt_sigaction", "SIGSEGV to default", .allowed, [Int(SIGSEGV), kernelSigaction, 0, 8]),
            p("rt_sigaction", "SIGSYS to default (switching the report off)", .refused, [Int(SIGSYS), kernelSigaction, 0, 8]),
            p("rt_sigaction", "SIGSYS with garbage in the high bits", .refused, [(1 << 32) | Int(SIGSYS), kernelSigaction, 0, 8]),
            p("rt_sigaction", "SIGTERM", .refused, [Int(SIGTERM), kernelSigaction, 0, 8]),
            // time and randomness
            p("clock_gettime", "CLOCK_MONOTONIC", .allowed, [Int(CLOCK_MONOTONIC), buf]),
            p("gettimeofday", "", .allowed, [buf, 0]),
            p("getrandom", "8 bytes", .allowed, [buf, 8, 0]),
        ]
        // The forbidden list: arguments that would fail harmlessly if the call ran.
        let forbidden: [String: [Int]] = [
            "execve": [missing, 0, 0], "execveat": [-1, empty, 0, 0, 0],
            "fork": [], "vfork": [],
            "ptrace": [-1, 0, 0, 0], "process_vm_readv": [-1, 0, 0, 0, 0, 0], "process_vm_writev": [-1, 0, 0, 0, 0, 0],
            "pidfd_open": [-1, 0], "pidfd_getfd": [-1, -1, 0], "kcmp": [-1, -1, -1, 0, 0],
            "mount": [0, 0, 0, 0, 0], "umount2": [missing, 0], "pivot_root": [0, 0], "chroot": [missing],
            "open_tree": [-1, 0, 0], "move_mount": [-1, 0, -1, 0, 0], "fsopen": [0, 0], "fsmount": [-1, 0, 0],
            "open_by_handle_at": [-1, 0, 0], "name_to_handle_at": [-1, 0, 0, 0, 0],
            "setns": [-1, 0], "unshare": [0], "bpf": [-1, 0, 0], "perf_event_open": [0, 0, -1, -1, 0],
            "userfaultfd": [-1], "keyctl": [-1, 0, 0, 0, 0], "add_key": [0, 0, 0, 0, 0], "request_key": [0, 0, 0, 0],
            "init_module": [0, 0, 0], "finit_module": [-1, 0, 0], "delete_module": [0, 0],
            "kexec_load": [0, 0, 0, 0], "kexec_file_load": [-1, -1, 0, 0, 0], "reboot": [0, 0, 0, 0],
            "io_uring_setup": [0, 0], "io_uring_enter": [-1, 0, 0, 0, 0, 0], "io_uring_register": [-1, 0, 0, 0],
            "prctl": [3 /* PR_GET_DUMPABLE */], "seccomp": [-1, 0, 0], "capset": [0, 0],
            "setuid": [-1], "setgid": [-1], "personality": [0xffff_ffff],
            "memfd_secret": [-1], "pkey_mprotect": [0, 0, 0, -1], "remap_file_pages": [0, 0, 0, 0, 0],
            "open": [missing, 0], "creat": [missing, 0], "truncate": [missing, 0],
            "acct": [missing], "swapon": [0, 0], "syslog": [-1, 0, 0], "settimeofday": [-1, 0],
            "clock_settime": [-1, 0], "iopl": [0], "ioperm": [0, 0, 0],
        ]
        for (name, args) in forbidden.sorted(by: { $0.key < $1.key }) {
            probes.append(p(name, "forbidden", .refused, args))
        }
        return probes
    }
}
