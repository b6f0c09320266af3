#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceWire
import CSluiceSys
import SluicePolicy
import SluiceAudit
import SluiceSandbox

public struct RouterConfig {
    /// Tenant sockets are `<runtimeDir>/tenants/<tenant>.sock`; the operator
    /// socket is `<runtimeDir>/control.sock`.
    public var runtimeDir: String
    /// The tenants and what each may do.
    public var policies: PolicySet
    /// Where `policies` came from; SIGHUP and `sluice policy reload` load it again.
    public var policyDirectory: String?
    /// The tamper-evident audit log.
    public var audit: AuditConfiguration
    /// How often counted data-path allows are written as summary records.
    public var summaryNanos: UInt64 = 10_000_000_000
    /// How long the data-path poller spins without work before it sleeps.
    /// Short by default: where tenants busy-poll on as many cores as there
    /// are, a spinning router takes the core a tenant needs to answer
    /// (measured: 8-byte ping-pong 30-50 µs at 5 µs spin, 130 µs at 50 µs,
    /// on 2 cores). With a core to itself, a longer spin wins.
    public var spinNanos: UInt64 = 10_000
    /// Benchmark only: no policy check and no shaping on the data path, so
    /// that their cost can be measured (`--bench-no-enforcement`).
    public var dataPathEnforcement = true
    /// Which backend performs the verbs ("software" or "verbs") and why it
    /// was chosen; recorded in the audit log's router.start record.
    public var backendName = "software"
    public var backendReason = "default"
    /// The device of the verbs backend; nil: the software fabric.
    public var device: RDMADevice?

    // Device limits reported to tenants and enforced per session.
    public var maxQP: UInt32 = 16384
    public var maxQPWR: UInt32 = 16384
    public var maxCQ: UInt32 = 16384
    public var maxCQE: UInt32 = SLUICE_MAX_RING - 1
    public var maxMR: UInt32 = 65536
    public var maxPD: UInt32 = 16384
    public var maxMRSize: UInt64 = 1 << 40
    /// Many hosts: links to the other routers and the cluster directory
    /// (nil: a single-host router).
    public var cluster: ClusterConfig?
    /// Tests only (debug builds): this router sends requests to other
    /// routers without its own checks, so tests can show the target's
    /// suffice. Ignored in release builds.
    public var testUncheckedSender = false
    /// Tests only (debug builds): requests to other routers from the
    /// sessions of a tenant (key) claim another tenant, or another source
    /// LID (value), so tests can show what the target checks of them.
    public var testForgeTenant: [String: String] = [:]
    public var testForgeSourceLID: [String: UInt16] = [:]

    public init(runtimeDir: String, policies: PolicySet, policyDirectory: String? = nil, audit: AuditConfiguration) {
        self.runtimeDir = runtimeDir
        self.policies = policies
        self.policyDirectory = policyDirectory
        self.audit = audit
    }
}

/// The router: one per host. A single thread runs an event loop that serves
/// control messages and polls the data path, so no object is ever touched by
/// two threads and the data path needs no locks.
public final class Router {
    let config: RouterConfig
    let log: EventLog
    /// The policies in force; replaced whole by a reload.
    var engine: PolicyEngine
    /// What each tenant holds, over all its sessions (quotas count these).
    var usage: [String: TenantUsage] = [:]
    let fabric = SoftwareFabric()
    /// The fabric links and directory, when the router is part of a cluster.
    var cluster: ClusterAgent?
    /// The verbs backend, when the router runs on a device.
    var verbs: VerbsBackend?
    /// A pass found receives of a QP connected to another host that could
    /// not go to the device for want of room in the tenant's CQ: the
    /// tenant polling frees it without ringing, so the router looks again
    /// soon instead of sleeping until the next event (RemoteVerbs.swift).
    var remoteReceivesBlocked = false
    private let epfd: Int32
    private let signalFD: Int32
    var listeners: [Int32: String] = [:] // listening fd -> tenant
    private var controlListener: Int32 = -1
    var sessions: [UInt64: Session] = [:]
    private var sessionIDs: [Int32: UInt64] = [:] // socket fd -> session id
    private var nextSessionID: UInt64 = 1
    var endpointsByLID: [UInt16: Session] = [:]
    var endpointsByIPv4: [UInt32: Session] = [:]
    var qpsByNumber: [UInt32: QueuePair] = [:]
    /// Key-guessing detector: failed remote accesses per tenant, and the
    /// tenants it quarantined (until an operator clears them).
    var faultWindows: [String: FaultWindow] = [:]
    var quarantined: Set<String> = []
    /// Sessions whose next control request waits for the control-verb rate.
    var parkedSessions: [Session] = []
    private var refusedPeers: [Int32: String] = [:]
    /// Closes tenant-supplied fds off this thread (see FDReaper).
    let reaper: FDReaper
    /// How many fds one receive takes, so that none has to be closed on the
    /// event loop (the kernel drops any beyond, which it may close here).
    static let maxReceivedFDs = 8
    private var running = true
    private var rng = SystemRandomNumberGenerator()

