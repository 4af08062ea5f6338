import Glibc
import Tensors

/// `tokenflow-fuzz`: runs mutated inputs in-process against one parser (see `FuzzTarget.all`).
///
/// This build is the deterministic driver CI runs (`Tests/Host/fuzz.sh`): execution i of a run depends only
/// on the seed, the corpus and the executions before it, so a run is the same everywhere and bounded by
/// its execution count. The campaign build (`scripts/fuzz_campaign.sh`, compiled with -DLIBFUZZER
/// -sanitize=fuzzer) runs the same targets under libFuzzer instead (`LibFuzzer.swift`).
///
/// An input the parser refuses with an error passes; a trap kills the process (the signal is the failure)
/// and one execution longer than `--timeout` seconds ends it with SIGALRM (a hang). Either way the input
/// is left in `<work>/<target>/input` for the calling script to keep.
@main
struct FuzzMain {
    static func main() {
        #if LIBFUZZER
        LibFuzzerMode.run()
        #else
        requireDeterministicHashing()
        do {
            let options = try Options(Array(CommandLine.arguments.dropFirst()))
            if options.list {
                for target in FuzzTarget.all { say(target.name) }
                return
            }
            guard let target = FuzzTarget.named(options.target) else {
                throw FuzzError("unknown target '\(options.target)'; targets: \(FuzzTarget.all.map(\.name).joined(separator: ", "))")
            }
            // A hang ends the process by SIGALRM's default action, even if the caller ignored the signal.
            signal(SIGALRM, SIG_DFL)
            let session = try Session(target: target, work: options.work, repository: options.repository)
            if options.listCorpus {
                for entry in session.corpus { say(entry.path) }
                return
            }
            say("\(target.name): input file \(session.workspace.input)")
            if let files = options.replay {
                try replay(session, files, timeout: options.timeout)
            } else {
                try campaign(session, options)
            }
        } catch {
            say("tokenflow-fuzz: \(error)")
            exit(2)
        }
        #endif
    }

    /// Swift seeds its hash tables per process, so the order of dictionaries differs from run to run, and
    /// with it which of several problems a parser reports first. Outcomes steer the corpus, so runs would
    /// differ: the driver restarts itself with the runtime's deterministic hashing.
    static func requireDeterministicHashing() {
        guard getenv("SWIFT_DETERMINISTIC_HASHING") == nil else { return }
        setenv("SWIFT_DETERMINISTIC_HASHING", "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        say("tokenflow-fuzz: cannot restart with deterministic hashing (\(errnoText())); this run is not reproducible")
    }

    /// Runs each file once (the regression inputs), naming it first so a crash is attributed.
    static func replay(_ session: Session, _ files: [String], timeout: Int) throws {
        var refused = 0
        for path in files {
            say("replay \(path)")
            if try execute(session, try readFile(path), timeout: timeout) != nil { refused += 1 }
        }
        say("\(session.target.name): replayed \(files.count) inputs, \(files.count - refused) accepted, \(refused) refused, no crash, no hang")
    }

    /// Runs the corpus unchanged, then mutations of it. An input whose outcome (acceptance, or the kind of
    /// refusal) is new joins the corpus, so later mutations start from inputs that got further.
    static func campaign(_ session: Session, _ options: Options) throws {
        var corpus = session.corpus.map(\.bytes)
        guard !corpus.isEmpty else { throw FuzzError("\(session.target.name) has no seed inputs") }
        let seedCount = corpus.count
        // Never below twice the largest seed: a 125 KB checkpoint header cut to 64 KB by every mutation would
        // no longer be JSON, and its mutations would never get past the header parse.
        let maxLength = max(options.maxLength, 2 * (corpus.map(\.count).max() ?? 0))
        let mutator = Mutator(format: session.target.format, corpus: corpus, maxLength: maxLength)
        var outcomes: [String: Int] = [:]
        var accepted = 0, executions = 0
        let start = now()
        while executions < options.runs && (options.seconds == 0 || now() - start < options.seconds) {
            var random = Random(seed: options.seed ^ (UInt64(executions) &* 0xD1B5_4A32_D192_ED03))
            let input = executions < seedCount
                ? corpus[executions]
                : mutator.mutate(random.pick(corpus), other: random.pick(corpus), random: &random)
            let refusal = try execute(session, input, timeout: options.timeout)
            executions += 1
            if refusal == nil { accepted += 1 }
            let outcome = refusal.map(refusalKind) ?? "accepted"
            outcomes[outcome, default: 0] += 1
            if outcomes[outcome] == 1, executions > seedCount, corpus.count < 2000 { corpus.append(input) }
        }
        if options.showOutcomes {
            for (outcome, count) in outcomes.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) { say("\(count)\t\(outcome)") }
        }
        let seconds = now() - start
        let stopped = executions < options.runs ? " (stopped by the \(Int(options.seconds)) s budget)" : ""
        say("\(session.target.name): \(executions) executions in \(String(format1: seconds)) s (\(Int(Double(executions) / max(seconds, 1e-9)))/s)\(stopped), "
            + "seed \(options.seed): \(accepted) accepted, \(executions - accepted) refused, \(outcomes.count) distinct outcomes, "
            + "corpus \(seedCount) -> \(corpus.count), no crash, no hang")
    }

