import Diffusion
import FoundationEssentials
import Tensors

/// An explicit keyframe schedule from a file (`tokenflow edit --keyframes FILE`): JSON, one list of keyframe
/// indices per sampling step, such as `[[3, 10], [5, 12]]`. Only the form is checked here; whether the
/// schedule fits the clip (step count, one keyframe inside each batch) is the method's `checkClip`.
public enum KeyframeFile {
    /// Real schedules are steps x batches numbers; a megabyte is far more than any.
    public static let sizeLimit = 1 << 20

    public static func read(_ path: String) throws -> [[Int]] {
        // A regular file only: a FIFO or a device given by mistake would block or never end.
        let bytes: [UInt8]
        switch readRegularFile(path, limit: sizeLimit) {
        case .success(let contents): bytes = contents
        case .failure(let error): throw EditError.invalidSettings("cannot read keyframe file '\(path)': \(error)")
        }
        do {
            return try JSONFile.decode([[Int]].self, from: Data(bytes))
        } catch {
            throw EditError.invalidSettings("keyframe file '\(path)' must be JSON like [[3, 10], [5, 12]] (one list per step): \(error)")
        }
    }
}
