import Foundation

/// A policy file as read: its path and exact bytes, so the router can digest
/// what it loaded (and audit it) without reading the files again.
public struct PolicyFile: Equatable, Sendable {
    public let path: String
    public let bytes: [UInt8]

    public init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }

    public init(path: String, text: String) {
        self.init(path: path, bytes: Array(text.utf8))
    }
}

/// Every tenant's policy, validated together: names are unique, address
/// pools do not overlap, and every peer names a tenant that exists. A set is
/// all or nothing: one bad file and nothing loads, so a reload can keep the
/// policy in force.
public struct PolicySet: Sendable {
    /// Sorted by name.
    public let tenants: [TenantPolicy]
    /// The files the set was built from, sorted by path.
    public let files: [PolicyFile]
    private let byName: [String: Int]

    public subscript(_ tenant: String) -> TenantPolicy? {
        byName[tenant].map { tenants[$0] }
    }

    public var names: [String] { tenants.map(\.name) }

    /// Validates the files as one set. Throws `PolicyLoadError` with every
    /// error found, sorted by file and place.
    public init(files: [PolicyFile]) throws {
        let files = files.sorted { $0.path < $1.path }
        var errors: [PolicyError] = []
        var parsed: [PolicyParser.Parsed] = []
        for f in files {
            guard let text = String(validating: f.bytes, as: UTF8.self) else {
                errors.append(PolicyError(file: f.path, message: "Invalid value: the file is not UTF-8 text"))
                continue
            }
            let p = PolicyParser.parse(text, file: f.path)
            errors += p.errors
            parsed.append(p)
        }
        errors += PolicySet.crossCheck(parsed)
        guard errors.isEmpty else {
            throw PolicyLoadError(PolicySet.sorted(errors))
        }
        let tenants = parsed.compactMap(\.policy).sorted { $0.name < $1.name }
        self.tenants = tenants
        self.files = files
        self.byName = Dictionary(uniqueKeysWithValues: tenants.enumerated().map { ($1.name, $0) })
    }

    /// Reads every `*.yaml` and `*.yml` file in `directory` (not hidden ones,
    /// not subdirectories: a Kubernetes ConfigMap mount keeps its real files
    /// under `..data`) and validates them as one set.
    public static func load(directory: String) throws -> PolicySet {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory) else {
            throw PolicyLoadError([PolicyError(file: directory, message: "cannot read the policy directory")])
        }
        var files: [PolicyFile] = []
        var errors: [PolicyError] = []
        for name in names.sorted() where !name.hasPrefix(".") && (name.hasSuffix(".yaml") || name.hasSuffix(".yml")) {
            let path = (directory as NSString).appendingPathComponent(name)
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else { continue }
            guard let data = fm.contents(atPath: path) else {
                errors.append(PolicyError(file: path, message: "cannot read the file"))
                continue
            }
            files.append(PolicyFile(path: path, bytes: Array(data)))
        }
        if files.isEmpty && errors.isEmpty {
            errors.append(PolicyError(file: directory, message: "Required value: no policy files (*.yaml, *.yml) in the directory"))
        }
        let set: PolicySet
        do {
            set = try PolicySet(files: files)
        } catch let e as PolicyLoadError {
            throw PolicyLoadError(sorted(errors + e.errors))
        }
        guard errors.isEmpty else { throw PolicyLoadError(errors) }
        return set
    }

    /// Loads one file on its own: every check but those across files.
    public static func parseFile(_ text: String, file: String) throws -> TenantPolicy {
        let p = PolicyParser.parse(text, file: file)
        guard let policy = p.policy else { throw PolicyLoadError(p.errors) }
        return policy
    }

    // MARK: checks across files

    private static func crossCheck(_ parsed: [PolicyParser.Parsed]) -> [PolicyError] {
        var errors: [PolicyError] = []
        // Every readable name counts as defined, even in a file with errors,
        // so one broken file does not make its peers' entries errors too.
        let defined = Set(parsed.compactMap(\.name))
        var firstFile: [String: String] = [:]
        for p in parsed {
            guard let name = p.name, let at = p.nameAt else { continue }
            if let other = firstFile[name] {
                errors.append(at.error("metadata.name", "Duplicate value: \"\(name)\": tenant already defined in \(other)"))
            } else {
                firstFile[name] = at.file
            }
        }
        var pools: [(pool: IPv4Pool, tenant: String, file: String)] = []
        for p in parsed {
            if let (pool, at) = p.pool {
                if let other = pools.first(where: { $0.pool.overlaps(pool) }) {
                    errors.append(at.error("spec.addressPool",
                                           "Invalid value: \"\(pool)\": overlaps \(other.pool) of tenant \(other.tenant) (\(other.file))"))
                }
                pools.append((pool, p.name ?? "?", at.file))
            }
            for peer in p.peerTenants where !defined.contains(peer.tenant) {
                let known = defined.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
                errors.append(peer.at.error("spec.peers[\(peer.index)].tenant",
                                            "Not found: \"\(peer.tenant)\": no such tenant; defined tenants: \(known)"))
            }
        }
        return errors
    }

    private static func sorted(_ errors: [PolicyError]) -> [PolicyError] {
        errors.enumerated().sorted { a, b in
            (a.element.file, a.element.line, a.element.column, a.offset) < (b.element.file, b.element.line, b.element.column, b.offset)
        }.map(\.element)
    }
}
