#if canImport(Glibc)
import Glibc
#endif
import CSluiceNet
import Foundation
import SluiceBenchStats
import SluiceVerbs

/// `crosshost`: two hosts as network namespaces joined by veth through a
/// bridge, a router on each linked by the fabric, and this process a tenant
/// of both. Sluice's RDMA READ latency and WRITE bandwidth between the hosts
/// beside TCP's ping-pong and stream over the same veth (threads of this
/// process entered into the two namespaces). Needs root and `ip netns`.
final class CrossHostBench {
    let routerPath: String
    let quick: Bool
    private(set) var failures: [String] = []
    private(set) var figures: [Figure] = []
    private var namespaces: [String] = []
    private var routers: [Process] = []
    private var scratch = ""

    init(routerPath: String, quick: Bool) {
        self.routerPath = routerPath
        self.quick = quick
    }

    func table() -> Table {
        var t = Table(title: "Across hosts (two network namespaces, veth): Sluice beside TCP on the same link",
                      columns: ["median µs", "p99 µs", "Gbit/s"])
        guard getuid() == 0 else {
            t.addFailure("all rows", "skipped: network namespaces need root")
            return t
        }
        defer { teardown() }
        let net: String
        do {
            net = try setUp()
        } catch {
            t.addFailure("all rows", "skipped: \(error)")
            return t
        }
        let iterations = quick ? 2_000 : 20_000
        // TCP over the same veth.
        do {
            let (lat, gbps) = try tcpBaseline(server: "\(net).2", iterations: iterations, bytes: quick ? 256 << 20 : 2 << 30)
            t.add("TCP ping-pong, 8 B (baseline)", [Format.micros(lat.median), Format.micros(lat.p99), "-"])
            t.add("TCP stream, 64 KiB writes (baseline)", ["-", "-", Format.gbps(gbps)])
            figures += [Figure(metric: "crosshost.latency", system: "tcp", size: 8, value: lat.median, unit: "us"),
                        Figure(metric: "crosshost.bandwidth", system: "tcp", size: 65536, value: gbps, unit: "Gbit/s")]
        } catch {
            t.addFailure("TCP baselines", "\(error)")
            failures.append("crosshost: TCP: \(error)")
        }
        do {
            let (lat, gbps) = try sluice(iterations: iterations, bytes: quick ? 256 << 20 : 2 << 30)
            t.add("Sluice RDMA READ, 8 B (a round trip)", [Format.micros(lat.median), Format.micros(lat.p99), "-"])
            t.add("Sluice RDMA WRITE, 64 KiB, 4 QPs × 8 posted", ["-", "-", Format.gbps(gbps)])
            figures += [Figure(metric: "crosshost.latency", system: "sluice", size: 8, value: lat.median, unit: "us"),
                        Figure(metric: "crosshost.bandwidth", system: "sluice", size: 65536, value: gbps, unit: "Gbit/s")]
        } catch {
            t.addFailure("Sluice", "\(error)")
            failures.append("crosshost: Sluice: \(error)")
        }
        t.addNote("Each Sluice request crosses tenant → router → TCP link → router → memory and back; up to 16 per QP are in flight.")
        t.addNote("Debug builds and a shared machine inflate both columns; compare rows of one run.")
        return t
    }

    // MARK: the two hosts

