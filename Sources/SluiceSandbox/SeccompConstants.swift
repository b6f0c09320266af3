#if canImport(Glibc)
import Glibc
#endif

/// The symbolic names an argument rule in the data file may use, with their
/// Linux x86_64 values. Where Swift's Glibc module exports the constant the
/// value is taken from it; the others are the kernel's UAPI numbers, named
/// with the header they come from.
enum SeccompConstants {
    static let values: [String: UInt64] = {
        var v: [String: UInt64] = [
            // <sys/socket.h>
            "AF_UNIX": UInt64(AF_UNIX), "AF_INET": UInt64(AF_INET), "AF_INET6": UInt64(AF_INET6),
            "AF_NETLINK": UInt64(AF_NETLINK), "AF_PACKET": UInt64(AF_PACKET),
            "SOL_SOCKET": UInt64(SOL_SOCKET), "SO_PEERCRED": UInt64(SO_PEERCRED), "SO_ERROR": UInt64(SO_ERROR),
            "SO_RCVTIMEO": UInt64(SO_RCVTIMEO), "SO_SNDTIMEO": UInt64(SO_SNDTIMEO),
            // <netinet/in.h>, <netinet/tcp.h>
            "IPPROTO_TCP": UInt64(IPPROTO_TCP), "TCP_NODELAY": 1,
            // <sys/mman.h>
            "PROT_NONE": UInt64(PROT_NONE), "PROT_READ": UInt64(PROT_READ), "PROT_WRITE": UInt64(PROT_WRITE),
            "PROT_EXEC": UInt64(PROT_EXEC),
            "MADV_DONTNEED": UInt64(MADV_DONTNEED), "MADV_FREE": 8, // <linux/mman.h>
            "MFD_CLOEXEC": 0x1, "MFD_ALLOW_SEALING": 0x2, // <linux/memfd.h>
            // <fcntl.h>
            "O_RDONLY": UInt64(O_RDONLY), "O_WRONLY": UInt64(O_WRONLY), "O_RDWR": UInt64(O_RDWR),
            "O_ACCMODE": UInt64(O_ACCMODE), "O_CREAT": UInt64(O_CREAT), "O_EXCL": UInt64(O_EXCL),
            "O_TRUNC": UInt64(O_TRUNC), "O_APPEND": UInt64(O_APPEND), "O_CLOEXEC": UInt64(O_CLOEXEC),
            "O_NONBLOCK": UInt64(O_NONBLOCK), "O_DIRECTORY": UInt64(O_DIRECTORY),
            "F_GETFD": UInt64(F_GETFD), "F_SETFD": UInt64(F_SETFD), "F_GETFL": UInt64(F_GETFL),
            "F_SETFL": UInt64(F_SETFL), "F_SETLK": UInt64(F_SETLK),
            "F_ADD_SEALS": 1033, "F_GET_SEALS": 1034, // <linux/fcntl.h>
            // <asm-generic/ioctls.h>
            "TCGETS": 0x5401, "TIOCSTI": 0x5412, "FIONREAD": 0x541B, "FIONBIO": 0x5421,
            // <rdma/rdma_user_ioctl_cmds.h>: _IOWR(0x1b, 1, struct ib_uverbs_ioctl_hdr), 24 bytes
            "RDMA_VERBS_IOCTL": 0xc018_1b01,
            // <sys/socket.h>
            "MSG_DONTWAIT": 0x40, "MSG_NOSIGNAL": 0x4000, "SHUT_RDWR": 2,
            // <linux/sched.h>
            "CLONE_VM": 0x100, "CLONE_FS": 0x200, "CLONE_FILES": 0x400, "CLONE_SIGHAND": 0x800,
            "CLONE_VFORK": 0x4000, "CLONE_THREAD": 0x10000, "CLONE_NEWNS": 0x20000,
            "CLONE_NEWCGROUP": 0x0200_0000, "CLONE_NEWUTS": 0x0400_0000, "CLONE_NEWIPC": 0x0800_0000,
            "CLONE_NEWUSER": 0x1000_0000, "CLONE_NEWPID": 0x2000_0000, "CLONE_NEWNET": 0x4000_0000,
        ]
        // <signal.h>
        for (name, number) in [("SIGHUP", SIGHUP), ("SIGINT", SIGINT), ("SIGQUIT", SIGQUIT), ("SIGILL", SIGILL),
                               ("SIGTRAP", SIGTRAP), ("SIGABRT", SIGABRT), ("SIGBUS", SIGBUS), ("SIGFPE", SIGFPE),
                               ("SIGKILL", SIGKILL), ("SIGUSR1", SIGUSR1), ("SIGSEGV", SIGSEGV), ("SIGUSR2", SIGUSR2),
                               ("SIGPIPE", SIGPIPE), ("SIGALRM", SIGALRM), ("SIGTERM", SIGTERM), ("SIGCHLD", SIGCHLD),
                               ("SIGPROF", SIGPROF), ("SIGSYS", SIGSYS)] {
            v[name] = UInt64(number)
        }
        return v
    }()

    /// The errnos an `errno` action may name.
    static let errnos: [String: Int32] = [
        "ENOSYS": ENOSYS, "EPERM": EPERM, "EACCES": EACCES, "EINVAL": EINVAL, "EOPNOTSUPP": EOPNOTSUPP,
    ]

    /// The names whose value is `value`, for printing ("AF_UNIX" for 1 in a domain).
    static func name(of value: UInt64, among names: [String]) -> String? {
        names.first { values[$0] == value }
    }
}
