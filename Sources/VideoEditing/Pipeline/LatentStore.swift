#if canImport(Glibc)
import Glibc
#endif
import Tensors

/// The latents of a clip of any length, one record per frame: the clean VAE latents, the inversion's
/// final latents, the edit in progress (two slots: the step reads one and writes the other, so a later
/// keyframe pass of the same step still sees the step's input), and the inverted latents at every sampling
/// timestep. A record is (4 + steps) x 4 x H/8 x W/8 floats: 3.4 MiB at 512x512 with 50 steps.
///
/// Records live in memory up to `memoryBudget` bytes and beyond it in a temporary file, which is
/// unlinked as soon as it is created: the space is released when the store goes away, and nothing is
/// left behind after a failure or a crash. Memory therefore does not grow with the clip past the budget.
public final class LatentStore {
    /// Shape of one frame's latent, [C, H/8, W/8].
    let latentShape: [Int]
    /// The sampling timesteps whose inverted latents are kept, in the sampling schedule's order.
    let invertedTimesteps: [Int]
    private(set) var frameCount = 0

    static let clean = 0, last = 1
    /// The edit's latents before and after the current step (swapped by `finishStep`).
    private(set) var current = 2, next = 3
    func inverted(_ timestep: Int) -> Int? { invertedTimesteps.firstIndex(of: timestep).map { 4 + $0 } }

    private let slotCount: Int
    private let latentCount: Int
    private var recordBytes: Int { slotCount * latentCount * MemoryLayout<Float>.stride }
    private var memoryRecords: [UnsafeMutablePointer<Float>] = []
    private let memoryCapacity: Int
    private let temporaryDirectory: String
    private var file: Int32 = -1

    /// A store for the settings' latent memory budget and temporary folder.
    convenience init(latentShape: [Int], invertedTimesteps: [Int], settings: EditSettings) {
        let directory = settings.temporaryDirectory.isEmpty
            ? (getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp")
            : settings.temporaryDirectory
        self.init(latentShape: latentShape, invertedTimesteps: invertedTimesteps,
                  memoryBudget: settings.latentMemory << 20, temporaryDirectory: directory)
    }

    /// A store holding `inversion` (made earlier, or by the reference implementation).
    convenience init(_ inversion: Inversion, invertedTimesteps: [Int], settings: EditSettings) throws {
        self.init(latentShape: Array(inversion.latents.shape.dropFirst()), invertedTimesteps: invertedTimesteps, settings: settings)
        let frames = 0..<inversion.latents.shape[0]
        for _ in frames { _ = try appendFrame() }
        try write(Self.clean, frames, inversion.latents)
        try write(Self.last, frames, inversion.last)
        for (t, latents) in inversion.kept {
            if let slot = inverted(t) { try write(slot, frames, latents) }
        }
    }

    init(latentShape: [Int], invertedTimesteps: [Int], memoryBudget: Int, temporaryDirectory: String) {
        self.latentShape = latentShape
        self.invertedTimesteps = invertedTimesteps
        self.temporaryDirectory = temporaryDirectory
        slotCount = 4 + invertedTimesteps.count
        latentCount = latentShape.reduce(1, *)
        memoryCapacity = memoryBudget / (slotCount * latentCount * MemoryLayout<Float>.stride)
    }

    deinit {
        memoryRecords.forEach { free($0) }
        if file >= 0 { close(file) }
    }

    /// Bytes of latents held in memory and in the temporary file.
    var bytesInMemory: Int { memoryRecords.count * recordBytes }
    var bytesOnDisk: Int { max(0, frameCount - memoryRecords.count) * recordBytes }

    /// Adds a frame (its record's contents are undefined until written) and returns its index.
    func appendFrame() throws -> Int {
        if frameCount < memoryCapacity && frameCount == memoryRecords.count {
            guard let record = malloc(recordBytes) else {
                throw EditError.outOfMemory("cannot allocate \(recordBytes) bytes for frame \(frameCount)'s latents")
            }
            memoryRecords.append(record.assumingMemoryBound(to: Float.self))
        } else if file < 0 {
            try openTemporaryFile()
        }
        frameCount += 1
        return frameCount - 1
    }

    /// Latents of `frames` in `slot`, stacked: [frames.count, C, H/8, W/8].
    func read(_ slot: Int, _ frames: [Int]) throws -> Tensor {
        let result = try Tensor(uninitializedShape: [frames.count] + latentShape)
        for (row, frame) in frames.enumerated() {
            try transfer(slot, frame, result.mutablePointer + row * latentCount, writing: false)
        }
        return result
    }

    func read(_ slot: Int, _ frames: Range<Int>) throws -> Tensor { try read(slot, Array(frames)) }

    /// Stores `latents` [frames.count, C, H/8, W/8] as `frames`' latents in `slot`.
    func write(_ slot: Int, _ frames: Range<Int>, _ latents: Tensor) throws {
        guard latents.count == frames.count * latentCount else {
            throw EditError.invalidClip("latents of shape \(latents.shape) for \(frames.count) frames of \(latentShape)")
        }
        for (row, frame) in frames.enumerated() {
            try transfer(slot, frame, latents.pointer + row * latentCount, writing: true)
        }
    }

    /// The step's output becomes the next step's input.
    func finishStep() { swap(&current, &next) }

    private func transfer(_ slot: Int, _ frame: Int, _ buffer: UnsafeMutablePointer<Float>, writing: Bool) throws {
        guard frame >= 0 && frame < frameCount && slot >= 0 && slot < slotCount else {
            throw EditError.invalidClip("latents of frame \(frame), slot \(slot): the clip has \(frameCount) frames and \(slotCount) slots")
        }
        if frame < memoryRecords.count {
            let stored = memoryRecords[frame] + slot * latentCount
            if writing { stored.update(from: buffer, count: latentCount) } else { buffer.update(from: stored, count: latentCount) }
            return
        }
        let bytes = latentCount * MemoryLayout<Float>.stride
        var offset = off_t((frame - memoryRecords.count) * recordBytes + slot * bytes)
        var done = 0
        let raw = UnsafeMutableRawPointer(buffer)
        while done < bytes {
            let count = writing ? pwrite(file, raw + done, bytes - done, offset) : pread(file, raw + done, bytes - done, offset)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let reason = count == 0 ? "unexpected end of file" : String(cString: strerror(errno))
                throw EditError.storage("cannot \(writing ? "write" : "read") latents in the temporary file in \(temporaryDirectory): \(reason)")
            }
            done += count
            offset += off_t(count)
        }
    }

    private func openTemporaryFile() throws {
        var template = Array("\(temporaryDirectory)/tokenflow-latents-XXXXXX".utf8CString)
        let descriptor = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard descriptor >= 0 else {
            throw EditError.storage("cannot create a temporary file for latents in \(temporaryDirectory) (set temp_dir, or raise latent_memory): \(String(cString: strerror(errno)))")
        }
        // Unlinked at once: the space lives as long as the descriptor, and no failure leaves a file behind.
        unlink(template.withUnsafeBufferPointer { $0.baseAddress! })
        file = descriptor
    }
}
