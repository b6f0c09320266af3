#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Foundation
import SluicePolicy

/// The `etcd` directory: routers register themselves in etcd v3 under a
/// lease, and every router watches the cluster's prefix for routers coming
/// and going and for tenant policies. Layout under `prefix` (default
/// `/sluice/`):
///
///     routers/<name>         {"fabric": "10.99.0.1:7470", "lids": ["1-4095"], "addresses": ["10.77.0.0/18"]}
///                            (put by that router, attached to its lease)
///     policies/<tenant>.yaml a tenant policy, the same YAML as in a policy directory
///
/// A thread of its own talks to etcd (blocking HTTP with timeouts); the
/// router's loop reads snapshots under a lock when `notifyFD` turns
/// readable. If the lease is lost (etcd restarted without its data, a long
/// partition) the router grants a new one and registers again; a watch that
/// breaks is re-established from the last revision seen, after a full read.
///
/// A router leaves the directory when etcd says it did: a delete seen on the
/// watch (its lease expired, or it stopped and revoked it). A router that is
/// merely absent from a full read after the watch broke may not have
/// re-registered yet (etcd restarted without its data, and every router is
/// registering again): it stays listed, "unconfirmed", for `resyncGrace`
/// seconds, and leaves only if it has not come back by then. Without that,
/// an etcd that lost its data would make every router fail every QP
/// connected to another host.
public final class EtcdDirectory: ClusterDirectory {
    public struct Configuration {
        public var endpoint: String
        public var prefix = "/sluice/"
        /// Seconds; keep-alives go every third of it.
        public var leaseTTL = 6
        /// This router, registered under the lease; nil to only watch.
        public var register: RouterEntry?
        /// Seconds a router absent from a full read (not deleted on the
        /// watch) stays listed while it may be registering again; nil: the
        /// lease TTL plus a second (its keep-alives notice a lost lease
        /// within a third of the TTL).
        public var resyncGrace: Double?
        var graceNanos: UInt64 {
            let seconds = resyncGrace ?? Double(leaseTTL + 1)
            // At most a day; NaN and negatives are none.
            return seconds > 0 ? UInt64(min(seconds, 86_400) * 1e9) : 0
        }

        public init(endpoint: String, register: RouterEntry?) {
            self.endpoint = endpoint
            self.register = register
        }
    }

    public let config: Configuration
    let client: EtcdClient
    private let lock = NSLock()
    private var routerMap: [String: RouterEntry] = [:]
    private var policyTexts: [String: String] = [:]
    private var stopping = false
    private var thread: Thread?
    private var leaseID: Int64 = 0
    private var lastError: String?
    private var registrations = 0
    private var synced = false
    /// Routers absent from the last full read but not seen deleted: kept
    /// listed until this monotonic time unless they come back.
    private var unconfirmed: [String: UInt64] = [:]
    /// Readable (a byte per change) when the routers or policies changed.
    public let notifyFD: Int32
    private let notifyWrite: Int32

    public init(_ config: Configuration) throws {
        self.config = config
        client = try EtcdClient(endpoint: config.endpoint)
        client.timeoutMillis = 1000
        var fds: [Int32] = [-1, -1]
        guard sluice_net_pipe(&fds) == 0 else { throw EtcdError("pipe2: \(String(cString: strerror(errno)))") }
        notifyFD = fds[0]
        notifyWrite = fds[1]
        // Sleeps wait in epoll_wait on an empty epoll set: under the
        // router's seccomp filter nanosleep is not allowed, epoll_wait is.
        sleeper = sluice_net_epoll_create()
    }

    private let sleeper: Int32

    func sleep(millis: Int32) {
        var tag: UInt64 = 0, ready: UInt32 = 0
        _ = sluice_net_epoll_wait(sleeper, &tag, &ready, 1, millis)
    }

    deinit {
        stop()
        close(notifyFD)
        close(notifyWrite)
        close(sleeper)
    }

    public var routers: [RouterEntry] {
        lock.lock(); defer { lock.unlock() }
        return routerMap.values.sorted { $0.name < $1.name }
    }

    /// Tenant policy files by name (`alpha.yaml` → text).
    public var policies: [String: String] {
        lock.lock(); defer { lock.unlock() }
        return policyTexts
    }

    /// Whether the first full read of etcd has completed.
    public var hasSynced: Bool {
        lock.lock(); defer { lock.unlock() }
        return synced
    }

