import Glibc

/// A target's scratch folder and the repository the seeds and fixtures come from.
struct Workspace {
    /// The repository root (seeds, regressions and fixtures are relative to it).
    let repository: String
    /// `<work>/<target>`: the input file and whatever folders the target reads it through.
    let folder: String

    /// The file every execution's input is written to before it runs (see `FuzzTarget`).
    var input: String { folder + "/input" }

    func path(_ relative: String) -> String { relative.hasPrefix("/") ? relative : repository + "/" + relative }

    /// Creates `<folder>/<name>/` holding links to every file of the repository folder `source`, except that
    /// `file` links to the input: the parser then opens the input under the name it expects.
    func linkedFolder(_ name: String, from source: String, inputAs file: String) throws -> String {
        let linked = folder + "/" + name
        try makeFolder(linked)
        for entry in try listFolder(path(source)) where entry != file {
            try link(path(source) + "/" + entry, at: linked + "/" + entry)
        }
        try link(input, at: linked + "/" + file)
        return linked
    }

    /// Writes the input file (the only write per execution).
    func write(_ bytes: [UInt8]) throws {
        try writeFile(input, bytes)
    }
}

struct FuzzError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// `mkdir -p`.
func makeFolder(_ path: String) throws {
    var prefix = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        prefix += "/" + part
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw FuzzError("cannot create \(prefix): \(errnoText())") }
    }
}

/// Replaces whatever is at `path` by a symbolic link to `target`.
func link(_ target: String, at path: String) throws {
    unlink(path)
    guard symlink(target, path) == 0 else { throw FuzzError("cannot link \(path) to \(target): \(errnoText())") }
}

/// The names in a folder, sorted (so seed order, and with it every run, is the same everywhere).
func listFolder(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else { throw FuzzError("cannot list \(path): \(errnoText())") }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." && !name.hasPrefix(".") { names.append(name) }
    }
    return names.sorted()
}

func absolutePath(_ path: String) throws -> String {
    guard let resolved = realpath(path, nil) else { throw FuzzError("cannot resolve \(path): \(errnoText())") }
    defer { free(resolved) }
    return String(cString: resolved)
}

func isFolder(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "rb") else { throw FuzzError("cannot open \(path): \(errnoText())") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes += buffer[0..<count]
    }
    guard ferror(file) == 0 else { throw FuzzError("cannot read \(path)") }
    return bytes
}

/// Overwrites the file, then cuts it to length. Not O_TRUNC: ext4 writes a file truncated to zero and
/// rewritten out to disk when it is closed, which made every execution wait for the disk (25x slower).
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FuzzError("cannot create \(path): \(errnoText())") }
    defer { close(fd) }
    var done = 0
    while done < bytes.count {
        let count = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { throw FuzzError("cannot write \(path): \(errnoText())") }
        done += count
    }
    guard ftruncate(fd, off_t(bytes.count)) == 0 else { throw FuzzError("cannot truncate \(path): \(errnoText())") }
}
