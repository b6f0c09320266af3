import XCTest
@testable import SluiceRouter

final class TenantLoaderTests: XCTestCase {
    func parse(_ text: String) throws -> TenantDefinition {
        try TenantLoader.parse(text, file: "t.yaml")
    }

    func error(_ text: String) -> String {
        do {
            _ = try parse(text)
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    let good = """
        apiVersion: sluice/v1
        kind: TenantPolicy
        metadata:
          name: alpha
        spec:
          identity:
            uids: [0, 1000]
            gids: [2000]
        """

    func testAGoodFileLoads() throws {
        let t = try parse(good)
        XCTAssertEqual(t.name, "alpha")
        XCTAssertEqual(t.uids, [0, 1000])
        XCTAssertEqual(t.gids, [2000])
        XCTAssertTrue(t.admits(uid: 1000, gid: 5))
        XCTAssertTrue(t.admits(uid: 5, gid: 2000))
        XCTAssertFalse(t.admits(uid: 5, gid: 5))
    }

    func testUnknownKeyIsAnErrorWithItsPlace() {
        let text = good.replacingOccurrences(of: "    gids: [2000]", with: "    gids: [2000]\n    colour: red")
        XCTAssertEqual(error(text), "t.yaml:9:5: spec.identity.colour: Unknown field: supported fields here: gids, uids")
    }

    func testBadNameIsAnErrorWithItsPlace() {
        let text = good.replacingOccurrences(of: "name: alpha", with: "name: Alpha_1")
        XCTAssertEqual(error(text), "t.yaml:4:9: metadata.name: Invalid value: \"Alpha_1\": must be a DNS label (lower-case letters, digits and '-', at most 63)")
    }

    func testWrongTypesAndValuesAreErrors() {
        XCTAssertEqual(error(good.replacingOccurrences(of: "uids: [0, 1000]", with: "uids: [0, -3]")),
                       "t.yaml:7:15: spec.identity.uids[1]: Invalid value: expected a numeric id from 0 to 4294967295")
        XCTAssertEqual(error(good.replacingOccurrences(of: "uids: [0, 1000]", with: "uids: root")),
                       "t.yaml:7:11: spec.identity.uids: Invalid type: expected a list of numeric ids")
        XCTAssertTrue(error(good.replacingOccurrences(of: "sluice/v1", with: "sluice/v9")).contains("apiVersion: Unsupported value"))
    }

    func testMissingIdentityIsAnError() {
        let text = """
            apiVersion: sluice/v1
            kind: TenantPolicy
            metadata:
              name: alpha
            spec:
              identity: {}
            """
        XCTAssertTrue(error(text).contains("spec.identity: Required value"), error(text))
    }

    func testShippedExamplePoliciesLoad() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let tenants = try TenantLoader.loadDirectory(root.appendingPathComponent("policies").path)
        XCTAssertEqual(Set(tenants.map(\.name)), ["alpha", "beta"])
    }
}
