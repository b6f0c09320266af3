import Foundation
import XCTest
import SluiceVerbs
import CSluiceSys

/// A router on the verbs backend that is itself a tenant of another router
/// registers its mapping of its own tenant's memfd. libsluice-verbs must
/// register such pages in place (the memfd and its offset), not re-back
/// them with a new memfd, which would end the sharing with that tenant.
final class SharedMemfdRegistrationTests: XCTestCase {
    /// The inode /proc/self/maps names for the mapping that holds `p`.
    private func mappedInode(_ p: UnsafeMutableRawPointer) -> (inode: UInt64, path: String)? {
        let a = UInt(bitPattern: p)
        // /proc files report size 0: read to the end rather than by size.
        guard let h = FileHandle(forReadingAtPath: "/proc/self/maps") else { return nil }
        defer { try? h.close() }
        let maps = String(decoding: h.readDataToEndOfFile(), as: UTF8.self)
        for line in maps.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            let range = f[0].split(separator: "-")
            guard let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16), lo <= a, a < hi else { continue }
            return (UInt64(f[4]) ?? 0, f.count > 5 ? f[5...].joined(separator: " ") : "")
        }
        return nil
    }

    func testASealedSharedMemfdIsRegisteredInPlaceAndStaysShared() throws {
        let router = try RouterProcess(tenants: ["alpha"])
        let a = try VerbsEndpoint(socket: router.socket("alpha"))
        let b = try VerbsEndpoint(socket: router.socket("alpha"))
        let size = 4 * 4096
        let fd = sluice_memfd_sealed("inner-tenant", UInt64(size))
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var st = stat()
        XCTAssertEqual(fstat(fd, &st), 0)
        // Two views of the memfd: the one registered (the inner router's
        // mapping) and an observer (the inner tenant's).
        guard let view = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), view != MAP_FAILED,
              let observer = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), observer != MAP_FAILED else {
            throw VerbsError("mmap", errno)
        }
        defer { munmap(view, size); munmap(observer, size) }
        for i in 0..<size { observer.storeBytes(of: UInt8(i & 0xff), toByteOffset: i, as: UInt8.self) }

        // Not page-aligned, inside the second and third pages.
        let region = view + 4096 + 100
        let mr = try a.register(region, 5000, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue))
        // Still the same memfd behind those pages: no copy, no new backing.
        XCTAssertEqual(mappedInode(region)?.inode, UInt64(st.st_ino), "\(mappedInode(region).map { "\($0)" } ?? "unmapped")")
        XCTAssertEqual(mappedInode(view)?.inode, UInt64(st.st_ino))
        XCTAssertEqual(region.load(fromByteOffset: 0, as: UInt8.self), UInt8((4096 + 100) & 0xff))

        let qa = try a.createQP(), qb = try b.createQP()
        let access: ibv_access_flags = ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue | IBV_ACCESS_REMOTE_WRITE.rawValue | IBV_ACCESS_REMOTE_READ.rawValue)
        try a.connect(qa, to: qb, of: b, access: access)
        try b.connect(qb, to: qa, of: a, access: access)
        let buf = TestBuffer(pages: 2)
        let bmr = try b.register(buf.base, buf.size, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue))

        // An RDMA WRITE into the registered range shows in the observer's view.
        buf.fill(0, 64, seed: 0x5a)
        try b.postSend(qb, id: 1, IBV_WR_RDMA_WRITE, [sge(buf.base, 64, bmr)], remote: (addr(region) + 10, mr.pointee.rkey))
        let w = b.poll(1)
        XCTAssertEqual(w.first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: observer + 4096 + 110, count: 64)), buf.bytes(0, 64))

        // What the observer writes, an RDMA READ brings back.
        for i in 0..<32 { observer.storeBytes(of: UInt8(0xc0 + i), toByteOffset: 4096 + 100 + 4000 + i, as: UInt8.self) }
        try b.postSend(qb, id: 2, IBV_WR_RDMA_READ, [sge(buf.base + 4096, 32, bmr)], remote: (addr(region) + 4000, mr.pointee.rkey))
        let r = b.poll(1)
        XCTAssertEqual(r.first?.status, IBV_WC_SUCCESS)
        XCTAssertEqual(buf.bytes(4096, 32), (0..<32).map { UInt8(0xc0 + $0) })

        // Deregistration leaves the mapping (and its sharing) alone.
        a.deregister(mr)
        XCTAssertEqual(mappedInode(region)?.inode, UInt64(st.st_ino))
        region.storeBytes(of: 0x77, as: UInt8.self)
        XCTAssertEqual(observer.load(fromByteOffset: 4096 + 100, as: UInt8.self), 0x77)
    }

    func testASharedMemfdMappingWhoseFdIsClosedIsStillRefused() throws {
        let router = try RouterProcess(tenants: ["alpha"])
        let a = try VerbsEndpoint(socket: router.socket("alpha"))
        let fd = sluice_memfd_sealed("closed-memfd", 8192)
        guard let view = mmap(nil, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), view != MAP_FAILED else {
            throw VerbsError("mmap", errno)
        }
        defer { munmap(view, 8192) }
        close(fd)
        // Nothing to send, and re-backing would end the sharing: EINVAL, as
        // for any shared mapping the library did not make.
        XCTAssertThrowsError(try a.register(view, 100, ibv_access_flags(IBV_ACCESS_LOCAL_WRITE.rawValue))) { e in
            XCTAssertEqual((e as? VerbsError)?.code ?? Int32(errno), EINVAL, "\(e)")
        }
    }
}
