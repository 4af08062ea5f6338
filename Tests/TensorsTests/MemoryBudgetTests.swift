import Tensors
import XCTest

/// Tensor allocation never traps: sizes that overflow, a run's memory budget and a refused allocation
/// are thrown `TensorAllocationError`s (TF_ENOMEM at the C API).
final class MemoryBudgetTests: XCTestCase {
    func testOverflowingShapeIsAnError() {
        for shape in [[Int.max, 2], [1 << 40, 1 << 40], [-1, 4]] {
            XCTAssertThrowsError(try Tensor(uninitializedShape: shape)) { error in
                XCTAssertEqual((error as? TensorAllocationError)?.reason, .sizeOverflow, "\(shape)")
                XCTAssertTrue("\(error)".contains("larger than the address space"), "\(error)")
            }
        }
    }

    func testBudgetChargesLiveTensorsAndRefusesBeyondItsLimit() throws {
        let budget = MemoryBudget(limitBytes: 1 << 20)
        let weight = try Tensor(zeros: [128, 128, 3, 3])  // made outside the budget: not charged
        try budget.withCurrent {
            var kept: Tensor? = try Tensor(zeros: [128, 1024])          // 512 KiB
            XCTAssertEqual(budget.inUseBytes, 512 << 10)
            XCTAssertThrowsError(try Tensor(zeros: [160, 1024])) { error in  // 640 KiB more: beyond 1 MiB
                XCTAssertEqual((error as? TensorAllocationError)?.reason, .overBudget(limitBytes: 1 << 20, inUseBytes: 512 << 10))
                XCTAssertTrue("\(error)".contains("would exceed the memory_limit of 1 MiB"), "\(error)")
            }
            XCTAssertEqual(budget.inUseBytes, 512 << 10, "a refused tensor is not charged")
            // Kernels allocate their outputs and scratch under the same budget: the output (512 KiB) fits
            // exactly, the unfolded input it needs next does not.
            XCTAssertThrowsError(try conv2d(kept!.reshaped([1, 128, 32, 32]), weight: weight, bias: nil, stride: 1,
                                            padding: .uniform(1))) { error in
                XCTAssertEqual((error as? TensorAllocationError)?.reason, .overBudget(limitBytes: 1 << 20, inUseBytes: 1 << 20))
            }
            kept = nil
            XCTAssertEqual(budget.inUseBytes, 0, "freed tensors are released from the budget")
            _ = try Tensor(zeros: [200, 1024])                              // fits once the first is gone
        }
        XCTAssertEqual(budget.peakBytes, 1 << 20)
        XCTAssertEqual(budget.inUseBytes, 0)
    }

    func testTensorsOutsideTheBudgetAreNotCharged() throws {
        let budget = MemoryBudget(limitBytes: 1024)
        let outside = try Tensor(zeros: [1024])
        budget.withCurrent { XCTAssertEqual(outside.count, 1024) }
        XCTAssertEqual(budget.inUseBytes, 0)
    }

    func testRefusedSystemAllocationIsAnError() {
        // 2^61 bytes: a valid size that no system grants.
        XCTAssertThrowsError(try Tensor(uninitializedShape: [1 << 59])) { error in
            XCTAssertEqual((error as? TensorAllocationError)?.reason, .systemRefused)
            XCTAssertTrue("\(error)".contains("the system refused"), "\(error)")
        }
    }

    /// Large buffers: best fit among freed ranges (their pages kept), freed neighbours coalesce, the unused end
    /// serves the rest, a full range says so (the caller then asks the system), and `release` gives the pages back
    /// (a released range reads as zeros again) while keeping the range usable.
    func testLargeBufferArenaReusesCoalescesAndReleases() throws {
        let page = 2 << 20
        let arena = LargeBufferArena(capacity: 16 * page)
        let a = try XCTUnwrap(arena.allocate(2 * page)), b = try XCTUnwrap(arena.allocate(3 * page))
        let c = try XCTUnwrap(arena.allocate(page))
        XCTAssertEqual(b, a + 2 * page)
        XCTAssertEqual(c, b + 3 * page)
        a.storeBytes(of: 7, as: Int.self)
        XCTAssertTrue(arena.free(a, 2 * page))
        XCTAssertEqual(arena.allocate(page), a, "best fit: the freed range, not the unused end")
        XCTAssertEqual(a.load(as: Int.self), 7, "a reused range keeps its pages")
        XCTAssertTrue(arena.free(a, page))
        XCTAssertTrue(arena.free(b, 3 * page))
        XCTAssertEqual(arena.allocate(5 * page), a, "a and b's ranges coalesced")
        XCTAssertNil(arena.allocate(11 * page), "6 + 11 pages do not fit in 16")
        let d = try XCTUnwrap(arena.allocate(10 * page))
        XCTAssertEqual(d, c + page)
        var outside = 0
        XCTAssertFalse(arena.free(&outside, page), "not the arena's")
        XCTAssertTrue(arena.free(d, 10 * page))
        XCTAssertTrue(arena.free(a, 5 * page))
        arena.release()
        XCTAssertEqual(arena.allocate(page), a)
        XCTAssertEqual(a.load(as: Int.self), 0, "released pages are fresh")
        XCTAssertEqual(arena.allocate(10 * page), c + page, "the released range after c is the unused end again")
        a.storeBytes(of: 9, as: Int.self)
        XCTAssertTrue(arena.free(c + page, 10 * page))
        XCTAssertTrue(arena.free(c, page))
        XCTAssertTrue(arena.free(a, page))
        XCTAssertEqual(arena.allocate(16 * page), a, "all free: the whole range again")
        XCTAssertEqual(a.load(as: Int.self), 0, "nothing live: every page went back")
    }

    /// Inside `keepingFreedPages` a range freed with nothing else live keeps its pages for the next allocation;
    /// at its end, with nothing live, they go back.
    func testLargeBufferArenaKeepsFreedPagesForTheNextPartInsideKeepingFreedPages() throws {
        let page = 2 << 20
        let arena = LargeBufferArena(capacity: 8 * page)
        let kept = try arena.keepingFreedPages {
            let a = try XCTUnwrap(arena.allocate(2 * page))
            a.storeBytes(of: 7, as: Int.self)
            XCTAssertTrue(arena.free(a, 2 * page))
            let b = try XCTUnwrap(arena.allocate(3 * page))
            XCTAssertEqual(b, a, "the freed range is reused")
            XCTAssertEqual(b.load(as: Int.self), 7, "nothing live, yet its pages were kept")
            XCTAssertTrue(arena.free(b, 3 * page))
            return b
        }
        XCTAssertEqual(arena.allocate(page), kept)
        XCTAssertEqual(kept.load(as: Int.self), 0, "after the scope, with nothing live, the pages went back")
    }

    /// Tensors of 2 MB and more live in the engine's arena, smaller ones come from malloc.
    func testLargeTensorsLiveInTheArena() throws {
        XCTAssertTrue(LargeBufferArena.shared.contains(try Tensor(uninitializedShape: [1 << 19]).pointer))
        XCTAssertFalse(LargeBufferArena.shared.contains(try Tensor(uninitializedShape: [1 << 10]).pointer))
    }
}
