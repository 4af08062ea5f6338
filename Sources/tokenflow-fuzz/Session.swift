/// One target ready to run inputs: its folder prepared (model loaded, links made) and its corpus read.
final class Session {
    let target: FuzzTarget
    let workspace: Workspace
    /// Seeds, then earlier crashing inputs (`regressions`), by path.
    let corpus: [(path: String, bytes: [UInt8])]
    private let runner: () throws -> Void

    init(target: FuzzTarget, work: String, repository: String) throws {
        self.target = target
        // Absolute paths: the links made in the work folder must resolve from wherever they are.
        try makeFolder(work + "/" + target.name)
        workspace = Workspace(repository: try absolutePath(repository), folder: try absolutePath(work + "/" + target.name))
        var corpus: [(path: String, bytes: [UInt8])] = []
        for seed in target.seeds {
            corpus += try Self.files(workspace.path(seed)).map { ($0, try readFile($0)) }
        }
        let regressions = workspace.path(target.regressions)
        if isFolder(regressions) { corpus += try Self.files(regressions).map { ($0, try readFile($0)) } }
        self.corpus = corpus
        // Written before preparing, so the links made by `prepare` point at an existing file.
        try workspace.write(corpus.first?.bytes ?? [])
        runner = try target.prepare(workspace)
    }

    /// Runs one input: nil when the parser accepted it, else the message of the error that refused it, with
    /// the work folder written `<work>` (so outcomes do not depend on where the run happens). Only writing
    /// the input file can throw (then nothing was run).
    func execute(_ bytes: [UInt8]) throws -> String? {
        try workspace.write(bytes)
        do {
            try runner()
            return nil
        } catch {
            return "\(error)".replacing(workspace.folder, with: "<work>")
        }
    }

    /// A file, or the files of a folder (sorted).
    private static func files(_ path: String) throws -> [String] {
        isFolder(path) ? try listFolder(path).map { path + "/" + $0 } : [path]
    }
}
