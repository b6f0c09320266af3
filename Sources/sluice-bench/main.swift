#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation

struct SluiceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice-bench",
        abstract: "Measures Sluice's latency, bandwidth, message rate, control verbs, router CPU, scale, policy decisions, audit writing, key translation, shaping, isolation and fairness beside baselines, in one run, and checks issue 8's targets.",
        discussion: """
            Starts a real sluice-router (the one built next to this binary, or \
            --router) with a private runtime directory and the policies in \
            --policies, then measures as a process of tenant --tenant, through the \
            verbs library linked into this binary. Each table puts Sluice beside \
            baselines measured in the same run, with the same message size, \
            count, thread count and clock (CLOCK_MONOTONIC).

            Latency: the round trip of an 8-byte message (ping -> pong -> ping; not \
            halved, unlike perftest), p50 / p99 / mean in microseconds.
            - sluice SEND: two verbs contexts, hence two router sessions, one RC QP \
            each, connected to each other; one thread per side busy-polls its CQ.
            - sluice SEND, pollers yield: the same, but a poller that finds its CQ \
            empty calls sched_yield(), giving its core to the router when cores are scarce.
            - TCP loopback: the same exchange over 127.0.0.1 with TCP_NODELAY and \
            blocking sockets: what the kernel stack gives without RDMA.
            - ring between two processes: this process and a fork of it bounce an \
            8-byte value through two single-producer rings in MAP_SHARED memory, \
            laid out as Sluice's (free-running indices on their own cache lines): \
            the ring limit, between processes as Sluice's tenants and router are.
            - thread hand-off: two threads bouncing a counter through one shared \
            cache line: the floor for any shared-memory message path. A Sluice round \
            trip makes four such hand-offs (ping, router, pong, router, ping).

            Bandwidth: 64 KiB messages, in GB/s (10^9 bytes/s) and messages/s.
            - sluice RDMA WRITE: one RC QP, 16 signaled writes in flight into the \
            peer's registered region; the target's bytes are checked at the end.
            - memcpy: one core copying the same messages over the same buffer \
            footprint: the software fabric's work is a copy, so this is the ceiling \
            it can approach.
            - TCP loopback stream: 64 KiB writes from one thread to another: the \
            conventional way to move these bytes between processes.

            Policy decisions (ns each): the policies in --policies, loaded with \
            PolicySet.load, timed in tight loops whose results are stored to a \
            global, so the optimizer must keep the work.
            - work request: the router's data-path check, \
            OperationSet.allowsWireOpcode on the mask computed at connect (alpha \
            to alpha), over 4096 opcodes 0...10 in random order.
            - same loop, plain AND / no decision: a bare AND on the mask, and no \
            decision at all (sum the opcodes): what the loop itself costs.
            - control: regMR, createQP and connect as the router asks them before \
            a verb runs, allowed and denied (a denial formats its reason).
            - end to end: 8-byte RDMA WRITEs through the router, 64 in flight, \
            one in 16 signaled; ns is 1/rate. The router checks every one \
            against the connection's policy mask.

            Audit writing: 200000 records (quick: 100000) like the router's denials (the table \
            gives their size), offered to an AuditWriter from one thread, into a \
            new directory under /tmp (its file system is shown). records/s: \
            records written, until the last fsync; ns/record: the caller's cost \
            of record(...); dropped: records the bounded queue (65536) had no \
            room for, which the log counts in audit.loss records.
            - fsync every 100 ms (the router's default) and after every batch: \
            the caller waits while the queue is over half full, so the figure \
            is what the writer sustains.
            - caller never waits: as the router offers records; what the queue \
            cannot hold is dropped.
            - write(2) of same-size lines: 1024 a call, fsync every 100 ms; no \
            queue, no JSON, no hashing.

            Burst of denials: alpha's 64 KiB RDMA WRITE bandwidth (as above, for \
            a fixed time: 0.5 s quick, 5 s full) alone, then while tenant beta, \
            speaking the wire protocol by hand, asks for protection domains over \
            its quota, 8 requests in flight, as fast as the router answers. The \
            router refuses each by policy and audits it. refused: answers beta \
            got; audited: deny records the router's audit log gained meanwhile.
            - beside a spinning thread: one more thread of this process spins \
            and asks the router for nothing: what any busy thread costs alpha \
            where cores are scarce.

            The tables below run on a second router, started once the first \
            has stopped, on a policy directory generated under /tmp: tenants \
            that admit this uid, may send, write and read among their own QPs, \
            have no quotas, and differ only in spec.rateLimits.tenant. A flow \
            is a set of RC QP pairs of one tenant (each end its own session) \
            flooding with a fixed number of requests in flight; its rate is what \
            completed between two readings of its counters, taken after it has \
            run for a settling time (the first burst of a rate limit, warm \
            caches). Noisy and fair-share tenants are worker processes of this \
            same program (hidden --flood-worker); the rest are threads of this \
            process. If sluice-router has --bench-no-enforcement (its \
            --help-hidden says so), a third router runs with it for the \
            "policy+shaping off" rows.

            Router CPU (issue 8): the router's CPU time as % of one core, from \
            utime+stime in /proc/<pid>/stat (10 ms ticks) and, precisely, from the \
            run time in /proc/<pid>/task/*/schedstat: idle (nothing posted for 1 s, \
            full 2 s) with no session of this table and with one connected QP pair \
            open; under load, while one QP pair floods 8-byte WRITEs (64 in flight, \
            1 in 16 signaled) and 64 KiB WRITEs (16 in flight); router ns/op is its \
            CPU time per completed request.

            Wake-up (issue 8): one signaled 8-byte WRITE between two sessions, \
            timed from ibv_post_send until ibv_poll_cq returns it: 20 ms after the \
            previous one (the router has stopped spinning and sleeps in \
            epoll_wait, so the library rings its doorbell; 25 samples, full 200), \
            and straight after it (router awake). Baseline: a thread blocked in \
            poll() on a datagram socket, woken by one byte after the same gap.

            Control verbs (issue 8), p50/p99/mean µs, through the verbs library \
            against the router: reg_mr of a fresh, written 4 KiB buffer and of a \
            large one (1 GiB; quick: 64 MiB, as its label says), dereg_mr of 4 KiB, \
            create_qp (RC, 64 deep, on an existing PD and CQ), destroy_qp, and \
            connect: one fresh QP taken INIT->RTR->RTS towards a QP of another \
            session. 100 samples (full 1000), 3 (full 5) of the large reg_mr. \
            Baselines: a 64-byte request and reply on an AF_UNIX SEQPACKET socket \
            pair between two threads (a control verb's transport), and memcpy of \
            the registered bytes into fresh pages (the copy reg_mr makes).

            Message rate (issue 8): 8-byte RDMA WRITEs on one QP pair, 64 in \
            flight, one in 16 signaled and all signaled, and one in 16 on the \
            enforcement-off router, in interleaved rounds as for key translation \
            (3 rounds of 0.15 s, full 5 of 1 s); beside the ring between two \
            processes (above), one publish per message, the consumer checking \
            every value. vs ring: ops/s / the ring's.

            Size sweep (issue 8): 8 B, 64 KiB and 4 MiB in quick mode; 8 B to 4 \
            MiB by powers of 4 (and 64 KiB, 4 MiB) in full. Bandwidth, GB/s: \
            RDMA WRITE, RDMA READ and SEND on 1 and 8 RC QP pairs (one thread \
            drives them; each end its own session), 16 MiB in flight per QP (4 to \
            64 requests, a quarter signaled), counted over 0.1 s after 0.03 s \
            (full 0.5 s after 0.1 s); memcpy: one core copying the same sizes \
            over one QP's footprint. Ping-pong: SEND round trip per size between \
            two sessions (pollers yield when idle), p50/p99, beside TCP loopback \
            with the same message size.

            Scale (issue 8): the key-translation flood (below) against targets \
            covered by 10 and 10,000 regions, while 0, 100 and 1,000 other RC QPs \
            of the same tenant are open, connected in pairs and idle (a session \
            of their own), then again once they are gone; vs: per-request cost / \
            that of 10 regions with no idle QPs. Router memory per object: VmRSS \
            (/proc/<pid>/status) and Pss (smaps_rollup) of the router before and \
            after creating them, over their number: per MR from the difference \
            between the 10,000- and the 10-region set-ups, per QP as the idle QPs \
            are created.

            Key translation (issue 5): 8-byte RDMA WRITEs from one QP pair of \
            tenant open (no rateLimits), 64 in flight, 1 in 16 signaled, each to \
            a random one of 10,000 pages (4 KiB apart) of the target, in a fixed \
            order, the same in every row. The pages are covered by 1, 10, \
            1,000 or 10,000 regions of equal size and nothing else is \
            registered at the target; each WRITE carries the rkey of its page's region, so with \
            many regions the router resolves a different key, in random order, \
            for nearly every request. Rows run in interleaved rounds (each in \
            turn, paused and drained between), ops/s is the median round, \
            spread is (max - min) / median, vs 1 MR the ratio to the 1-region \
            row of the same router (ops/s), cost vs 10 the ratio of ns/op to the \
            10-region row's, setup ms the time to open, connect and \
            register. No row without translation: no router flag skips it.

            Shaping accuracy (issue 6): one tenant per configured rate (bw-1g, \
            bw-4g, bw-16g: rateLimits.tenant.bandwidth; ops-100k, ops-1m, ops-4m: \
            rateLimits.tenant.operations), each with a burst of 10 ms at its \
            rate, floods alone with one QP: 64 KiB WRITE, SEND or READ, 16 in \
            flight, for bandwidth; 8 B, 64 in flight, 1 in 16 signaled, for \
            operations. measured: bytes (READ: bytes read back) or requests \
            completed in the window (2 s, quick 0.25 s) after the settling time \
            (0.5 s, quick 0.1 s); error % = (measured - configured) / \
            configured. unshaped: the same flood by tenant open in this run, \
            what the router reaches at all. Quick runs every rate for WRITE and \
            only the lowest for SEND and READ.

            Across hosts (issue 9, root only; else the rows say why): two \
            network namespaces joined by veth through a bridge, a router in \
            each linked by the fabric, this process a tenant of both. Sluice \
            RDMA READ of 8 B, one at a time (p50 / p99 of the round trip), and \
            64 KiB RDMA WRITEs on 4 QPs with 8 posted each (Gbit/s), beside TCP \
            over the same veth from threads of this process entered into the \
            namespaces: an 8-byte ping-pong and a stream of 64 KiB writes.

            Isolation (issue 6): the victim (tenant victim, no rateLimits) \
            measures an 8-byte SEND ping-pong between two sessions driven by \
            one thread busy-polling both CQs (p50 / p99 of the round trip), the \
            same driven by two threads that yield when idle (2T; on 2 CPUs they \
            share one, so their hand-off is in it), and then a 64 KiB WRITE stream \
            (16 in flight, GB/s), alone, then while two noisy tenants, each its \
            own process, flood 8-byte WRITEs and READs on 8 QPs each (half of \
            each), 1024 in flight per QP, 1 in 64 signaled, sleeping 1 ms \
            whenever their queues are at least half full: without limits, \
            with rateLimits.tenant.operations of 1M/s and 100K/s each, and \
            without limits at nice 19 (the kernel's lowest CPU weight, as a \
            container's cgroup would bound them, so that their processes do \
            not keep the victim's threads off the CPU). Right after the \
            unlimited noise, two CPU-only neighbours: processes with no \
            router session that run on the CPU, per wake-up, as long as each \
            noisy process did (schedstat run time / sleeps) and sleep as \
            long: the victim's CPU shared alike, the router left to the \
            victim, so what the shared CPU costs the victim is told from \
            what the router does. The same again for \
            tenant victim-share, held by its policy to 48 Gbit/s (under a \
            third of what the router moves) with weight 3 (its one-thread \
            ping-pong alone keeps the router busy most of the time; weight 3 \
            beside two of weight 1 is 60%): the victim within its policy \
            share. x solo: p99 under noise / p99 alone, GB/s under noise / \
            alone, each against its own victim's row alone. noisy \
            Kops/s: each noisy tenant's rate while the victim ran. router CPU \
            %: the router's CPU time (/proc) over the same time, % of one core; \
            neighbours CPU %: the noisy (or CPU-only) processes' run time \
            (schedstat), summed, % of one core.

            Fairness (issue 6): three tenants with identical policies (no \
            rateLimits, weight 1), each its own process flooding 8-byte WRITEs \
            on 4 QPs, 1024 in flight per QP, 1 in 64 signaled; ops/s over one \
            window (5 s, quick 1 s), each one's share of the total, CPU time of \
            each process and of the router, and Jain's index (Σx)² / (n·Σx²) \
            over the three rates (1 = equal shares, 1/3 = one gets all).

            Overhead of rate limits (issue 6): 8-byte WRITE message rate on one \
            QP pair, 64 in flight, 1 in 16 signaled, for tenant open (no \
            rateLimits) and tenant high (1 Tbit/s and 1G operations/s, never \
            reached), and, with the flag, open on the policy+shaping-off router; \
            interleaved rounds as for key translation; vs no limits: the ratio \
            to open's median. Enforcement overhead (issue 8): tenant open's 64 KiB \
            WRITE bandwidth (16 in flight, 1 in 4 signaled) on the router and on the \
            enforcement-off router, in the same interleaved rounds; vs on: the \
            ratio to the enforced median.

            Targets (issue 8), last: each of the issue's six targets as a figure \
            of this run against its bound, met / missed xN (N times away) / no \
            figure (not selected, failed, or nothing completed): 64 KiB WRITE bandwidth / memcpy >= 0.80 (bandwidth table); 8-byte \
            ping-pong p50 / TCP p50 <= 0.10 (busy-polling and yielding rows, \
            each); 8-byte WRITE \
            rate on one QP pair >= 2 M ops/s (message-rate table, 1 in 16 \
            signaled); enforcement on / off >= 0.95 for 64 KiB bandwidth and for \
            the 8-byte rate; per-request cost at 10,000 MRs and 1,000 idle QPs / \
            at 10 MRs and none <= 1.10 (scale table); idle router CPU < 1% of a \
            core (schedstat, with a QP pair open) and wake-up p99 <= 50 µs.

            Every figure goes to a CSV (metric,system,size,value,unit; --csv, \
            default /tmp/sluice-bench-<UTC time>.csv) and the size sweep to an \
            SVG plot of bandwidth and round trip against message size (--svg, \
            default: the CSV's path with .svg); both paths are printed at the end, \
            with the run's wall time. Progress lines on stderr carry the seconds \
            since the start.

            Flooders with full queues do not spin: key-translation, shaping and \
            overhead flows call sched_yield(), noisy and fair-share flows sleep \
            50 µs (their 1024-deep queues hold the router's work meanwhile), so \
            that the router, not the CPU scheduler, decides who is served.

            Percentiles are nearest-rank: the sample of rank ⌈p·n⌉ of n sorted \
            samples. Percentiles, ratios, CPU %, memory per object, /proc parsing, \
            CSV quoting, the target checks and the plot's log axes are in \
            SluiceBenchStats, tested in SluiceBenchStatsTests.

            This measures; it asserts nothing about speed. The router's poller \
            spins while there is work, so on a machine with fewer than three CPUs \
            the Sluice ping-pong (ping thread, pong thread, router) competes for \
            cores and its latency is pessimistic; the output says so.

            Exit status 1 if the router or any measurement fails: the failing \
            call and its errno are printed, the router is stopped first, and its \
            runtime directory (router.log, audit.log) is kept for reading. Every \
            wait has a timeout; a watchdog ends the run (routers first, then \
            this process by SIGTERM) if no measurement starts for 120 s (full \
            mode 600 s).
            """
    )

    @Flag(help: "Short runs (well under a minute) instead of the full ones (a few minutes).")
    var quick = false

    @Option(help: ArgumentHelp("Write every figure as CSV rows (metric,system,size,value,unit) here. Default: /tmp/sluice-bench-<time>.csv.", valueName: "file"))
    var csv: String?

    @Option(help: ArgumentHelp("Write the size sweep's plot (bandwidth and latency against message size) here. Default: the CSV's path with .svg.", valueName: "file"))
    var svg: String?

    @Option(help: ArgumentHelp("The sluice-router executable. Default: the one next to this binary.", valueName: "path"))
    var router: String?

    @Option(help: ArgumentHelp("Directory of tenant policy files for the router.", valueName: "dir"))
    var policies = "policies"

    @Option(help: ArgumentHelp("The tenant to measure as; its policy must admit this process's uid.", valueName: "name"))
    var tenant = "alpha"

    @Option(name: .customLong("spin-us"), help: ArgumentHelp("Passed to the router: how long its poller spins without work before it sleeps. Default: the router's.", valueName: "us"))
    var spinMicros: UInt64?

    @Option(help: ArgumentHelp("Run only these tables, comma-separated: \(Self.tableNames.joined(separator: ", ")). Default: all.", valueName: "names"))
    var only: String?

    static let tableNames = ["latency", "bandwidth", "decisions", "audit", "burst", "cpu", "control", "rate", "sweep", "scale",
                             "keys", "shaping", "isolation", "fairness", "overhead", "crosshost", "targets"]
    /// The tables that run against the second router, on generated policies.
    static let generatedPolicyTables: Set<String> = ["cpu", "control", "rate", "sweep", "scale", "keys", "shaping", "isolation", "fairness", "overhead"]

    @Option(name: .customLong("flood-worker"), help: ArgumentHelp(visibility: .private))
    var floodWorker: String?

    @Option(name: .customLong("flood-socket"), help: ArgumentHelp(visibility: .private))
    var floodSocket: String?

    @Option(name: .customLong("flood-control"), help: ArgumentHelp(visibility: .private))
    var floodControl: String?

    func run() throws {
        // A TCP peer that goes away must be an error from write, not a signal.
        signal(SIGPIPE, SIG_IGN)
        // A noisy or fair-share tenant, started by this same program.
        if let floodWorker {
            guard let floodSocket, let floodControl else { throw ValidationError("--flood-worker needs --flood-socket and --flood-control") }
            let status = WorkerFlow.main(shape: floodWorker, socket: floodSocket, controlPath: floodControl)
            if status != 0 { throw ExitCode(status) }
            return
        }
        let selected = Set((only ?? Self.tableNames.joined(separator: ",")).split(separator: ",").map { String($0) })
        if let bad = selected.first(where: { !Self.tableNames.contains($0) }) {
            throw ValidationError("--only: no table \"\(bad)\"; the tables are \(Self.tableNames.joined(separator: ", "))")
        }
        let plans = quick ? Plans.quick : Plans.full
        let started = benchStartNanos
        let csvPath = csv.map(Self.absolute) ?? Self.defaultCSVPath()
        let svgPath = svg.map(Self.absolute) ?? (csvPath.hasSuffix(".csv") ? String(csvPath.dropLast(4)) : csvPath) + ".svg"
        Self.raiseFileLimit()
        startWatchdog(seconds: quick ? 120 : 600)
        let routerPath = try router ?? RouterProcess.siblingExecutable()
        let policiesPath = Self.absolute(policies)

        print("Sluice benchmark, \(quick ? "quick" : "full") mode")
        print("  machine  \(Machine.onlineCPUs) CPUs online, \(Machine.cpuModel), \(Machine.kernel)")
        print("  build    sluice-bench \(Machine.buildMode); router \(routerPath) (\(Machine.buildMode(ofExecutable: routerPath)))")

        let process: RouterProcess
        do {
            process = try RouterProcess(executable: routerPath, policies: policiesPath, tenant: tenant, spinMicros: spinMicros)
        } catch {
            Self.complain("cannot start the router: \(error)")
            throw ExitCode(1)
        }
        print("  router   pid \(process.pid), tenant \(tenant), runtime \(process.runtimeDir), policies \(policiesPath), "
              + "spin \(spinMicros.map { "\($0) µs" } ?? "router default")")
        if Machine.onlineCPUs < 3 {
            print("""
                  note     \(Machine.onlineCPUs) CPUs: in the Sluice ping-pong the ping thread, the pong thread and the \
                router's poller all spin on \(Machine.onlineCPUs) cores, so its latency includes scheduler \
                time slices and is pessimistic here. Baselines use two threads.
                """)
        }
        print("")

        let suite = Suite(router: process, plans: plans, policies: policiesPath)
        let base: [(String, () -> Table)] = [("latency", suite.latency), ("bandwidth", suite.bandwidth),
                                             ("decisions", suite.policyDecisions), ("audit", suite.auditWriting),
                                             ("burst", suite.denialBurst)]
        for (name, table) in base where selected.contains(name) { Self.show(table()) }

        var failures = suite.failures
        var figures = suite.figures
        var keep = [process.runtimeDir]
        // Stopped before the next tables start their own router, so that
        // only one router runs at a time.
        do {
            if let how = try process.stop(), how != "exit status 0" {
                failures.append("sluice-router stopped with \(how)\n\(process.logTail())")
            }
        } catch {
            failures.append("\(error)")
        }

        // Key translation, shaping, isolation, fairness and the overhead of
        // limits: tenants with policies of their own, on a router of their own.
        var isolation: IsolationSuite?
        do {
            if !selected.isDisjoint(with: Self.generatedPolicyTables) {
                isolation = try IsolationSuite(executable: routerPath, plans: quick ? .quick : .full, spinMicros: spinMicros)
            }
        } catch {
            failures.append("cannot start the router for the shaping and isolation tables: \(error)")
        }
        if let iso = isolation {
            print("  router   pid \(iso.router.pid), runtime \(iso.router.runtimeDir), policies \(iso.policyDir) (generated)"
                  + (iso.routerOff.map { "; with \(IsolationSuite.noEnforcementFlag): pid \($0.pid)" } ?? ""))
            print("")
            let limits = LimitsSuite(router: iso.router, routerOff: iso.routerOff, tenant: IsolationSuite.open,
                                     plans: quick ? .quick : .full, spinMicros: spinMicros)
            let more: [(String, () -> [Table])] = [
                ("cpu", { let (a, b) = limits.routerCPUTable(); return [a, b] }),
                ("control", { [limits.controlVerbs()] }),
                ("rate", { [limits.messageRate()] }),
                ("sweep", { [limits.sweepBandwidth(), limits.sweepLatency()] }),
                ("scale", { let (a, b) = limits.scale(); return [a, b] }),
                ("keys", { [iso.keyTranslation()] }), ("shaping", iso.shapingAccuracy),
                ("isolation", { [iso.isolation()] }), ("fairness", { [iso.fairness()] }),
                ("overhead", { [iso.overhead(), iso.enforcementBandwidth()] }),
            ]
            for (name, tables) in more where selected.contains(name) {
                for t in tables() { Self.show(t) }
            }
            failures += limits.failures + iso.failures + iso.stop()
            figures += limits.figures + iso.figures
            keep += iso.runtimeDirs
        }

        // Two hosts (network namespaces, root only), with routers of their own.
        if selected.contains("crosshost") {
            let cross = CrossHostBench(routerPath: routerPath, quick: quick)
            Self.show(cross.table())
            failures += cross.failures
            figures += cross.figures
        }

        if selected.contains("targets") {
            let (table, targetFigures) = Targets.table(figures)
            Self.show(table)
            figures += targetFigures
        }
        do {
            if try Plot.write(figures, title: "Sluice size sweep (\(quick ? "quick" : "full") mode, \(Machine.onlineCPUs) CPUs)", to: svgPath) {
                print("plot  \(svgPath)")
            }
        } catch {
            failures.append("\(error)")
        }
        do {
            try CSV.write(figures, to: csvPath)
            print("csv   \(csvPath) (\(figures.count) rows)")
        } catch {
            failures.append("\(error)")
        }
        print(String(format: "time  %.1f s", Double(monotonicNanos() &- started) / 1e9))
        guard failures.isEmpty else {
            for f in failures { Self.complain(f) }
            Self.complain("router runtime directories kept for inspection: \(keep.joined(separator: ", "))")
            throw ExitCode(1)
        }
        process.removeRuntimeDir()
        isolation?.removeScratch()
    }

    /// Prints a table as soon as it is measured, before the progress lines
    /// of the next one reach stderr.
    static func show(_ table: Table) {
        print(table.render())
        fflush(stdout)
    }

    static func complain(_ message: String) {
        FileHandle.standardError.write("sluice-bench: \(message)\n".data(using: .utf8)!)
    }

    /// /tmp/sluice-bench-<UTC date and time>.csv
    static func defaultCSVPath() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y%m%d-%H%M%S", &parts)
        let stamp = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "/tmp/sluice-bench-\(stamp).csv"
    }

    /// The scale table opens a thousand QPs and ten thousand regions, each
    /// with file descriptors on both sides; the router, started by this
    /// process, inherits the raised limit.
    static func raiseFileLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

SluiceBench.main()
