import XCTest
@testable import SluiceCluster

final class StaticDirectoryTests: XCTestCase {
    let good = """
        apiVersion: sluice/v1
        kind: Cluster
        spec:
          routers:
            - name: host-a
              fabric: 10.99.0.1:7470
              lids: [1-4095]
              addresses: [10.77.0.0/18]
            - name: host-b
              fabric: "[fd00::2]:7470"
              lids: [4096-8191, "9000"]
              addresses: [10.77.64.0/18, 10.78.0.0/16]
        """

    func testAValidFileMapsLIDsAndAddressesToTheirRouter() throws {
        let d = try StaticDirectory.parse(good, path: "cluster.yaml")
        XCTAssertEqual(d.routers.map(\.name), ["host-a", "host-b"])
        XCTAssertEqual(d.router(forLID: 1)?.name, "host-a")
        XCTAssertEqual(d.router(forLID: 4096)?.name, "host-b")
        XCTAssertEqual(d.router(forLID: 9000)?.name, "host-b")
        XCTAssertNil(d.router(forLID: 8500))
        XCTAssertEqual(d.router(forIPv4: 0x0a4d_0001)?.name, "host-a")     // 10.77.0.1
        XCTAssertEqual(d.router(forIPv4: 0x0a4e_1234)?.name, "host-b")     // 10.78.18.52
        XCTAssertNil(d.router(forIPv4: 0x0a4f_0001))
        XCTAssertEqual(d.router(named: "host-b")?.address, RouterAddress(name: "host-b", host: "fd00::2", port: 7470))
        XCTAssertEqual(d.router(named: "host-b")?.address.endpoint, "[fd00::2]:7470")
    }

    func testEveryMistakeIsNamedWithItsPlace() {
        let cases: [(String, String)] = [
            (good.replacingOccurrences(of: "kind: Cluster", with: "kind: Clusters"), "kind must be Cluster"),
            (good.replacingOccurrences(of: "      lids: [1-4095]", with: "      lids: [1-4095]\n      color: red"), "unknown field \"color\""),
            (good.replacingOccurrences(of: "fabric: 10.99.0.1:7470", with: "fabric: host-a.example:7470"), "is not a literal address:port"),
            (good.replacingOccurrences(of: "fabric: 10.99.0.1:7470", with: "fabric: 10.99.0.1:0"), "is not a literal address:port"),
            (good.replacingOccurrences(of: "name: host-a", with: "name: Host_A"), "is not a DNS label"),
            (good.replacingOccurrences(of: "name: host-a", with: "name: host-b"), "host-b appears twice"),
            (good.replacingOccurrences(of: "[1-4095]", with: "[1-4096]"), "overlap"),
            (good.replacingOccurrences(of: "[1-4095]", with: "[0-10]"), "is not a LID or a range"),
            (good.replacingOccurrences(of: "[1-4095]", with: "[10-1]"), "is not a LID or a range"),
            (good.replacingOccurrences(of: "[1-4095]", with: "[49152]"), "is not a LID or a range"),
            (good.replacingOccurrences(of: "10.77.0.0/18]", with: "10.77.64.0/20]"), "overlap"),
            (good.replacingOccurrences(of: "10.77.0.0/18]", with: "10.77.0.0/33]"), "addresses"),
            (good.replacingOccurrences(of: "[fd00::2]:7470", with: "10.99.0.1:7470"), "share the link address"),
            (good.replacingOccurrences(of: "[1-4095]", with: "[]"), "owns no LIDs"),
            ("apiVersion: sluice/v1\nkind: Cluster\nspec:\n  routers: []\n", "lists no router"),
            ("", "empty file"),
            ("- a\n- b\n", "must be a mapping"),
        ]
        for (text, message) in cases {
            XCTAssertThrowsError(try StaticDirectory.parse(text, path: "cluster.yaml"), message) { e in
                XCTAssert("\(e)".contains(message), "\(e) does not say: \(message)")
                XCTAssert("\(e)".hasPrefix("cluster.yaml"), "\(e) does not name the file")
            }
        }
    }

    func testErrorsCarryLineAndColumn() {
        let text = good.replacingOccurrences(of: "fabric: 10.99.0.1:7470", with: "fabric: nowhere")
        XCTAssertThrowsError(try StaticDirectory.parse(text, path: "c.yaml")) { e in
            XCTAssert("\(e)".hasPrefix("c.yaml:6:"), "\(e)")
        }
    }

    func testTheExampleFileInTheRepositoryIsValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let d = try StaticDirectory.load(path: root.appendingPathComponent("examples/cluster/cluster.yaml").path)
        XCTAssertGreaterThanOrEqual(d.routers.count, 2)
    }
}