    /// One execution under the watchdog.
    static func execute(_ session: Session, _ input: [UInt8], timeout: Int) throws -> String? {
        var timer = itimerval(it_interval: timeval(), it_value: timeval(tv_sec: timeout, tv_usec: 0))
        setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &timer, nil)
        defer {
            var off = itimerval()
            setitimer(__itimer_which_t(ITIMER_REAL.rawValue), &off, nil)
        }
        return try session.execute(input)
    }

    /// The check that refused an input, without the values in its message (numbers, quoted names), so that
    /// refusals by the same check count once.
    static func refusalKind(_ message: String) -> String {
        var kind = "", quote: Character?, previous: Character = " "
        for character in message.prefix(300) {
            if let open = quote {
                if character == open { quote = nil }
            } else if (character == "'" || character == "\"") && !previous.isLetter {
                quote = character
                kind.append("…")
            } else if character.isNumber {
                if !previous.isNumber { kind.append("#") }
            } else {
                kind.append(character)
            }
            previous = character
        }
        return kind
    }
}

struct Options {
    var target = ""
    var runs = 10_000
    /// Stops earlier after this many seconds (0: no limit).
    var seconds = 0.0
    var seed: UInt64 = 1
    /// Seconds one execution may take before it counts as a hang.
    var timeout = 10
    var work = "/tmp/tokenflow-fuzz"
    var repository = "."
    /// Mutated inputs are cut to this length (at least twice the largest seed).
    var maxLength = 65_536
    /// Files to run once each instead of a campaign (nil: a campaign).
    var replay: [String]?
    var list = false
    /// Prints each outcome (acceptance, or a kind of refusal) with its count after a campaign.
    var showOutcomes = false
    /// Prints the paths of the target's seeds and regressions instead of running.
    var listCorpus = false

    static let usage = """
        usage: tokenflow-fuzz --target NAME [--runs N] [--seconds S] [--seed N] [--timeout S] [--work DIR]
                              [--repository DIR] [--max-length BYTES] [--outcomes] [--replay FILE...]
               tokenflow-fuzz --target NAME --corpus     (the seed and regression files)
               tokenflow-fuzz --list
        """

    init(_ arguments: [String]) throws {
        var remaining = arguments[...]
        func value(_ option: String) throws -> String {
            guard let value = remaining.popFirst() else { throw FuzzError("\(option) needs a value\n\(Self.usage)") }
            return value
        }
        func number<T: LosslessStringConvertible>(_ option: String) throws -> T {
            let text = try value(option)
            guard let number = T(text) else { throw FuzzError("\(option): '\(text)' is not a number") }
            return number
        }
        while let option = remaining.popFirst() {
            switch option {
            case "--target": target = try value(option)
            case "--runs": runs = try number(option)
            case "--seconds": seconds = try number(option)
            case "--seed": seed = try number(option)
            case "--timeout": timeout = try number(option)
            case "--work": work = try value(option)
            case "--repository": repository = try value(option)
            case "--max-length": maxLength = try number(option)
            case "--replay":
                replay = Array(remaining)
                remaining = []
            case "--list": list = true
            case "--outcomes": showOutcomes = true
            case "--corpus": listCorpus = true
            default: throw FuzzError("unknown option '\(option)'\n\(Self.usage)")
            }
        }
        if !list && target.isEmpty { throw FuzzError("--target is required\n\(Self.usage)") }
    }
}

/// Prints a line at once: after a crash, buffered output would be lost.
func say(_ line: String) {
    print(line)
    fflush(nil)
}

func now() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

extension String {
    /// One decimal (no Foundation formatting in this executable).
    init(format1 value: Double) {
        let tenths = Int((value * 10).rounded())
        self = "\(tenths / 10).\(tenths % 10)"
    }
}