    public func status() -> [String: Any] {
        lock.lock(); defer { lock.unlock() }
        var s: [String: Any] = ["kind": "etcd", "endpoint": config.endpoint, "prefix": config.prefix, "lease": String(leaseID),
                                "registrations": registrations, "routers": routerMap.keys.sorted(), "policies": policyTexts.keys.sorted(),
                                "synced": synced]
        if !unconfirmed.isEmpty { s["unconfirmed"] = unconfirmed.keys.sorted() }
        if let e = lastError { s["lastError"] = e }
        return s
    }

    /// Drains `notifyFD` (call from the loop when it is readable).
    public func drainNotifications() {
        var b = [UInt8](repeating: 0, count: 64)
        while read(notifyFD, &b, b.count) > 0 {}
    }

    public func start() {
        // No thread name: setting one is a prctl, which the sandbox forbids.
        let t = Thread { [weak self] in self?.run() }
        thread = t
        t.start()
    }

    /// Stops the thread and revokes the lease (the router leaves the directory).
    public func stop() {
        lock.lock()
        let was = stopping
        stopping = true
        lock.unlock()
        guard !was, thread != nil else { return }
        while isRunning { sleep(millis: 10) }
        if leaseID != 0 { try? client.revoke(lease: leaseID) }
    }

    private var running = false
    private var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        return running
    }

    private var shouldStop: Bool {
        lock.lock(); defer { lock.unlock() }
        return stopping
    }

    private func noteError(_ e: Error?) {
        lock.lock()
        lastError = e.map { "\($0)" }
        lock.unlock()
    }

    private func notify() { var b: UInt8 = 1; _ = write(notifyWrite, &b, 1) }

    // MARK: the thread

    static func routerJSON(_ e: RouterEntry) -> [UInt8] {
        let obj: [String: Any] = ["fabric": e.address.endpoint,
                                  "lids": e.lids.map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)-\($0.upperBound)" },
                                  "addresses": e.addresses.map(\.description)]
        return Array((try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])) ?? Data())
    }

    static func parseRouter(name: String, _ value: [UInt8]) -> RouterEntry? {
        guard StaticDirectory.isDNSLabel(name),
              let obj = try? JSONSerialization.jsonObject(with: Data(value)) as? [String: Any],
              let fabric = obj["fabric"] as? String, let ep = RouterAddress.parseEndpoint(fabric),
              let lids = (obj["lids"] as? [String])?.compactMap(StaticDirectory.parseLIDRange),
              let pools = (obj["addresses"] as? [String])?.compactMap({ try? IPv4Pool.parse($0).get() }),
              !lids.isEmpty, !pools.isEmpty else { return nil }
        return RouterEntry(address: RouterAddress(name: name, host: ep.host, port: ep.port), lids: lids, addresses: pools)
    }

    private var routersPrefix: String { config.prefix + "routers/" }
    private var policiesPrefix: String { config.prefix + "policies/" }

    private func run() {
        lock.lock(); running = true; lock.unlock()
        defer { lock.lock(); running = false; lock.unlock() }
        var watch: EtcdClient.Watch?
        var nextKeepAlive: UInt64 = 0
        var revision: Int64 = 0
        while !shouldStop {
            let now = monotonicNanos()
            do {
                if let me = config.register, leaseID == 0 || now >= nextKeepAlive {
                    try keepRegistered(me)
                    nextKeepAlive = monotonicNanos() + UInt64(max(1, config.leaseTTL)) * 1_000_000_000 / 3
                }
                if watch == nil {
                    revision = try resync()
                    watch = try client.watch(config.prefix, prefix: true, startRevision: revision + 1)
                    noteError(nil)
                }
                let events = try watch!.next()
                if !events.isEmpty { apply(events) }
                expireUnconfirmed(now: monotonicNanos())
            } catch {
                noteError(error)
                watch = nil
                expireUnconfirmed(now: monotonicNanos())
                // Back off briefly; keep-alives retry on the next pass.
                for _ in 0..<10 where !shouldStop { sleep(millis: 50) }
            }
        }
    }

    /// Grants a lease and puts this router's entry when it has none; else
    /// refreshes the lease, and registers again if etcd forgot it.
    private func keepRegistered(_ me: RouterEntry) throws {
        if leaseID != 0 {
            let ttl = try client.keepAlive(lease: leaseID)
            if ttl > 0 { return }
            setLease(0) // expired or unknown to this etcd
        }
        let lease = try client.grantLease(ttl: config.leaseTTL)
        try client.put(routersPrefix + me.name, EtcdDirectory.routerJSON(me), lease: lease.id)
        lock.lock()
        leaseID = lease.id
        registrations += 1
        lock.unlock()
    }

    /// Reads everything under the prefix; returns the revision read at.
    private func resync() throws -> Int64 {
        let (kvs, rev) = try client.range(config.prefix, prefix: true)
        var routers: [String: RouterEntry] = [:], policies: [String: String] = [:]
        for kv in kvs { classify(kv, routers: &routers, policies: &policies) }
        lock.lock()
        // Absent, but not seen leaving: kept for the grace period (see the
        // type's comment). The first read has nothing to keep.
        let now = monotonicNanos(), read = routers
        for name in Array(unconfirmed.keys) where read[name] != nil { unconfirmed[name] = nil }
        for (name, entry) in routerMap where read[name] == nil {
            // This router's own entry: put again just below if etcd lost
            // it, and listed meanwhile (it is alive: it is this process).
            if name == config.register?.name {
                routers[name] = entry
                continue
            }
            let until = unconfirmed[name] ?? now &+ config.graceNanos
            if until > now {
                routers[name] = entry
                unconfirmed[name] = until
            } else {
                unconfirmed[name] = nil
            }
        }
        let changed = routers != routerMap || policies != policyTexts || !synced
        routerMap = routers
        policyTexts = policies
        synced = true
        lock.unlock()
        if changed { notify() }
        // Our own entry vanished (etcd lost its data): register again now.
        if let me = config.register, read[me.name] == nil, leaseID != 0 {
            setLease(0)
            try keepRegistered(me)
        }
        return rev
    }

    private func classify(_ kv: EtcdClient.KeyValue, routers: inout [String: RouterEntry], policies: inout [String: String]) {
        if kv.key.hasPrefix(routersPrefix) {
            let name = String(kv.key.dropFirst(routersPrefix.count))
            if let r = EtcdDirectory.parseRouter(name: name, kv.value) { routers[name] = r }
        } else if kv.key.hasPrefix(policiesPrefix) {
            let file = String(kv.key.dropFirst(policiesPrefix.count))
            if file.hasSuffix(".yaml"), !file.contains("/") { policies[file] = String(decoding: kv.value, as: UTF8.self) }
        }
    }

    private func apply(_ events: [EtcdClient.WatchEvent]) {
        lock.lock()
        var routers = routerMap, policies = policyTexts
        lock.unlock()
        var ownDeleted = false
        // Routers etcd spoke of: registered again, or seen leaving.
        var confirmed: Set<String> = []
        for e in events {
            switch e.kind {
            case .put:
                classify(e.kv, routers: &routers, policies: &policies)
                if e.kv.key.hasPrefix(routersPrefix) { confirmed.insert(String(e.kv.key.dropFirst(routersPrefix.count))) }
            case .delete:
                if e.kv.key.hasPrefix(routersPrefix) {
                    let name = String(e.kv.key.dropFirst(routersPrefix.count))
                    routers[name] = nil
                    confirmed.insert(name)
                    if name == config.register?.name { ownDeleted = true }
                } else if e.kv.key.hasPrefix(policiesPrefix) {
                    policies[String(e.kv.key.dropFirst(policiesPrefix.count))] = nil
                }
            }
        }
        lock.lock()
        for name in confirmed { unconfirmed[name] = nil }
        let changed = routers != routerMap || policies != policyTexts
        routerMap = routers
        policyTexts = policies
        lock.unlock()
        if changed { notify() }
        if ownDeleted, !shouldStop, let me = config.register {
            setLease(0)
            try? keepRegistered(me)
        }
    }

    /// The lease is written on this thread and read by `status()`.
    private func setLease(_ id: Int64) {
        lock.lock()
        leaseID = id
        lock.unlock()
    }

    /// Unconfirmed routers whose grace ran out leave the directory.
    private func expireUnconfirmed(now: UInt64) {
        lock.lock()
        let expired = unconfirmed.filter { $0.value <= now }.map(\.key)
        for name in expired {
            unconfirmed[name] = nil
            routerMap[name] = nil
        }
        lock.unlock()
        if !expired.isEmpty { notify() }
    }
}
