import Foundation
import XCTest
@testable import SluicePolicy

/// Every file in Corpus/ is a broken policy whose first line says how the
/// loader must reject it: `# expect: <file>:<line>:<column>: <field>: <message>`.
final class CorpusTests: XCTestCase {
    func testEveryCorpusFileIsRejectedWithItsExpectedMessage() throws {
        let dir = try XCTUnwrap(Bundle.module.url(forResource: "Corpus", withExtension: nil))
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 40, "the corpus went missing")
        for name in names {
            let text = try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
            let firstLine = text.prefix { $0 != "\n" }
            guard firstLine.hasPrefix("# expect: ") else {
                XCTFail("\(name): the first line must be `# expect: <first error line>`")
                continue
            }
            let expected = String(firstLine.dropFirst("# expect: ".count))
            do {
                // Loaded as a set of one, as the router would load a
                // directory holding only this file.
                _ = try PolicySet(files: [PolicyFile(path: name, text: text)])
                XCTFail("\(name) was accepted")
            } catch let e as PolicyLoadError {
                XCTAssertEqual(e.errors.first?.headline, expected, name)
            }
        }
    }
}
