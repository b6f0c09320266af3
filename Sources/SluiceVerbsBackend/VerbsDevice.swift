#if canImport(Glibc)
import Glibc
#endif
import CIBVerbs

/// An RDMA device the router opened at start-up, through libibverbs: the
/// hardware the verbs backend performs tenants' verbs on.
public final class VerbsDevice {
    public let name: String
    public let context: UnsafeMutablePointer<ibv_context>
    /// The port the router uses (1), as the device reported it at open.
    public let port: UInt8
    public let portAttributes: ibv_port_attr
    /// The completion channel of every CQ the router creates on it.
    public let channel: UnsafeMutablePointer<ibv_comp_channel>
    /// Whether libibverbs found the device through the kernel (its sysfs
    /// node, ibdev_path, is set). Sluice's own device has none.
    public let hasKernelDevice: Bool

    init(name: String, context: UnsafeMutablePointer<ibv_context>, port: UInt8, portAttributes: ibv_port_attr,
         channel: UnsafeMutablePointer<ibv_comp_channel>, hasKernelDevice: Bool) {
        self.hasKernelDevice = hasKernelDevice
        self.name = name
        self.context = context
        self.port = port
        self.portAttributes = portAttributes
        self.channel = channel
    }

    deinit {
        ibv_destroy_comp_channel(channel)
        ibv_close_device(context)
    }

    /// Sluice's own virtual device (libsluice-verbs.so preloaded: this
    /// router is another router's tenant), rather than a NIC. It chooses
    /// the sandbox's syscall allowlist, so the name alone does not decide
    /// (an administrator can rename a NIC, `rdma dev set mlx5_0 name
    /// sluice0`): a kernel device, one with a sysfs node, is always a NIC.
    public var isSluiceDevice: Bool { !hasKernelDevice && name.hasPrefix("sluice") }

    /// A one-line description for the start-up log.
    public var summary: String {
        "\(name) port \(port) active, lid \(portAttributes.lid), mtu \(128 << Int(portAttributes.active_mtu.rawValue))"
    }

    /// What looking for a device found: one the router can use, or why not.
    public enum Probe {
        case usable(VerbsDevice)
        case unusable(String)
    }

    /// Looks for a usable device: the one named, or else the first one
    /// libibverbs lists. Usable means it opens and its port 1 is active.
    /// Never throws: "no device" is an answer `--backend auto` acts on.
    public static func probe(named wanted: String?) -> Probe {
        var count: Int32 = 0
        errno = 0
        guard let list = ibv_get_device_list(&count) else {
            let e = errno
            // ENOSYS: the kernel has no RDMA subsystem (no /sys/class/infiniband).
            if e == ENOSYS { return .unusable("no RDMA device: this kernel has no RDMA support (ibv_get_device_list: ENOSYS)") }
            return .unusable("no RDMA device: ibv_get_device_list failed: \(String(cString: strerror(e)))")
        }
        defer { ibv_free_device_list(list) }
        var names: [String] = []
        var chosen: UnsafeMutablePointer<ibv_device>?
        for i in 0..<Int(max(count, 0)) {
            guard let dev = list[i] else { break }
            let n = String(cString: sluice_ibv_device_name(dev))
            names.append(n)
            if chosen == nil && (wanted == nil || wanted == n) { chosen = dev }
        }
        guard !names.isEmpty else {
            return .unusable("no RDMA device: libibverbs lists none (no NIC, no Soft-RoCE, or no driver)")
        }
        guard let dev = chosen else {
            return .unusable("no RDMA device named \(wanted ?? "") (libibverbs lists \(names.joined(separator: ", ")))")
        }
        let name = String(cString: sluice_ibv_device_name(dev))
        let hasKernelDevice = withUnsafeBytes(of: dev.pointee.ibdev_path) { $0.first.map { $0 != 0 } ?? false }
        errno = 0
        guard let ctx = ibv_open_device(dev) else {
            let e = errno
            return .unusable("cannot open \(name): \(String(cString: strerror(e)))")
        }
        var attr = ibv_port_attr()
        let rc = sluice_ibv_query_port(ctx, 1, &attr)
        guard rc == 0 else {
            ibv_close_device(ctx)
            return .unusable("cannot query port 1 of \(name): \(String(cString: strerror(rc)))")
        }
        guard attr.state == IBV_PORT_ACTIVE else {
            ibv_close_device(ctx)
            return .unusable("port 1 of \(name) is not active (state \(attr.state.rawValue))")
        }
        // The router reads async and completion events from its event
        // loop: neither fd may block.
        errno = 0
        guard let channel = ibv_create_comp_channel(ctx) else {
            let e = errno
            ibv_close_device(ctx)
            return .unusable("cannot create a completion channel on \(name): \(String(cString: strerror(e)))")
        }
        for fd in [ctx.pointee.async_fd, channel.pointee.fd] {
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0 else {
                let e = errno
                ibv_destroy_comp_channel(channel)
                ibv_close_device(ctx)
                return .unusable("cannot make \(name)'s event fds non-blocking: \(String(cString: strerror(e)))")
            }
        }
        return .usable(VerbsDevice(name: name, context: ctx, port: 1, portAttributes: attr, channel: channel,
                                     hasKernelDevice: hasKernelDevice))
    }
}
