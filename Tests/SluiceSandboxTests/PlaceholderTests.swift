import XCTest
final class SandboxPlaceholderTests: XCTestCase { func testPlaceholder() {} }