    // epoll tags: the kind in the top byte, an id below.
    private enum Tag: UInt64 {
        case signal = 1, listener = 2, control = 3, session = 4, doorbell = 5, operatorConn = 6, refused = 7, device = 8, cluster = 9
    }
    private static func tag(_ kind: Tag, _ id: UInt64) -> UInt64 { kind.rawValue << 56 | id }

    public init(config: RouterConfig) throws {
        self.config = config
        engine = PolicyEngine(config.policies)
        fabric.enforcement = config.dataPathEnforcement
        if let d = config.device {
            verbs = VerbsBackend(device: d)
            fabric.device = verbs
        }
        // SIGTERM, SIGINT and SIGHUP arrive as readable events, never as
        // interruptions. Blocked before any thread starts (the audit writer's
        // inherits the mask), or a signal could kill the router from there.
        signalFD = try Sys.retrying("signalfd") { sluice_stop_signals_fd() }
        reaper = FDReaper()
        for dir in [config.runtimeDir, config.runtimeDir + "/tenants"] {
            if mkdir(dir, 0o755) != 0 && errno != EEXIST {
                throw SystemError("mkdir(\(dir))", errno)
            }
        }
        log = try EventLog(config.audit)
        epfd = try Sys.retrying("epoll_create1") { sluice_epoll_create() }
        try watch(signalFD, Router.tag(.signal, 0))
        if let d = config.device {
            try watch(d.asyncFD, Router.tag(.device, 0))
            try watch(d.completionFD, Router.tag(.device, 1))
        }
        try openSockets()
        if let c = config.cluster {
            let agent = try ClusterAgent(c, log: log)
            cluster = agent
            agent.onFrame = { [unowned self] in self.handleFabricFrame(from: $0, $1) }
            agent.onRoutersChanged = { [unowned self] in self.failQPsOfRoutersGone($0) }
            agent.node.needs = { [unowned self] in self.qpsNeedLink(to: $0) }
            try watch(agent.pollFD, Router.tag(.cluster, 0))
            if let fd = agent.notifyFD { try watch(fd, Router.tag(.cluster, 1)) }
        }
    }

    deinit {
        for fd in listeners.keys { Sys.close(fd) }
        Sys.close(controlListener)
        Sys.close(signalFD)
        Sys.close(epfd)
    }

    // MARK: sockets

    private func openSockets() throws {
        for name in engine.policies.names { try addListener(name) }
        controlListener = try Router.listen(path: config.runtimeDir + "/control.sock", mode: 0o600)
        try watch(controlListener, Router.tag(.control, 0))
    }

