#if LIBFUZZER
import CLibFuzzer
import Glibc

/// The campaign build: the targets under libFuzzer, which keeps the inputs that reach new code (it
/// measures edge coverage of every module the build instruments) and saves crashing and hanging inputs
/// itself. libFuzzer owns the command line, so the target comes from the environment:
/// TOKENFLOW_FUZZ_TARGET (a name of `FuzzTarget.all`, which `--list` prints), TOKENFLOW_FUZZ_WORK (scratch
/// folder, default /tmp/tokenflow-fuzz-libfuzzer) and TOKENFLOW_FUZZ_REPOSITORY (default "."). See
/// scripts/fuzz_campaign.sh.
enum LibFuzzerMode {
    // Set once before libFuzzer starts and only read afterwards, on libFuzzer's single fuzzing thread.
    nonisolated(unsafe) static var session: Session?
    nonisolated(unsafe) static var mutator: Mutator?
    nonisolated(unsafe) static var corpus: [[UInt8]] = []

    static func run() -> Never {
        if CommandLine.arguments.dropFirst() == ["--list"] {
            for target in FuzzTarget.all { say(target.name) }
            exit(0)
        }
        func environment(_ name: String, _ fallback: String) -> String { getenv(name).map { String(cString: $0) } ?? fallback }
        let name = environment("TOKENFLOW_FUZZ_TARGET", "")
        guard let target = FuzzTarget.named(name) else {
            say("tokenflow-fuzz (libFuzzer): set TOKENFLOW_FUZZ_TARGET to one of \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
            exit(2)
        }
        let session: Session
        do {
            session = try Session(target: target, work: environment("TOKENFLOW_FUZZ_WORK", "/tmp/tokenflow-fuzz-libfuzzer"),
                                  repository: environment("TOKENFLOW_FUZZ_REPOSITORY", "."))
        } catch {
            say("tokenflow-fuzz (libFuzzer): \(error)")
            exit(2)
        }
        self.session = session
        corpus = session.corpus.map(\.bytes)
        mutator = Mutator(format: target.format, corpus: corpus, maxLength: .max)

        // The target's seeds and regressions join whatever corpus folders the command line names.
        let seeds = "-seed_inputs=" + session.corpus.map(\.path).joined(separator: ",")
        var arguments = (0..<Int(CommandLine.argc)).map { CommandLine.unsafeArgv[$0] } + [strdup(seeds), nil]
        var argc = CommandLine.argc + 1
        let status = arguments.withUnsafeMutableBufferPointer { buffer in
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
            return LLVMFuzzerRunDriver(&argc, &argv, testOneInput)
        }
        exit(status)
    }

    private static let testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt = { data, size in
        let input = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
        do { _ = try LibFuzzerMode.session!.execute(input) } catch {
            say("tokenflow-fuzz (libFuzzer): \(error)")
            exit(2)
        }
        return 0
    }
}

/// Half of the mutations are the format-aware ones of the deterministic driver (`Mutator`), half are
/// libFuzzer's own byte-level mutations, which also use the comparisons it traces.
@_cdecl("LLVMFuzzerCustomMutator")
func customMutator(_ data: UnsafeMutablePointer<UInt8>?, _ size: Int, _ maxSize: Int, _ seed: UInt32) -> Int {
    var random = Random(seed: UInt64(seed))
    guard let data, let mutator = LibFuzzerMode.mutator, !LibFuzzerMode.corpus.isEmpty, random.chance(50) else {
        return LLVMFuzzerMutate(data, size, maxSize)
    }
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    let output = mutator.mutate(input, other: random.pick(LibFuzzerMode.corpus), random: &random).prefix(maxSize)
    output.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: output.count) }
    return output.count
}
#endif
