#if canImport(Glibc)
import Glibc
#endif

/// A failed system call, named, with its errno.
struct SystemCallError: Error, CustomStringConvertible {
    let call: String
    let code: Int32

    init(_ call: String, _ code: Int32) {
        self.call = call
        self.code = code
    }

    var description: String { "\(call) failed: \(String(cString: strerror(code))) (errno \(code))" }
}

/// A failed verbs call. libibverbs reports errors three ways: NULL plus
/// errno (open, alloc, create, reg), a positive errno as the return value
/// (modify, post, destroy), or a negative return (poll); `check` knows which.
struct VerbsError: Error, CustomStringConvertible {
    let call: String
    let code: Int32

    init(_ call: String, _ code: Int32) {
        self.call = call
        self.code = code
    }

    var description: String { "\(call) failed: \(String(cString: strerror(code))) (errno \(code))" }

    /// For verbs that return 0 or an errno value (some older providers
    /// return -1 and set errno instead; both are handled).
    static func check(_ call: @autoclosure () -> String, _ rc: Int32) throws {
        if rc == 0 { return }
        let code = rc > 0 ? rc : (errno != 0 ? errno : EIO)
        throw VerbsError(call(), code)
    }
}

/// Anything else that stops a measurement, in words.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Retries a call interrupted by a signal.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let r = body()
        if r >= 0 || errno != EINTR { return r }
    }
}
