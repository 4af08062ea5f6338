#if canImport(Glibc)
import Glibc
#endif

/// Where the `model` setting points when it is empty: $TOKENFLOW_MODEL, then the model installed beside
/// the binary (`<prefix>/share/tokenflow/model` for `<prefix>/lib/libtokenflow.so` or
/// `<prefix>/bin/tokenflow`). The C library and the CLI both resolve it here.
public enum ModelLocation {
    /// The model folder to load for `setting`, given the path of the running binary (the library file
    /// or the executable; nil if unknown). Throws `EditError.invalidSettings` when there is none.
    public static func resolve(_ setting: String, binary: String?) throws -> String {
        if !setting.isEmpty { return setting }
        if let environment = getenv("TOKENFLOW_MODEL"), environment.pointee != 0 {
            return String(cString: environment)
        }
        let installed = binary.flatMap(installedModel(besideBinary:))
        if let installed, access(installed, F_OK) == 0 { return installed }
        throw MissingModel(message: "no model given: set the model setting or the TOKENFLOW_MODEL environment variable to a diffusers Stable Diffusion folder, or install one at \(installed ?? "<prefix>/share/tokenflow/model") (`tokenflow install-model DIR`)")
    }

    /// `<prefix>/share/tokenflow/model`, where `<prefix>` is the parent of the folder holding `binary`.
    public static func installedModel(besideBinary binary: String) -> String? {
        let directory = binary.lastIndex(of: "/").map { String(binary[..<$0]) } ?? "."
        // realpath resolves the folder as the kernel would before "..", and gives a clean path for messages.
        guard let resolved = realpath(directory.isEmpty ? "/" : directory, nil) else { return nil }
        defer { free(resolved) }
        var prefix = String(cString: resolved)
        if let slash = prefix.lastIndex(of: "/") { prefix = String(prefix[..<slash]) }
        return prefix + "/share/tokenflow/model"
    }

    /// No model was given and none is installed (the C API reports it as TF_ENOENT).
    public struct MissingModel: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }
}
