#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SluiceCluster
import SluicePolicy

/// How a router joins a cluster of routers (`sluice-router --cluster-key`).
public struct ClusterConfig {
    public enum Directory {
        /// Every router reads the same YAML file (`StaticDirectory`).
        case file(String)
        /// Routers register in etcd under a lease and watch it; `entry` is
        /// what this router registers (its link address, LIDs, addresses).
        case etcd(endpoint: String, prefix: String, entry: RouterEntry)
    }

    /// This router's name in the directory.
    public var name: String
    public var directory: Directory
    /// The shared cluster key (at least 32 bytes, mode 0600).
    public var keyFile: String
    /// Where the link listens; default: this router's address in the directory.
    public var listen: (host: String, port: UInt16)?
    public var heartbeatMillis: UInt64 = 500
    public var deadAfterMillis: UInt64 = 3000
    /// A link no local QP needs and that carried no request for this long
    /// closes; the next use dials again (`--fabric-idle-ms`).
    public var idleMillis: UInt64 = 60_000
    /// With the etcd directory: tenant policies come from etcd
    /// (`<prefix>policies/*.yaml`) once it holds any.
    public var policiesFromEtcd = true

    public init(name: String, directory: Directory, keyFile: String) {
        self.name = name
        self.directory = directory
        self.keyFile = keyFile
    }
}

/// A requester retransmits a request nothing answers until its retries
/// run out, so a tenant aiming at a QP that does not exist (or is not
/// connected to it) would make the target audit every retry. This keeps
/// one record a second per (peer router, QPN): the first refusal of a
/// pair is always audited, later ones within the second are counted and
/// the count goes into the pair's next record.
struct DenialAuditLimiter {
    var interval: UInt64 = 1_000_000_000
    /// At most this many pairs are remembered (older ones are forgotten
    /// first, which only means their next refusal is audited).
    var maxPairs = 4096
    private var pairs: [String: (audited: UInt64, suppressed: Int)] = [:]
    /// Refusals not audited since start.
    private(set) var suppressedTotal = 0

    /// Nil: do not audit (counted). Else audit, noting that many refusals
    /// of the pair were left out since its last record.
    mutating func admit(peer: String, qpn: UInt32, now: UInt64) -> Int? {
        let key = "\(peer)/\(qpn)"
        if let e = pairs[key], now &- e.audited < interval {
            pairs[key] = (e.audited, e.suppressed + 1)
            suppressedTotal += 1
            return nil
        }
        let suppressed = pairs[key]?.suppressed ?? 0
        if pairs[key] == nil && pairs.count >= maxPairs {
            pairs = pairs.filter { now &- $0.value.audited < interval }
            if pairs.count >= maxPairs { pairs.removeAll() }
        }
        pairs[key] = (now, 0)
        return suppressed
    }
}

/// The router's part in the cluster: its fabric node (links to the other
/// routers) and its directory. Runs on the router's loop; the etcd
/// directory's thread only wakes it through `notifyFD`.
final class ClusterAgent {
    let config: ClusterConfig
    let node: FabricNode
    let staticDirectory: StaticDirectory?
    let etcd: EtcdDirectory?
    private let log: EventLog
    /// Fabric frames received before the router installed `onFrame`
    /// (start-up): counted, not acted on.
    private(set) var unhandledFrames = 0
    /// Fabric frames for the router (requests and responses between QPs).
    var onFrame: ((String, LinkFrame.Frame) -> Void)?
    /// The routers in the directory now (after a change).
    var onRoutersChanged: ((Set<String>) -> Void)?
    /// The policy files last applied from etcd, so an unchanged set is not applied twice.
    private var appliedPolicies: [String: String]?

    /// Refusals of requests at this router, audited at most once a second
    /// per (peer router, QPN).
    var denials = DenialAuditLimiter()

    /// Whether to audit a refusal for (`peer`, `qpn`) now; see `DenialAuditLimiter`.
    func auditConnectionDenial(peer: String, qpn: UInt32, now: UInt64) -> Int? {
        denials.admit(peer: peer, qpn: qpn, now: now)
    }

    var directory: ClusterDirectory { (staticDirectory as ClusterDirectory?) ?? etcd! }

