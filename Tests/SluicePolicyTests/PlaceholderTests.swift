import XCTest
final class PolicyPlaceholderTests: XCTestCase { func testPlaceholder() {} }
