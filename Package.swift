// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Sluice",
    products: [
        .executable(name: "sluice-router", targets: ["sluice-router"]),
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "sluice-bench", targets: ["sluice-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // Wire messages and shared-memory ring layouts, one C header for both sides.
        .target(name: "SluiceWire"),
        // The tenant-side verbs library. The Makefile links these same sources
        // into libsluice-verbs.so with gcc (a SwiftPM dynamic product would
        // pull in the Swift runtime); the integration tests link them statically.
        .target(
            name: "SluiceVerbs",
            dependencies: ["SluiceWire"],
            cSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"])]
        ),
        // Tenant policies: model, strict YAML loading, decisions. Pure: no I/O
        // in decisions, no dependency on the router.
        .target(name: "SluicePolicy", dependencies: [.product(name: "Yams", package: "Yams")]),
        // The tamper-evident audit log: writer, reader, verifier.
        .target(name: "SluiceAudit", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        // libseccomp and libcap through pkg-config; Swift wrappers in SluiceSandbox.
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        // The router's sandbox: no_new_privs, capabilities, the seccomp allowlist.
        .target(name: "SluiceSandbox", dependencies: ["CSeccomp", "CCap"], resources: [.embedInCode("router.seccomp.json")]),
        // libibverbs through pkg-config, for the router's verbs backend only
        // (never the tenant library: that one *is* a libibverbs).
        .systemLibrary(name: "CIBVerbs", pkgConfig: "libibverbs", providers: [.apt(["libibverbs-dev"])]),
        // C shims for the router's system calls (SCM_RIGHTS, SO_PEERCRED, fcntl).
        .target(name: "CSluiceSys"),
        // TCP and epoll shims for the fabric link and the etcd client.
        .target(name: "CSluiceNet"),
        // Many hosts: the cluster directory (static file or etcd), the
        // router-to-router link (framing, handshake, connections).
        .target(
            name: "SluiceCluster",
            dependencies: ["CSluiceNet", "SluicePolicy", .product(name: "Yams", package: "Yams"),
                           .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "SluiceRouter",
            dependencies: ["SluiceWire", "CSluiceSys", "SluicePolicy", "SluiceAudit", "SluiceSandbox", "SluiceCluster", .product(name: "Crypto", package: "swift-crypto")],
            // The test-only trigger of a seccomp violation exists in debug
            // builds only; release builds (make bench, deployments) lack it.
            swiftSettings: [.define("SLUICE_TEST_HOOKS", .when(configuration: .debug))]
        ),
        // The verbs backend: tenants' objects and work requests on a real
        // RDMA device. A module of its own so that only sluice-router links
        // libibverbs (the CLI, the bench and the tests' in-process tenants
        // link the tenant library's ibv_* symbols instead).
        .target(name: "SluiceVerbsBackend", dependencies: ["SluiceRouter", "SluiceWire", "CIBVerbs"]),
        .executableTarget(
            name: "sluice-router",
            dependencies: ["SluiceRouter", "SluiceVerbsBackend", "SluiceCluster", "SluicePolicy", "SluiceAudit", "SluiceSandbox", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "sluice",
            dependencies: ["SluiceRouter", "SluiceWire", "SluicePolicy", "SluiceAudit", "SluiceSandbox",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The statistics sluice-bench prints (percentiles, ratios, Jain's
        // index): pure, in a library so that a test can check them.
        .target(name: "SluiceBenchStats"),
        // `make bench`: Sluice beside baselines measured in the same run.
        .executableTarget(
            name: "sluice-bench",
            dependencies: ["SluiceVerbs", "SluiceWire", "SluiceRouter", "SluicePolicy", "SluiceAudit", "SluiceBenchStats", "CSluiceNet",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "SluicePolicyTests", dependencies: ["SluicePolicy"], resources: [.copy("Corpus")]),
        .testTarget(name: "SluiceAuditTests", dependencies: ["SluiceAudit"]),
        .testTarget(name: "SluiceBenchStatsTests", dependencies: ["SluiceBenchStats"]),
        .testTarget(name: "SluiceSandboxTests", dependencies: ["SluiceSandbox"]),
        .testTarget(name: "SluiceClusterTests", dependencies: ["SluiceCluster", "CSluiceNet", "SluicePolicy"]),
        .testTarget(name: "SluiceRouterTests", dependencies: ["SluiceRouter", "SluiceWire"]),
        .testTarget(name: "SluiceIntegrationTests", dependencies: ["SluiceVerbs", "SluiceWire", "SluiceRouter", "CSluiceSys"]),
    ],
    swiftLanguageModes: [.v5]
)
