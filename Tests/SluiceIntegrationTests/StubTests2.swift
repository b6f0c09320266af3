import XCTest
final class StubTests2: XCTestCase { func testX() {} }