    /// Binds a SOCK_SEQPACKET listener, replacing a stale socket file (and
    /// nothing else) at that path.
    static func listen(path: String, mode: mode_t) throws -> Int32 {
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else {
                throw SystemError("bind(\(path)): exists and is not a socket", EEXIST)
            }
            unlink(path)
        }
        let fd = try Sys.retrying("socket") { socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            Sys.close(fd)
            throw SystemError("bind(\(path)): path too long", ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        let r = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        if r != 0 {
            let e = errno
            Sys.close(fd)
            throw SystemError("bind(\(path))", e)
        }
        chmod(path, mode)
        if Glibc.listen(fd, 128) != 0 {
            let e = errno
            Sys.close(fd)
            throw SystemError("listen(\(path))", e)
        }
        return fd
    }

    func socketPath(_ tenant: String) -> String { "\(config.runtimeDir)/tenants/\(tenant).sock" }

    func addListener(_ tenant: String) throws {
        let fd = try Router.listen(path: socketPath(tenant), mode: 0o666)
        listeners[fd] = tenant
        try watch(fd, Router.tag(.listener, UInt64(fd)))
    }

    func removeListener(_ tenant: String) {
        for (fd, name) in listeners where name == tenant {
            unwatch(fd)
            Sys.close(fd)
            listeners[fd] = nil
            unlink(socketPath(tenant))
        }
    }

    private func watch(_ fd: Int32, _ tag: UInt64) throws {
        _ = try Sys.retrying("epoll_ctl") { sluice_epoll_add(epfd, fd, tag) }
    }

    private func unwatch(_ fd: Int32) {
        _ = sluice_epoll_del(epfd, fd)
    }

    // MARK: event loop

    /// Runs until SIGTERM or SIGINT.
    public func run() {
        log.record(event: "router.start", fields: ["runtimeDir": config.runtimeDir,
                                                   "dataPathEnforcement": config.dataPathEnforcement ? "on" : "off (benchmark)",
                                                   "backend": config.backendName, "backendReason": config.backendReason])
        recordPolicyLoad(event: "policy.load", engine.policies)
        var idleSince = Sys.monotonicNanos()
        var spins: UInt64 = 0
        var nextSummary = idleSince + config.summaryNanos
        while running {
            let now = Sys.monotonicNanos()
            if now >= nextSummary {
                writeSummaries()
                nextSummary = now + config.summaryNanos
            }
            if !parkedSessions.isEmpty { resumeParked(now: now) }
            if let c = cluster, let t = c.nextDeadline, now >= t { c.service(now: now) }
            if pollDataPath(now: now) {
                idleSince = now
                spins &+= 1
                if spins % 256 == 0 { serviceEvents(timeoutMillis: 0) }
                continue
            }
            if now &- idleSince < config.spinNanos {
                spins &+= 1
                if spins % 256 == 0 { serviceEvents(timeoutMillis: 0) }
                continue
            }
            // Sleep: announce it, then look once more, so a post that raced
            // with the announcement is either seen here or rings the doorbell.
            for s in fabric.sessionList { s.setRouterAsleep(true) }
            sluice_fence()
            if pollDataPath(now: Sys.monotonicNanos()) {
                for s in fabric.sessionList { s.setRouterAsleep(false) }
                idleSince = Sys.monotonicNanos()
                continue
            }
            var timeout: Int32 = -1
            var wake = fabric.nextDeadline()
            if let p = nextParkedDeadline { wake = min(wake ?? p, p) }
            if let c = cluster?.nextDeadline { wake = min(wake ?? c, c) }
            // The device's completions wake the router through its armed
            // CQs; while it holds requests, look anyway every 100 ms, in
            // case a device loses an event.
            if let v = verbs, v.busy {
                let soon = Sys.monotonicNanos() + 100_000_000
                wake = min(wake ?? soon, soon)
            }
            // Completions waiting for room in a tenant's ring (and receives
            // waiting for room in its CQ) move only when the router looks,
            // and polling a CQ rings no doorbell.
            if let v = verbs, v.completionsWaiting || remoteReceivesBlocked {
                let soon = Sys.monotonicNanos() + 1_000_000
                wake = min(wake ?? soon, soon)
            }
            remoteReceivesBlocked = false
            if fabric.sessionList.contains(where: { $0.allows > 0 }) { wake = min(wake ?? nextSummary, nextSummary) }
            if let deadline = wake {
                let t = Sys.monotonicNanos()
                timeout = deadline <= t ? 0 : Int32(min((deadline - t + 999_999) / 1_000_000, 60_000))
            }
            serviceEvents(timeoutMillis: timeout)
            for s in fabric.sessionList { s.setRouterAsleep(false) }
            idleSince = Sys.monotonicNanos()
        }
        shutdown()
    }

    private func serviceEvents(timeoutMillis: Int32) {
        var tags = [UInt64](repeating: 0, count: 64)
        let n = sluice_epoll_wait(epfd, &tags, Int32(tags.count), timeoutMillis)
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let tag = tags[i]
            let id = tag & 0x00ff_ffff_ffff_ffff
            switch Tag(rawValue: tag >> 56) {
            case .signal:
                let signals = sluice_drain_signals(signalFD)
                if signals & 2 != 0 { reloadPolicies(requestedBy: "SIGHUP") }
                if signals & 1 != 0 { running = false }
            case .listener:
                acceptTenant(listener: Int32(id))
            case .control:
                acceptOperator()
            case .session:
                if let s = sessions[id] { serviceSession(s) }
            case .doorbell:
                if let s = sessions[id] { Sys.drain(s.doorbellRead) }
            case .operatorConn:
                serviceOperator(fd: Int32(id))
            case .refused:
                answerRefused(Int32(id))
            case .cluster:
                serviceCluster(id, now: Sys.monotonicNanos())
            case .device:
                guard let v = verbs else { break }
                if id == 1 {
                    v.serviceCompletionEvents()
                } else if !v.serviceAsyncEvents(router: self) {
                    // A device that failed stays readable (EOF): stop watching it.
                    unwatch(v.device.asyncFD)
                    unwatch(v.device.completionFD)
                }
            case .none:
                break
            }
        }
    }

