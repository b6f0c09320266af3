#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Closes file descriptors a tenant handed over, on a thread of its own.
/// `close(2)` of a tenant-made socket with SO_LINGER set and unsent data
/// blocks for the linger time; on the event loop that would stall every
/// tenant. The reaper starts with the router, before the sandbox, so its
/// thread is confined like the others.
final class FDReaper: @unchecked Sendable {
    private let cond = NSCondition()
    private var pending: [Int32] = []

    init() {
        let t = Thread { [unowned self] in self.loop() }
        t.name = "sluice-fd-reaper"
        t.start()
    }

    func close(_ fd: Int32) {
        guard fd >= 0 else { return }
        cond.lock()
        pending.append(fd)
        cond.signal()
        cond.unlock()
    }

    private func loop() {
        while true {
            cond.lock()
            while pending.isEmpty { cond.wait() }
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            cond.unlock()
            batch.forEach(Sys.close)
        }
    }
}
