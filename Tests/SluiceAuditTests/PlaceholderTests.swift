import XCTest
final class AuditPlaceholderTests: XCTestCase { func testPlaceholder() {} }