    private func shutdown() {
        for s in Array(sessions.values) { closeSession(s, reason: "router stopping") }
        cluster?.stop()
        writeSummaries()
        log.record(event: "router.stop")
        log.close()
        for name in listeners.values { unlink(socketPath(name)) }
        unlink(config.runtimeDir + "/control.sock")
    }

    // MARK: sessions

    private func acceptTenant(listener: Int32) {
        guard let tenant = listeners[listener] else { return }
        // A few per wake-up: epoll is level-triggered, so the rest come back
        // after everyone else (and the data path) had a turn.
        for _ in 0..<8 {
            let fd = sluice_accept(listener)
            if fd < 0 { return }
            var pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0
            guard sluice_peer_cred(fd, &pid, &uid, &gid) == 0 else {
                Sys.close(fd)
                continue
            }
            let subject = EventLog.Subject(tenant: tenant, session: 0, pid: pid, uid: uid)
            let decision = engine.admit(tenant: tenant, uid: uid, gid: gid)
            guard decision.isAllowed else {
                let reason = Router.reason(decision)
                log.record(event: "session.refused", subject: subject, decision: .deny, rule: decision.rule, reason: reason)
                refuse(fd, reason: reason)
                continue
            }
            guard let (lid, ipv4) = allocateEndpoint(tenant: tenant) else {
                let reason = "no virtual address left in tenant \(tenant)'s address pool"
                log.record(event: "session.refused", subject: subject, decision: .deny, rule: "addressPool", reason: reason)
                refuse(fd, reason: reason)
                continue
            }
            let id = nextSessionID
            nextSessionID += 1
            do {
                let s = try Session(id: id, fd: fd, tenant: tenant, pid: pid, uid: uid, gid: gid, lid: lid, ipv4: ipv4)
                try watch(fd, Router.tag(.session, id))
                try watch(s.doorbellRead, Router.tag(.doorbell, id))
                sessions[id] = s
                fabric.addSession(s)
                sessionIDs[fd] = id
                endpointsByLID[lid] = s
                endpointsByIPv4[ipv4] = s
                log.record(event: "session.open", subject: s.subject, decision: .allow, rule: decision.rule,
                           fields: ["lid": String(lid), "address": Router.dotted(ipv4)])
            } catch {
                log.record(event: "session.refused", subject: subject, decision: .deny, reason: "\(error)")
                unwatch(fd)
                Sys.close(fd)
            }
        }
    }

    /// A refused peer still gets an answer to its first request (EACCES and
    /// the reason), so the application can say why; then the socket closes.
    /// Only a few such answers wait at a time, so refused peers cannot pile
    /// up descriptors.
    private func refuse(_ fd: Int32, reason: String) {
        guard refusedPeers.count < 16, (try? watch(fd, Router.tag(.refused, UInt64(fd)))) != nil else {
            Sys.close(fd)
            return
        }
        refusedPeers[fd] = reason
    }

