#if canImport(Glibc)
import Glibc
#endif
import SluiceWire

/// One tenant process's connection to the router: its identity (from the
/// socket it came through and SO_PEERCRED), its virtual endpoint address,
/// and every object it owns. When the socket closes, all of it is reclaimed.
final class Session {
    let id: UInt64
    let fd: Int32
    let tenant: String
    let pid: Int32
    let uid: UInt32
    let gid: UInt32
    let lid: UInt16
    let ipv4: UInt32
    /// Shared page (router_asleep flag) and the doorbell the library rings.
    /// The doorbell is a datagram socket pair: the tenant gets one end, the
    /// router keeps the other, a file description of its own whose
    /// O_NONBLOCK the tenant cannot take away (an eventfd would be shared);
    /// the library sends with MSG_NOSIGNAL, so a dead router raises no SIGPIPE.
    let page: SharedMapping
    var pageFD: Int32
    let doorbellRead: Int32
    var doorbellWrite: Int32
    /// Async events: the router keeps the pipe's non-blocking write end.
    let asyncWrite: Int32
    var asyncRead: Int32
    private var asyncProd: UInt32 = 0
    /// Async events dropped because the tenant did not read them.
    var asyncDropped = 0
    var opened = false
    var closed = false
    /// Work requests completed since the last audit summary.
    var allows: UInt64 = 0
    /// A control request held back by the tenant's control-verb rate; the
    /// session's socket is not read until it has run.
    var parked: ParkedRequest?

    var pds = HandleTable<ProtectionDomain>()
    var mrs = HandleTable<MemoryRegion>()
    var channels = HandleTable<CompletionChannel>()
    var cqs = HandleTable<CompletionQueue>()
    var qps = HandleTable<QueuePair>()
    /// Virtual keys, valid only within this session (and for rkeys, only for
    /// a QP connected to one of this session's QPs in the MR's PD).
    var lkeys = KeyTable<MemoryRegion>()
    var rkeys = KeyTable<MemoryRegion>()

    init(id: UInt64, fd: Int32, tenant: String, pid: Int32, uid: UInt32, gid: UInt32,
         lid: UInt16, ipv4: UInt32) throws {
        self.id = id
        self.fd = fd
        self.tenant = tenant
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.lid = lid
        self.ipv4 = ipv4
        // Every fd is created before any is stored, so a failure part-way
        // closes what was made (a failed init runs no deinit).
        var made: [Int32] = []
        do {
            let memfd = try Sys.memfdCreate("sluice-session", size: Int(SLUICE_SESSION_PAGE_SIZE))
            made.append(memfd)
            let bell = try Sys.datagramPair()
            made += [bell.0, bell.1]
            let events = try Sys.pipe(nonblockingRead: false, nonblockingWrite: true)
            made += [events.0, events.1]
            page = try SharedMapping(fd: memfd, length: Int(SLUICE_SESSION_PAGE_SIZE))
            pageFD = memfd
            (doorbellRead, doorbellWrite) = bell
            (asyncRead, asyncWrite) = events
        } catch {
            made.forEach(Sys.close)
            throw error
        }
    }

    deinit {
        Sys.close(pageFD)
        Sys.close(doorbellRead)
        Sys.close(doorbellWrite)
        Sys.close(asyncRead)
        Sys.close(asyncWrite)
    }

    /// Posts an asynchronous event (ibv_get_async_event) for one of this
    /// session's QPs. Never blocks: a tenant that does not read its events
    /// loses the newest ones, counted.
    func postAsyncEvent(_ type: UInt32, qpn: UInt32) {
        let p = pagePointer
        let cons = sluice_load_acquire(&p.pointee.async.cons)
        guard asyncProd &- cons < SLUICE_ASYNC_RING else {
            asyncDropped += 1
            return
        }
        withUnsafeMutableBytes(of: &p.pointee.async_events) { raw in
            // SAFETY: the slot index is masked to the ring's 64 entries.
            raw.storeBytes(of: sluice_async_event(event_type: type, qp_num: qpn),
                           toByteOffset: Int(asyncProd & (SLUICE_ASYNC_RING - 1)) * MemoryLayout<sluice_async_event>.stride,
                           as: sluice_async_event.self)
        }
        asyncProd &+= 1
        sluice_store_release(&p.pointee.async.prod, asyncProd)
        Sys.signalByte(asyncWrite)
    }


    var subject: EventLog.Subject {
        EventLog.Subject(tenant: tenant, session: id, pid: pid, uid: uid)
    }

    /// GID index 0: the IPv4-mapped IPv6 form of the virtual address.
    var gidBytes: [UInt8] {
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
         UInt8(ipv4 >> 24), UInt8((ipv4 >> 16) & 0xff), UInt8((ipv4 >> 8) & 0xff), UInt8(ipv4 & 0xff)]
    }

    var pagePointer: UnsafeMutablePointer<sluice_session_page> {
        page.base.assumingMemoryBound(to: sluice_session_page.self)
    }

    func setRouterAsleep(_ asleep: Bool) {
        sluice_store_relaxed(&pagePointer.pointee.router_asleep, asleep ? 1 : 0)
    }

    var objectCounts: [String: Int] {
        ["pd": pds.count, "mr": mrs.count, "cq": cqs.count, "qp": qps.count, "channel": channels.count]
    }
}

/// A control request waiting for its tenant's control-verb bucket.
struct ParkedRequest {
    var bytes: [UInt8]
    var fds: [Int32]
    var truncated: Bool
    var since: UInt64
    var retryAt: UInt64
}