    /// This router's own entry, also before etcd lists it.
    var ownEntry: RouterEntry? {
        if case .etcd(_, _, let entry) = config.directory { return entry }
        return staticDirectory?.router(named: config.name)
    }

    init(_ config: ClusterConfig, log: EventLog) throws {
        self.config = config
        self.log = log
        let key = try ClusterKey.load(path: config.keyFile)
        let listen: (host: String, port: UInt16)
        switch config.directory {
        case .file(let path):
            let d = try StaticDirectory.load(path: path)
            guard let me = d.router(named: config.name) else {
                throw DirectoryError("\(path): lists no router named \"\(config.name)\" (--router-name); it lists \(d.routers.map(\.name).joined(separator: ", "))")
            }
            staticDirectory = d
            etcd = nil
            listen = config.listen ?? (me.address.host, me.address.port)
        case .etcd(let endpoint, let prefix, let entry):
            var c = EtcdDirectory.Configuration(endpoint: endpoint, register: entry)
            c.prefix = prefix
            etcd = try EtcdDirectory(c)
            staticDirectory = nil
            listen = config.listen ?? (entry.address.host, entry.address.port)
        }
        var nc = FabricNode.Configuration(name: config.name, listenHost: listen.host, listenPort: listen.port, key: key)
        nc.heartbeatNanos = config.heartbeatMillis * 1_000_000
        nc.deadAfterNanos = config.deadAfterMillis * 1_000_000
        nc.idleNanos = config.idleMillis * 1_000_000
        node = try FabricNode(nc, peers: staticDirectory?.addresses ?? [])
        node.onEvent = { [unowned self] in self.record($0) }
        // The etcd thread starts now, before the sandbox: it then only
        // needs socket, connect, setsockopt, read and sendmsg (multiHost).
        etcd?.start()
    }

    /// The fds the router's loop watches: the node's epoll, and the etcd
    /// directory's change notifications.
    var pollFD: Int32 { node.pollFD }
    var notifyFD: Int32? { etcd?.notifyFD }

    private func record(_ e: FabricNode.Event) {
        switch e {
        case .up(let peer, let address, let dialed):
            log.record(event: "fabric.link.up", decision: .allow, rule: "clusterKey",
                       fields: ["peer": peer, "address": address, "direction": dialed ? "dialed" : "accepted"])
        case .down(let peer, let address, let reason, let authentication):
            if reason.hasPrefix("idle:") {
                log.record(event: "fabric.link.idle", reason: reason, fields: ["peer": peer ?? "unknown", "address": address])
            } else if authentication {
                log.record(event: "fabric.link.refused", decision: .deny, rule: "clusterKey", reason: reason,
                           fields: ["peer": peer ?? "unknown", "address": address])
            } else {
                log.record(event: "fabric.link.down", reason: reason, fields: ["peer": peer ?? "unknown", "address": address])
            }
        case .frame(let peer, let f):
            if let h = onFrame { h(peer, f) } else { unhandledFrames += 1 }
        }
    }

    func service(now: UInt64) { node.service(now: now) }

    var nextDeadline: UInt64? { node.nextDeadline() }

    /// The etcd directory changed: new peers for the node, and the tenant
    /// policies if they changed (nil otherwise).
    func directoryChanged() -> [PolicyFile]? {
        guard let etcd else { return nil }
        etcd.drainNotifications()
        node.setPeers(etcd.addresses)
        // Only once etcd was read: before that, an empty list means nothing.
        if etcd.hasSynced { onRoutersChanged?(Set(etcd.routers.map(\.name))) }
        guard config.policiesFromEtcd else { return nil }
        let texts = etcd.policies
        guard !texts.isEmpty, texts != appliedPolicies else { return nil }
        appliedPolicies = texts
        return texts.sorted { $0.key < $1.key }.map { PolicyFile(path: "etcd:\(etcd.config.prefix)policies/\($0.key)", text: $0.value) }
    }

    func status() -> [String: Any] {
        var s = node.status()
        s["directory"] = etcd?.status() ?? ["kind": "static", "file": staticDirectory?.path ?? "", "routers": directory.routers.map(\.name)]
        s["unhandledFrames"] = unhandledFrames
        s["suppressedDenials"] = denials.suppressedTotal
        return s
    }

    func stop() {
        node.closeAll(reason: "router stopping")
        etcd?.stop()
    }
}
