import Foundation
import Yams

/// What the router knows of one tenant: its name (which names its socket) and
/// the credentials admitted on that socket. The full policy (quotas, access,
/// peers, rates) is the policy engine's; this is the identity part.
public struct TenantDefinition: Equatable, Sendable {
    public var name: String
    public var uids: Set<UInt32>
    public var gids: Set<UInt32>
    /// The file it was loaded from, for messages.
    public var source: String

    public init(name: String, uids: Set<UInt32>, gids: Set<UInt32> = [], source: String = "") {
        self.name = name
        self.uids = uids
        self.gids = gids
        self.source = source
    }

    /// Whether a peer with these credentials may use this tenant's socket.
    public func admits(uid: UInt32, gid: UInt32) -> Bool {
        uids.contains(uid) || gids.contains(gid)
    }
}

/// A policy file that could not be used: `file:line:column: field: message`.
public struct PolicyFileError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int
    public let column: Int
    public let field: String
    public let message: String

    public var description: String {
        let place = line > 0 ? "\(file):\(line):\(column)" : file
        return field.isEmpty ? "\(place): \(message)" : "\(place): \(field): \(message)"
    }
}

/// Loads tenant definitions from a directory of `*.yaml` files, strictly:
/// unknown keys, wrong types and bad values are errors that name the place.
public enum TenantLoader {
    static let namePattern = try! NSRegularExpression(pattern: "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

    public static func loadDirectory(_ dir: String) throws -> [TenantDefinition] {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: dir) else {
            throw PolicyFileError(file: dir, line: 0, column: 0, field: "", message: "cannot read the policy directory")
        }
        var tenants: [TenantDefinition] = []
        var seen: [String: String] = [:]
        for name in names.sorted() where name.hasSuffix(".yaml") || name.hasSuffix(".yml") {
            let path = (dir as NSString).appendingPathComponent(name)
            guard let data = fm.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw PolicyFileError(file: path, line: 0, column: 0, field: "", message: "cannot read the file as UTF-8")
            }
            let tenant = try parse(text, file: path)
            if let other = seen[tenant.name] {
                throw PolicyFileError(file: path, line: 0, column: 0, field: "metadata.name",
                                      message: "tenant \"\(tenant.name)\" is already defined in \(other)")
            }
            seen[tenant.name] = path
            tenants.append(tenant)
        }
        return tenants
    }

    public static func parse(_ text: String, file: String) throws -> TenantDefinition {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw PolicyFileError(file: file, line: 0, column: 0, field: "", message: "the file is empty")
            }
            root = node
        } catch let e as PolicyFileError {
            throw e
        } catch let e as YamlError {
            throw PolicyFileError(file: file, line: 0, column: 0, field: "", message: "not valid YAML: \(e)")
        }
        let doc = try mapping(root, "", file)
        try onlyKeys(doc, ["apiVersion", "kind", "metadata", "spec"], "", file)
        let api = try string(required(doc, "apiVersion", "", root, file), "apiVersion", file)
        guard api == "sluice/v1" else {
            throw error(doc["apiVersion"]!, "apiVersion", "Unsupported value: \"\(api)\": supported values: \"sluice/v1\"", file)
        }
        let kind = try string(required(doc, "kind", "", root, file), "kind", file)
        guard kind == "TenantPolicy" else {
            throw error(doc["kind"]!, "kind", "Unsupported value: \"\(kind)\": supported values: \"TenantPolicy\"", file)
        }
        let metaNode = try required(doc, "metadata", "", root, file)
        let meta = try mapping(metaNode, "metadata", file)
        try onlyKeys(meta, ["name"], "metadata", file)
        let nameNode = try required(meta, "name", "metadata", metaNode, file)
        let name = try string(nameNode, "metadata.name", file)
        let range = NSRange(name.startIndex..., in: name)
        guard namePattern.firstMatch(in: name, range: range) != nil else {
            throw error(nameNode, "metadata.name",
                        "Invalid value: \"\(name)\": must be a DNS label (lower-case letters, digits and '-', at most 63)", file)
        }
        let specNode = try required(doc, "spec", "", root, file)
        let spec = try mapping(specNode, "spec", file)
        try onlyKeys(spec, ["identity"], "spec", file)
        let identityNode = try required(spec, "identity", "spec", specNode, file)
        let identity = try mapping(identityNode, "spec.identity", file)
        try onlyKeys(identity, ["uids", "gids"], "spec.identity", file)
        let uids = try idList(identity["uids"], "spec.identity.uids", file)
        let gids = try idList(identity["gids"], "spec.identity.gids", file)
        if uids.isEmpty && gids.isEmpty {
            throw error(identityNode, "spec.identity", "Required value: at least one uid or gid must be admitted", file)
        }
        return TenantDefinition(name: name, uids: uids, gids: gids, source: file)
    }

    // MARK: node helpers

    private static func error(_ node: Node, _ field: String, _ message: String, _ file: String) -> PolicyFileError {
        let mark = node.mark
        return PolicyFileError(file: file, line: mark?.line ?? 0, column: mark?.column ?? 0, field: field, message: message)
    }

    private static func mapping(_ node: Node, _ field: String, _ file: String) throws -> Node.Mapping {
        guard let m = node.mapping else {
            throw error(node, field.isEmpty ? "(document)" : field, "Invalid type: expected a mapping", file)
        }
        return m
    }

    private static func required(_ m: Node.Mapping, _ key: String, _ parent: String, _ parentNode: Node, _ file: String) throws -> Node {
        guard let v = m[key] else {
            let field = parent.isEmpty ? key : "\(parent).\(key)"
            throw error(parentNode, field, "Required value", file)
        }
        return v
    }

    private static func onlyKeys(_ m: Node.Mapping, _ allowed: Set<String>, _ parent: String, _ file: String) throws {
        for (k, _) in m {
            guard let key = k.string else { throw error(k, parent, "Invalid key: keys must be strings", file) }
            if !allowed.contains(key) {
                let field = parent.isEmpty ? key : "\(parent).\(key)"
                throw error(k, field, "Unknown field: supported fields here: \(allowed.sorted().joined(separator: ", "))", file)
            }
        }
    }

    private static func string(_ node: Node, _ field: String, _ file: String) throws -> String {
        guard let s = node.scalar, s.style == .plain || s.style == .singleQuoted || s.style == .doubleQuoted,
              !s.string.isEmpty else {
            throw error(node, field, "Invalid type: expected a non-empty string", file)
        }
        return s.string
    }

    private static func idList(_ node: Node?, _ field: String, _ file: String) throws -> Set<UInt32> {
        guard let node else { return [] }
        guard let seq = node.sequence else { throw error(node, field, "Invalid type: expected a list of numeric ids", file) }
        var out = Set<UInt32>()
        for (i, item) in seq.enumerated() {
            guard let s = item.scalar, let v = UInt32(s.string), s.style == .plain else {
                throw error(item, "\(field)[\(i)]", "Invalid value: expected a numeric id from 0 to 4294967295", file)
            }
            out.insert(v)
        }
        return out
    }
}