    private func answerRefused(_ fd: Int32) {
        guard let reason = refusedPeers.removeValue(forKey: fd) else { return }
        defer {
            unwatch(fd)
            Sys.close(fd)
        }
        var buf = [UInt8](repeating: 0, count: Int(SLUICE_MSG_MAX))
        var fds = [Int32](repeating: -1, count: Router.maxReceivedFDs)
        var nfds: Int32 = 0, truncated: Int32 = 0
        let n = buf.withUnsafeMutableBytes { sluice_recv_fds(fd, $0.baseAddress, $0.count, &fds, Int32(Router.maxReceivedFDs), &nfds, &truncated) }
        fds.prefix(Int(nfds)).forEach(reaper.close)
        guard n >= MemoryLayout<sluice_msg_hdr>.size else { return }
        let hdr = buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_msg_hdr.self) }
        var rep = sluice_reply_hdr()
        fillReplyHeader(&rep, request: hdr, length: MemoryLayout<sluice_reply_hdr>.size, status: EACCES, reason: reason)
        _ = withUnsafeBytes(of: rep) { sluice_send_fds(fd, $0.baseAddress, $0.count, nil, 0) }
    }

    /// A virtual LID (unicast, 1...0xbfff, router-wide) and an IPv4 address
    /// from the tenant's `addressPool`, or, for tenants without one, from the
    /// shared pool 10.77.0.0/16 outside every tenant's pool.
    private func allocateEndpoint(tenant: String) -> (UInt16, UInt32)? {
        // Random, not sequential: an address says nothing about its
        // neighbours, nor how many endpoints the router serves.
        if let c = cluster { return allocateClusterEndpoint(tenant: tenant, c) }
        guard endpointsByLID.count < 0xbfff else { return nil }
        var lid: UInt16 = 0
        repeat { lid = UInt16.random(in: 1...0xbfff, using: &rng) } while endpointsByLID[lid] != nil
        let own = engine.policy(tenant)?.addressPool
        let range = own?.usableAddresses ?? Router.sharedPool.usableAddresses
        let pools = engine.policies.tenants.compactMap(\.addressPool)
        func usable(_ a: UInt32) -> Bool {
            endpointsByIPv4[a] == nil && (own != nil || !pools.contains(where: { $0.contains(a) }))
        }
        for _ in 0..<64 {
            let a = UInt32.random(in: range, using: &rng)
            if usable(a) { return (lid, a) }
        }
        // A nearly full pool: scan from a random start.
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        var offset = UInt64.random(in: 0..<span, using: &rng)
        for _ in 0..<min(span, 1 << 16) {
            let a = range.lowerBound + UInt32(offset)
            offset = (offset + 1) % span
            if usable(a) { return (lid, a) }
        }
        return nil
    }

    static let sharedPool = try! IPv4Pool.parse("10.77.0.0/16").get()

    static func dotted(_ a: UInt32) -> String {
        "\(a >> 24).\((a >> 16) & 0xff).\((a >> 8) & 0xff).\(a & 0xff)"
    }

    /// Reclaims everything a session owned. QPs connected to its QPs see the
    /// peer gone and fail their next request with a retry error, as on a fabric.
    func closeSession(_ s: Session, reason: String) {
        guard !s.closed else { return }
        s.closed = true
        if let p = s.parked {
            p.fds.forEach(reaper.close)
            s.parked = nil
        }
        let counts = s.objectCounts
        for qp in s.qps.all { destroyQP(qp, in: s) }
        var held = usage[s.tenant, default: .init()]
        held.pds -= s.pds.count
        held.cqs -= s.cqs.count
        held.mrs -= s.mrs.count
        for mr in s.mrs.all {
            mr.dead = true
            verbs?.deregMR(mr)
            held.registeredBytes -= mr.length
        }
        if let verbs {
            for cq in s.cqs.all { verbs.destroyCQ(cq) }
            for pd in s.pds.all { verbs.deallocPD(pd) }
        }
        usage[s.tenant] = held
        s.lkeys.removeAll()
        s.rkeys.removeAll()
        s.mrs = HandleTable()
        s.cqs = HandleTable()
        s.channels = HandleTable()
        s.pds = HandleTable()
        log.carry(tenant: s.tenant, allows: s.allows)
        s.allows = 0
        unwatch(s.fd)
        unwatch(s.doorbellRead)
        Sys.close(s.fd)
        sessions[s.id] = nil
        fabric.removeSession(s)
        sessionIDs[s.fd] = nil
        endpointsByLID[s.lid] = nil
        endpointsByIPv4[s.ipv4] = nil
        log.record(event: "session.close", subject: s.subject, reason: reason,
                   fields: ["reclaimed": counts.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" }.joined(separator: ",")])
    }

    /// Data-path allows are counted per session (one add per work request)
    /// and written per tenant here.
    func writeSummaries() {
        var live: [String: UInt64] = [:]
        for s in sessions.values where s.allows > 0 {
            live[s.tenant, default: 0] &+= s.allows
            s.allows = 0
        }
        // Shaping that held a tenant back since the last summary.
        var throttled: [String: [String: String]] = [:]
        for lane in fabric.allLanes {
            let c = lane.limiter.counters, was = lane.summarized
            guard c.throttledRequests != was.throttledRequests || c.throttledNanoseconds != was.throttledNanoseconds else { continue }
            throttled[lane.tenant] = [
                "throttledRequests": String(c.throttledRequests &- was.throttledRequests),
                "throttledMicroseconds": String((c.throttledNanoseconds &- was.throttledNanoseconds) / 1000),
            ]
            lane.summarized = c
        }
        log.writeSummaries(live: live, throttled: throttled)
    }

    func destroyQP(_ qp: QueuePair, in s: Session) {
        qp.destroyed = true
        // Break the links both ways (they are strong): a QP connected to
        // this one sees no peer, as if it had vanished from the fabric.
        if let p = qp.peer, p.claimedBy === qp { p.claimedBy = nil }
        qp.peer = nil
        if let c = qp.claimedBy, c.peer === qp { c.peer = nil }
        qp.claimedBy = nil
        s.qps.remove(qp.handle)
        qpsByNumber[qp.qpn] = nil
        fabric.remove(qp)
        verbs?.destroyQP(qp)
        qp.pd.users -= 1
        qp.sendCQ.users -= 1
        qp.recvCQ.users -= 1
        usage[s.tenant, default: .init()].qps -= 1
    }

    func mintQPN() -> UInt32 {
        while true {
            let n = UInt32.random(in: 2...0x00ff_ffff, using: &rng)
            if qpsByNumber[n] == nil { return n }
        }
    }

    /// A virtual key from the CSPRNG, unused in `table` and never 0.
    func mintKey(unusedIn table: KeyTable<MemoryRegion>) -> UInt32 {
        while true {
            let k = UInt32.random(in: 1...UInt32.max, using: &rng)
            if table[k] == nil { return k }
        }
    }

    private func serviceSession(_ s: Session) {
        var buf = [UInt8](repeating: 0, count: Int(SLUICE_MSG_MAX))
        // At most 16 requests per wake-up, for the same reason: a tenant
        // that pipelines requests from many threads cannot hold the loop.
        for _ in 0..<16 where !s.closed {
            // Take every fd that came (up to 8) so none is closed on this
            // thread; more than a request may carry counts as truncated.
            var fds = [Int32](repeating: -1, count: Router.maxReceivedFDs)
            var nfds: Int32 = 0
            var truncated: Int32 = 0
            let n = buf.withUnsafeMutableBytes { raw in
                sluice_recv_fds(s.fd, raw.baseAddress, raw.count, &fds, Int32(Router.maxReceivedFDs), &nfds, &truncated)
            }
            if nfds > Int32(SLUICE_MSG_MAX_FDS) { truncated = 1 }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { return }
                closeSession(s, reason: "socket error: \(String(cString: strerror(errno)))")
                return
            }
            if n == 0 {
                closeSession(s, reason: "process closed its session")
                return
            }
            let received = Array(fds.prefix(Int(nfds)))
            if n >= MemoryLayout<sluice_msg_hdr>.size, fabric.enforcement,
               Router.shapedControlVerbs.contains(buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_msg_hdr.self) }.opcode) {
                let now = Sys.monotonicNanos()
                let lane = fabric.lane(s.tenant, limits: engine.policy(s.tenant)?.rateLimits ?? RateLimits(), now: now)
                let wait = lane.limiter.admitControlVerb(now: now)
                if wait > 0 {
                    // Shaped, not refused: the request runs when the bucket
                    // allows, and the socket is not read until then.
                    s.parked = ParkedRequest(bytes: Array(buf.prefix(min(Int(n), buf.count))), fds: received,
                                             truncated: truncated != 0, since: now, retryAt: Sys.saturatingAdd(now, wait))
                    unwatch(s.fd)
                    parkedSessions.append(s)
                    return
                }
            }
            buf.withUnsafeBytes { raw in
                handleMessage(s, UnsafeRawBufferPointer(rebasing: raw.prefix(min(Int(n), raw.count))),
                              declaredLength: Int(n), fds: received, truncated: truncated != 0)
            }
        }
    }

    /// The verbs that create or change objects: limited by the tenant's
    /// `rateLimits.controlVerbs` (queries and teardown are not).
    static let shapedControlVerbs: Set<UInt16> = Set([SLUICE_OP_ALLOC_PD, SLUICE_OP_REG_MR, SLUICE_OP_REMAP_MR,
        SLUICE_OP_CREATE_COMP_CHANNEL, SLUICE_OP_CREATE_CQ, SLUICE_OP_CREATE_QP, SLUICE_OP_MODIFY_QP].map { UInt16($0.rawValue) })

    /// Runs the parked control requests whose time has come, and reads
    /// their sessions' sockets again.
    func resumeParked(now: UInt64) {
        var still: [Session] = []
        for s in parkedSessions {
            guard !s.closed, var p = s.parked else { continue }
            if now < p.retryAt {
                still.append(s)
                continue
            }
            let lane = fabric.lane(s.tenant, limits: engine.policy(s.tenant)?.rateLimits ?? RateLimits(), now: now)
            let wait = lane.limiter.admitControlVerb(now: now, waitingSince: p.since)
            if wait > 0 {
                p.retryAt = Sys.saturatingAdd(now, wait)
                s.parked = p
                still.append(s)
                continue
            }
            s.parked = nil
            p.bytes.withUnsafeBytes { raw in
                handleMessage(s, raw, declaredLength: raw.count, fds: p.fds, truncated: p.truncated)
            }
            if !s.closed {
                do {
                    try watch(s.fd, Router.tag(.session, s.id))
                } catch {
                    closeSession(s, reason: "cannot watch its socket again: \(error)")
                }
            }
        }
        parkedSessions = still
    }

    var nextParkedDeadline: UInt64? { parkedSessions.compactMap { $0.parked?.retryAt }.min() }

    // MARK: operator socket

    private func acceptOperator() {
        while true {
            let fd = sluice_accept(controlListener)
            if fd < 0 { return }
            do {
                try watch(fd, Router.tag(.operatorConn, UInt64(fd)))
            } catch {
                Sys.close(fd)
            }
        }
    }

    private func serviceOperator(fd: Int32) {
        var buf = [UInt8](repeating: 0, count: 256)
        var fds = [Int32](repeating: -1, count: Router.maxReceivedFDs)
        var nfds: Int32 = 0
        var truncated: Int32 = 0
        let n = buf.withUnsafeMutableBytes { sluice_recv_fds(fd, $0.baseAddress, $0.count, &fds, Int32(Router.maxReceivedFDs), &nfds, &truncated) }
        fds.prefix(Int(nfds)).forEach(reaper.close)
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
        defer {
            unwatch(fd)
            Sys.close(fd)
        }
        guard n >= MemoryLayout<sluice_msg_hdr>.size else { return }
        let hdr = buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_msg_hdr.self) }
        var status: Int32 = 0
        var reason = ""
        var body: [UInt8] = []
        if hdr.magic != SLUICE_WIRE_MAGIC || hdr.version != SLUICE_WIRE_VERSION {
            status = EINVAL
            reason = "not a Sluice operator request"
        } else if hdr.opcode == UInt16(SLUICE_OP_STATUS.rawValue) {
            body = statusJSON()
        } else if Router.testHook(hdr.opcode) {
            return
        } else if hdr.opcode == UInt16(SLUICE_OP_CLEAR_QUARANTINE.rawValue) {
            if n < MemoryLayout<sluice_tenant_req>.size {
                status = EINVAL
                reason = "the request names no tenant"
            } else {
                let req = buf.withUnsafeBytes { $0.loadUnaligned(as: sluice_tenant_req.self) }
                let tenant = withUnsafeBytes(of: req.tenant) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                let was = clearQuarantine(tenant, requestedBy: "sluice quarantine clear")
                body = Array((was ? "tenant \(tenant) is no longer quarantined" : "tenant \(tenant) was not quarantined").utf8)
            }
        } else if hdr.opcode == UInt16(SLUICE_OP_RELOAD_POLICY.rawValue) {
            let (ok, message) = reloadPolicies(requestedBy: "sluice policy reload")
            if !ok {
                status = EINVAL
                reason = "the policies were not reloaded; the old ones stay in force"
            }
            body = Array(message.utf8)
        } else {
            status = EOPNOTSUPP
            reason = "the operator socket answers STATUS, RELOAD_POLICY and CLEAR_QUARANTINE"
        }
        body = Array(body.prefix(Int(SLUICE_STATUS_MAX)))
        var rep = sluice_reply_hdr()
        fillReplyHeader(&rep, request: hdr, length: MemoryLayout<sluice_reply_hdr>.size + body.count, status: status, reason: reason)
        let out = withUnsafeBytes(of: rep) { Array($0) } + body
        _ = out.withUnsafeBytes { sluice_send_fds(fd, $0.baseAddress, $0.count, nil, 0) }
    }

    /// Records the sandbox the router runs in (after `Sandbox.apply`).
    public func recordSandbox(mode: String, _ description: String) {
        log.record(event: "sandbox", decision: .allow, reason: description, fields: ["mode": mode])
    }

    /// Debug builds only: an operator request that makes the router attempt
    /// a forbidden system call, so a test can prove the sandbox kills it and
    /// names the call. Compiled out of release builds (SLUICE_TEST_HOOKS is
    /// defined for the debug configuration only, in Package.swift).
    static func testHook(_ opcode: UInt16) -> Bool {
        #if SLUICE_TEST_HOOKS
        if opcode == 0x7e57 {
            sluiceTestHookForbiddenSyscall()
            return true
        }
        #endif
        return false
    }

    /// Per tenant: the rate it moved lately, how long shaping held it back,
    /// what waits in its send queues, its scheduler weight, and the data-path
    /// time the router spent on it (what the scheduler shares out).
    func shapingStatus() -> [String: [String: Any]] {
        let now = Sys.monotonicNanos()
        var out: [String: [String: Any]] = [:]
        for lane in fabric.allLanes {
            lane.sampleRate(now: now)
            let c = lane.limiter.counters
            out[lane.tenant] = [
                "bytesPerSecond": lane.rate.bytes, "requestsPerSecond": lane.rate.requests,
                "bytes": lane.bytesMoved, "requests": lane.requests,
                "throttledRequests": c.throttledRequests, "throttledSeconds": Double(c.throttledNanoseconds) / 1e9,
                "controlVerbsThrottled": lane.limiter.controlVerbCounters.throttledRequests,
                "queueDepth": lane.queueDepth, "queuePairs": lane.qps.count, "activeQueuePairs": lane.active.count,
                "weight": lane.limiter.weight,
                "routerSeconds": Double(CycleClock.shared.nanos(ticks: lane.credit.charged)) / 1e9,
            ]
        }
        return out
    }

    /// Everything an operator (or a leak test) needs to see what the router holds.
    func statusJSON() -> [UInt8] {
        var perTenant: [String: [String: Int]] = [:]
        var totals: [String: Int] = ["pd": 0, "mr": 0, "cq": 0, "qp": 0, "channel": 0]
        var sessionList: [[String: Any]] = []
        for s in sessions.values.sorted(by: { $0.id < $1.id }) {
            let c = s.objectCounts
            for (k, v) in c {
                totals[k, default: 0] += v
                perTenant[s.tenant, default: [:]][k, default: 0] += v
            }
            perTenant[s.tenant, default: [:]]["sessions", default: 0] += 1
            sessionList.append(["id": s.id, "tenant": s.tenant, "pid": s.pid, "uid": s.uid,
                                "lid": s.lid, "address": Router.dotted(s.ipv4), "objects": c])
        }
        let obj: [String: Any] = [
            "sessions": sessions.count,
            "quarantined": quarantined.sorted(),
            "objects": totals,
            "tenants": perTenant,
            "sessionList": sessionList,
            "fds": Sys.openFDCount(),
            "mappings": SharedMapping.live,
            "mappedBytes": SharedMapping.liveBytes,
            "dataPath": ["allowsCounted": log.countedAllows + sessions.values.reduce(0) { $0 + $1.allows },
                         "queuePairsPolled": fabric.count, "enforcement": fabric.enforcement],
            "shaping": shapingStatus(),
            // The mode applied and the kernel's Seccomp, NoNewPrivs and Cap* fields.
            "sandbox": Sandbox.statusObject(),
            "cluster": cluster?.status() ?? NSNull(),
            // Which backend performs the verbs, and why it was chosen.
            "backend": ["name": config.backendName, "reason": config.backendReason,
                        "device": config.device?.name ?? "", "deviceLost": verbs?.lost ?? ""],
        ]
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data()
        return Array(data)
    }
}

#if SLUICE_TEST_HOOKS
/// mount(2) is on the allowlist's forbidden list: under --sandbox enforce
/// this never returns.
@inline(never)
func sluiceTestHookForbiddenSyscall() {
    _ = Glibc.mount(nil, nil, nil, 0, nil)
}
#endif