    private func ip(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw BenchError("ip \(args.joined(separator: " ")): \(String(decoding: out, as: UTF8.self))")
        }
    }

    /// Namespaces, veths, addresses, and a router in each host; returns the /24's prefix.
    private func setUp() throws -> String {
        let tag = "sluicebench-\(getpid())"
        let sw = "\(tag)-sw"
        let hosts = ["\(tag)-h1", "\(tag)-h2"]
        try ip(["netns", "add", sw])
        namespaces = [sw]
        var net = "10.213.\(Int.random(in: 0...255))"
        let used = (try? String(contentsOfFile: "/proc/net/fib_trie", encoding: .utf8)) ?? ""
        for _ in 0..<100 where used.contains(net + ".") { net = "10.\(Int.random(in: 160...250)).\(Int.random(in: 0...255))" }
        try ip(["-n", sw, "link", "add", "br0", "type", "bridge"])
        try ip(["-n", sw, "link", "set", "br0", "up"])
        for (i, h) in hosts.enumerated() {
            try ip(["netns", "add", h])
            namespaces.append(h)
            try ip(["-n", sw, "link", "add", "port\(i)", "type", "veth", "peer", "name", "eth0", "netns", h])
            try ip(["-n", sw, "link", "set", "port\(i)", "master", "br0", "up"])
            try ip(["-n", h, "link", "set", "lo", "up"])
            try ip(["-n", h, "addr", "add", "\(net).\(i + 1)/24", "dev", "eth0"])
            try ip(["-n", h, "link", "set", "eth0", "up"])
        }
        scratch = NSTemporaryDirectory() + "sluice-bench-crosshost-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch + "/policies", withIntermediateDirectories: true)
        let policy = """
            apiVersion: sluice/v1
            kind: TenantPolicy
            metadata:
              name: bench
            spec:
              identity:
                uids: [\(getuid())]
              memoryAccess: [localWrite, remoteWrite, remoteRead, remoteAtomic]
              operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]
              peers:
                - tenant: bench
                  operations: [send, sendWithImm, write, writeWithImm, read, compareSwap, fetchAdd]
            """
        try policy.write(toFile: scratch + "/policies/bench.yaml", atomically: true, encoding: .utf8)
        var cluster = "apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers:\n"
        for i in 0..<2 {
            cluster += "    - name: host-\(i + 1)\n      fabric: \(net).\(i + 1):7470\n      lids: [\(1 + 1000 * i)-\(1000 + 1000 * i)]\n"
                + "      addresses: [10.77.\(i * 128).0/17]\n"
        }
        try cluster.write(toFile: scratch + "/cluster.yaml", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: scratch + "/cluster.key", contents: Data((0..<32).map { _ in UInt8.random(in: 0...255) }),
                                       attributes: [.posixPermissions: 0o600])
        for (i, h) in hosts.enumerated() {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
            p.arguments = ["netns", "exec", h, routerPath, "--runtime-dir", "\(scratch)/host-\(i + 1)", "--policies", scratch + "/policies",
                           "--audit-log", "\(scratch)/host-\(i + 1).audit", "--cluster-key", scratch + "/cluster.key",
                           "--router-name", "host-\(i + 1)", "--cluster-file", scratch + "/cluster.yaml"]
            p.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try p.run()
            routers.append(p)
        }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !(1...2).allSatisfy({ FileManager.default.fileExists(atPath: "\(scratch)/host-\($0)/tenants/bench.sock") }) {
            usleep(20_000)
        }
        // The routers dial each other as soon as they start; give the link a moment.
        usleep(500_000)
        return net
    }

    private func teardown() {
        for p in routers where p.isRunning {
            kill(p.processIdentifier, SIGTERM)
            p.waitUntilExit()
        }
        routers = []
        for ns in namespaces.reversed() { try? ip(["netns", "del", ns]) }
        namespaces = []
        if !scratch.isEmpty { try? FileManager.default.removeItem(atPath: scratch) }
    }

    // MARK: TCP over the same veth

    /// Runs `body` on a thread that entered the namespace; returns its result.
    private func inNamespace<T>(_ ns: String, _ body: @escaping () throws -> T) -> Result<T, Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            defer { done.signal() }
            let fd = open("/var/run/netns/\(ns)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0, sluice_net_enter_netns(fd) == 0 else {
                box.result = .failure(BenchError("setns(\(ns)): \(String(cString: strerror(errno)))"))
                return
            }
            close(fd)
            box.result = Result { try body() }
        }
        t.start()
        done.wait()
        return box.result
    }

    private func tcpBaseline(server: String, iterations: Int, bytes: Int) throws -> ((median: Double, p99: Double), Double) {
        let port: UInt16 = 7471
        let listening = DispatchSemaphore(value: 0)
        let serverDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { [self] in
            _ = inNamespace(namespaces[2]) { () throws -> Void in
                let l = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var one: Int32 = 1
                setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4)
                var sa = sockaddr_in()
                sa.sin_family = sa_family_t(AF_INET)
                sa.sin_port = port.bigEndian
                sa.sin_addr.s_addr = inet_addr(server)
                _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(l, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                listen(l, 4)
                listening.signal()
                var buf = [UInt8](repeating: 0, count: 65536)
                for _ in 0..<2 {
                    let c = accept(l, nil, nil)
                    setsockopt(c, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                    var mode: UInt8 = 0
                    _ = read(c, &mode, 1)
                    if mode == UInt8(ascii: "p") {
                        while readFull(c, &buf, 8) { _ = write(c, buf, 8) }
                    } else {
                        while read(c, &buf, buf.count) > 0 {}
                        _ = write(c, buf, 1)
                    }
                    close(c)
                }
                close(l)
            }
            serverDone.signal()
        }
        listening.wait()
        let r = inNamespace(namespaces[1]) { () throws -> ((median: Double, p99: Double), Double) in
            func dial(_ mode: UInt8) throws -> Int32 {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, 4)
                var sa = sockaddr_in()
                sa.sin_family = sa_family_t(AF_INET)
                sa.sin_port = port.bigEndian
                sa.sin_addr.s_addr = inet_addr(server)
                let ok = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                guard ok == 0 else { throw BenchError("connect \(server): \(String(cString: strerror(errno)))") }
                var m = mode
                _ = write(fd, &m, 1)
                return fd
            }
            var buf = [UInt8](repeating: 7, count: 65536)
            let p = try dial(UInt8(ascii: "p"))
            var samples: [Double] = []
            samples.reserveCapacity(iterations)
            for i in 0..<(iterations + iterations / 10) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = write(p, buf, 8)
                guard readFull(p, &buf, 8) else { throw BenchError("TCP ping-pong peer closed") }
                if i >= iterations / 10 { samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000) }
            }
            close(p)
            let s = try dial(UInt8(ascii: "s"))
            let t0 = DispatchTime.now().uptimeNanoseconds
            var sent = 0
            while sent < bytes {
                let n = write(s, buf, buf.count)
                guard n > 0 else { throw BenchError("TCP stream: \(String(cString: strerror(errno)))") }
                sent += n
            }
            shutdown(s, Int32(SHUT_WR))
            _ = read(s, &buf, 1)
            let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            close(s)
            let sorted = samples.sorted()
            return ((Stats.median(samples) ?? 0, Stats.nearestRank(sorted: sorted, 0.99) ?? 0), Double(sent) * 8 / secs / 1e9)
        }
        serverDone.wait()
        return try r.get()
    }

    // MARK: Sluice between the hosts

    private final class Host {
        let ctx: UnsafeMutablePointer<ibv_context>
        let pd: UnsafeMutablePointer<ibv_pd>
        let cq: UnsafeMutablePointer<ibv_cq>
        let lid: UInt16
        let buffer: UnsafeMutableRawPointer
        let size: Int
        let mr: UnsafeMutablePointer<ibv_mr>
        var qps: [UnsafeMutablePointer<ibv_qp>] = []

        init(socket: String, size: Int) throws {
            setenv("SLUICE_SOCKET", socket, 1)
            var n: Int32 = 0
            guard let list = ibv_get_device_list(&n), n == 1, let dev = list[0] else { throw BenchError("no sluice0 at \(socket)") }
            defer { ibv_free_device_list(list) }
            guard let c = ibv_open_device(dev) else { throw BenchError("ibv_open_device: \(String(cString: strerror(errno)))") }
            ctx = c
            var port = ibv_port_attr()
            guard ___ibv_query_port(c, 1, &port) == 0 else { throw BenchError("ibv_query_port") }
            lid = port.lid
            guard let p = ibv_alloc_pd(c), let q = ibv_create_cq(c, 1024, nil, nil, 0) else { throw BenchError("pd/cq") }
            pd = p
            cq = q
            self.size = size
            buffer = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
            let access = Int32(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)
            guard let m = ibv_reg_mr(p, buffer, size, access) else { throw BenchError("ibv_reg_mr: \(String(cString: strerror(errno)))") }
            mr = m
        }

        deinit {
            for q in qps { ibv_destroy_qp(q) }
            ibv_dereg_mr(mr)
            ibv_destroy_cq(cq)
            ibv_dealloc_pd(pd)
            ibv_close_device(ctx)
            munmap(buffer, size)
        }

        func createQP() throws -> UnsafeMutablePointer<ibv_qp> {
            var a = ibv_qp_init_attr()
            a.send_cq = cq
            a.recv_cq = cq
            a.qp_type = IBV_QPT_RC
            a.cap.max_send_wr = 64
            a.cap.max_recv_wr = 16
            a.cap.max_send_sge = 1
            a.cap.max_recv_sge = 1
            guard let q = ibv_create_qp(pd, &a) else { throw BenchError("ibv_create_qp: \(String(cString: strerror(errno)))") }
            qps.append(q)
            return q
        }

        func connect(_ q: UnsafeMutablePointer<ibv_qp>, to qpn: UInt32, lid: UInt16) throws {
            var a = ibv_qp_attr()
            a.qp_state = IBV_QPS_INIT
            a.port_num = 1
            a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue
            var r = ibv_modify_qp(q, &a, Int32(IBV_QP_STATE.rawValue | IBV_QP_PKEY_INDEX.rawValue | IBV_QP_PORT.rawValue | IBV_QP_ACCESS_FLAGS.rawValue))
            a = ibv_qp_attr()
            a.qp_state = IBV_QPS_RTR
            a.path_mtu = IBV_MTU_4096
            a.dest_qp_num = qpn
            a.max_dest_rd_atomic = 1
            a.min_rnr_timer = 1
            a.ah_attr.dlid = lid
            a.ah_attr.port_num = 1
            if r == 0 {
                r = ibv_modify_qp(q, &a, Int32(IBV_QP_STATE.rawValue | IBV_QP_AV.rawValue | IBV_QP_PATH_MTU.rawValue | IBV_QP_DEST_QPN.rawValue
                    | IBV_QP_RQ_PSN.rawValue | IBV_QP_MAX_DEST_RD_ATOMIC.rawValue | IBV_QP_MIN_RNR_TIMER.rawValue))
            }
            a = ibv_qp_attr()
            a.qp_state = IBV_QPS_RTS
            a.timeout = 14
            a.retry_cnt = 7
            a.rnr_retry = 7
            a.max_rd_atomic = 1
            if r == 0 {
                r = ibv_modify_qp(q, &a, Int32(IBV_QP_STATE.rawValue | IBV_QP_TIMEOUT.rawValue | IBV_QP_RETRY_CNT.rawValue
                    | IBV_QP_RNR_RETRY.rawValue | IBV_QP_SQ_PSN.rawValue | IBV_QP_MAX_QP_RD_ATOMIC.rawValue))
            }
            guard r == 0 else { throw BenchError("ibv_modify_qp: \(String(cString: strerror(r)))") }
        }

        func post(_ q: UnsafeMutablePointer<ibv_qp>, _ op: ibv_wr_opcode, offset: Int, length: Int, remote: UInt64, rkey: UInt32, id: UInt64) throws {
            var s = ibv_sge(addr: UInt64(UInt(bitPattern: buffer + offset)), length: UInt32(length), lkey: mr.pointee.lkey)
            var wr = ibv_send_wr()
            wr.wr_id = id
            wr.opcode = op
            wr.send_flags = IBV_SEND_SIGNALED.rawValue
            wr.num_sge = 1
            wr.wr.rdma.remote_addr = remote
            wr.wr.rdma.rkey = rkey
            var bad: UnsafeMutablePointer<ibv_send_wr>?
            let r = withUnsafeMutablePointer(to: &s) { sp -> Int32 in
                wr.sg_list = sp
                return ibv_post_send(q, &wr, &bad)
            }
            guard r == 0 else { throw BenchError("ibv_post_send: \(String(cString: strerror(r)))") }
        }

        /// Waits for one completion (up to 10 s); returns its wr_id.
        func poll() throws -> UInt64 {
            var wc = ibv_wc()
            let end = DispatchTime.now().uptimeNanoseconds + 10_000_000_000
            while DispatchTime.now().uptimeNanoseconds < end {
                let n = ibv_poll_cq(cq, 1, &wc)
                if n < 0 { throw BenchError("ibv_poll_cq failed") }
                if n == 1 {
                    guard wc.status == IBV_WC_SUCCESS else { throw BenchError("completion status \(wc.status.rawValue)") }
                    return wc.wr_id
                }
            }
            throw BenchError("no completion within 10 s")
        }
    }

    private func sluice(iterations: Int, bytes: Int) throws -> ((median: Double, p99: Double), Double) {
        let a = try Host(socket: "\(scratch)/host-1/tenants/bench.sock", size: 64 << 20)
        let b = try Host(socket: "\(scratch)/host-2/tenants/bench.sock", size: 64 << 20)
        let remote = UInt64(UInt(bitPattern: b.buffer))
        var pairs: [UnsafeMutablePointer<ibv_qp>] = []
        for _ in 0..<4 {
            let qa = try a.createQP(), qb = try b.createQP()
            try a.connect(qa, to: qb.pointee.qp_num, lid: b.lid)
            try b.connect(qb, to: qa.pointee.qp_num, lid: a.lid)
            pairs.append(qa)
        }
        // The first request may wait for the link: not counted.
        try a.post(pairs[0], IBV_WR_RDMA_READ, offset: 0, length: 8, remote: remote, rkey: b.mr.pointee.rkey, id: 0)
        _ = try a.poll()
        var samples: [Double] = []
        for i in 0..<(iterations + iterations / 10) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try a.post(pairs[0], IBV_WR_RDMA_READ, offset: 0, length: 8, remote: remote, rkey: b.mr.pointee.rkey, id: 1)
            _ = try a.poll()
            if i >= iterations / 10 { samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000) }
        }
        let chunk = 65536, window = 8
        let total = bytes / chunk
        var posted = 0, done = 0
        let t0 = DispatchTime.now().uptimeNanoseconds
        for q in pairs {
            for _ in 0..<window where posted < total {
                let off = (posted % 512) * chunk
                try a.post(q, IBV_WR_RDMA_WRITE, offset: off, length: chunk, remote: remote + UInt64(off), rkey: b.mr.pointee.rkey, id: UInt64(pairs.firstIndex(of: q)!))
                posted += 1
            }
        }
        while done < total {
            let qi = Int(try a.poll())
            done += 1
            if posted < total {
                let off = (posted % 512) * chunk
                try a.post(pairs[qi], IBV_WR_RDMA_WRITE, offset: off, length: chunk, remote: remote + UInt64(off), rkey: b.mr.pointee.rkey, id: UInt64(qi))
                posted += 1
            }
        }
        let secs = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let sorted = samples.sorted()
        return ((Stats.median(samples) ?? 0, Stats.nearestRank(sorted: sorted, 0.99) ?? 0), Double(total * chunk) * 8 / secs / 1e9)
    }
}

/// A thread's result, handed back after the thread signalled.
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, Error> = .failure(BenchError("thread did not run"))
}

private func readFull(_ fd: Int32, _ buf: inout [UInt8], _ n: Int) -> Bool {
    var got = 0
    while got < n {
        let r = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, n - got) }
        if r <= 0 { return false }
        got += r
    }
    return true
}

/// Why the cross-host table could not measure something.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}
