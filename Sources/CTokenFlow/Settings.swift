import CTokenFlowABI
import Glibc
import VideoEditing

/// What a TFSettings pointer points to: the engine's settings, changed only through the settings table.
final class SettingsHandle {
    var settings = EditSettings()
    /// tf_settings_get's last answer per setting (malloc'd), kept until that setting is read again.
    private var values: [String: UnsafeMutablePointer<CChar>] = [:]

    deinit { values.values.forEach { free($0) } }

    func value(_ name: String) -> UnsafePointer<CChar>? {
        guard let setting = SettingsTable.named(name), let text = strdup(setting.value(in: settings)) else { return nil }
        free(values[setting.name])
        values[setting.name] = text
        return UnsafePointer(text)
    }
}

/// The settings table as C structs (TFOption), built once and never freed: tf_option hands out pointers
/// with static lifetime.
enum OptionTable {
    nonisolated(unsafe) static let options: UnsafeMutableBufferPointer<TFOption> = {
        let rows = SettingsTable.all
        let buffer = UnsafeMutableBufferPointer<TFOption>.allocate(capacity: rows.count)
        for (index, setting) in rows.enumerated() {
            var option = TFOption()
            option.name = permanent(setting.name)
            option.help = permanent(setting.help)
            option.default_value = permanent(setting.defaultValue)
            option.methods = permanent(setting.methods.joined(separator: ","))
            switch setting.kind {
            case .text:
                option.type = Int32(TF_OPTION_STRING.rawValue)
            case .size:
                option.type = Int32(TF_OPTION_SIZE.rawValue)
            case .integer(let range):
                option.type = Int32(TF_OPTION_INT.rawValue)
                (option.min, option.max) = (Double(range.lowerBound), Double(range.upperBound))
            case .real(let range):
                option.type = Int32(TF_OPTION_FLOAT.rawValue)
                (option.min, option.max) = (range.lowerBound, range.upperBound)
            case .choice(let choices):
                option.type = Int32(TF_OPTION_CHOICE.rawValue)
                option.choices = permanentList(choices.map(\.name))
                option.choice_help = permanentList(choices.map(\.help))
            }
            (buffer.baseAddress! + index).initialize(to: option)
        }
        return buffer
    }()

    private static func permanent(_ text: String) -> UnsafePointer<CChar> { UnsafePointer(strdup(text)!) }

    /// A NULL-terminated array of permanent C strings.
    private static func permanentList(_ texts: [String]) -> UnsafePointer<UnsafePointer<CChar>?> {
        let list = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: texts.count + 1)
        for (index, text) in texts.enumerated() { (list + index).initialize(to: permanent(text)) }
        (list + texts.count).initialize(to: nil)
        return UnsafePointer(list)
    }
}
