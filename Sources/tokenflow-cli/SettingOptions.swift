import ArgumentParser
import VideoEditing

/// The library's settings as command-line options: `--NAME VALUE` or `--NAME=VALUE` for every row of the
/// settings table, with the table's names ('-' accepted for '_'), grammar, defaults and help.
/// ArgumentParser declares options statically, so these arrive as unrecognised arguments and are parsed
/// here with the table's own parsers; `settingsHelp` lists them in each command's help.
struct SettingOptions: ParsableArguments {
    @Argument(parsing: .allUnrecognized, help: .private)
    var arguments: [String] = []

    /// The settings the arguments give, on top of the defaults.
    func settings() throws -> EditSettings {
        var settings = EditSettings()
        var remaining = arguments[...]
        while let argument = remaining.popFirst() {
            guard argument.hasPrefix("--") else {
                throw ValidationError("unexpected argument '\(argument)'")
            }
            let option = argument.dropFirst(2)
            let name: String, value: String
            if let equals = option.firstIndex(of: "=") {
                (name, value) = (String(option[..<equals]), String(option[option.index(after: equals)...]))
            } else {
                guard let next = remaining.popFirst() else { throw ValidationError("--\(option) needs a value") }
                (name, value) = (String(option), next)
            }
            guard SettingsTable.named(name) != nil else {
                throw ValidationError("unknown option '--\(name)'; see --help for the settings")
            }
            do { try SettingsTable.set(name, value, in: &settings) } catch let error as EditError {
                throw ValidationError("--\(error.description.dropFirst("invalid settings: ".count))")
            }
        }
        return settings
    }
}

/// The SETTINGS section of the editing commands' help, from the settings table.
let settingsHelp: String = {
    var lines = ["SETTINGS (the same names, defaults and ranges as the C API, `ffmpeg -vf tokenflow=...` and the GStreamer element):"]
    for setting in SettingsTable.all {
        var details = ["default: \(setting.defaultValue.isEmpty ? "\"\"" : setting.defaultValue)"]
        switch setting.kind {
        case .text, .size: break
        case .integer, .real, .choice: details.append(setting.allowed)
        }
        if !setting.methods.isEmpty { details.append("methods: \(setting.methods.joined(separator: ", "))") }
        lines.append("  --\(setting.name) <value>")
        lines += wrapped("\(setting.help) (\(details.joined(separator: "; ")))", indent: 8)
        if case .choice(let choices) = setting.kind {
            for choice in choices { lines += wrapped("\(choice.name): \(choice.help)", indent: 10, hanging: 12) }
        }
    }
    return lines.joined(separator: "\n")
}()

/// `text` in lines of at most 79 columns, the first indented by `indent`, the others by `hanging`
/// (ArgumentParser wraps long lines of a discussion without indenting them).
private func wrapped(_ text: String, indent: Int, hanging: Int? = nil) -> [String] {
    var lines: [String] = [], line = ""
    func margin() -> String { String(repeating: " ", count: lines.isEmpty ? indent : hanging ?? indent) }
    for word in text.split(separator: " ") {
        if !line.isEmpty && margin().count + line.count + 1 + word.count > 79 {
            lines.append(margin() + line)
            line = ""
        }
        line += (line.isEmpty ? "" : " ") + word
    }
    if !line.isEmpty { lines.append(margin() + line) }
    return lines
}
