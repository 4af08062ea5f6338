import VideoEditing
import XCTest

/// The settings table is what every host shows and parses with: its rows, defaults and one parser per kind.
final class SettingsTableTests: XCTestCase {
    func testRowsAreUniqueNamedAndDocumented() {
        let names = SettingsTable.all.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "duplicate setting names")
        let methodNames = Set(EditMethods.all.map { $0.name })
        for setting in SettingsTable.all {
            XCTAssertTrue(setting.name.allSatisfy { $0.isLowercase || $0 == "_" }, "\(setting.name) is not snake_case")
            XCTAssertFalse(setting.help.isEmpty, setting.name)
            XCTAssertTrue(Set(setting.methods).isSubset(of: methodNames), "\(setting.name) names an unknown method")
        }
    }

    func testDefaultsAreTheStructsAndRoundTrip() throws {
        let defaults = EditSettings()
        try SettingsTable.validate(defaults)
        for setting in SettingsTable.all {
            XCTAssertEqual(setting.value(in: defaults), setting.defaultValue, setting.name)
            var settings = EditSettings()
            try setting.set(setting.defaultValue, in: &settings)
            XCTAssertEqual(settings, defaults, "setting \(setting.name) to its default changed something")
        }
        XCTAssertEqual(SettingsTable.named("size")?.defaultValue, "512")
        XCTAssertEqual(SettingsTable.named("guidance")?.defaultValue, "7.5")
        XCTAssertEqual(SettingsTable.named("method")?.defaultValue, TokenFlowPnP.name)
    }

    func testMethodChoicesAreTheRegisteredMethods() {
        guard case .choice(let choices)? = SettingsTable.named("method")?.kind else { return XCTFail("method is not a choice") }
        XCTAssertEqual(choices.map(\.name), [TokenFlowPnP.name, SDEdit.name, Reconstruction.name, Cove.name])
        XCTAssertEqual(choices.map(\.help), EditMethods.all.map { $0.summary })
    }

    /// Sets `text` into `name` and returns the value read back, or the error message.
    func parse(_ name: String, _ text: String) -> String {
        var settings = EditSettings()
        let before = settings
        do {
            try SettingsTable.set(name, text, in: &settings)
            return SettingsTable.named(name)!.value(in: settings)
        } catch {
            XCTAssertEqual(settings, before, "a refused value changed the settings")
            return "\(error)"
        }
    }

    func testIntegerGrammar() {
        XCTAssertEqual(parse("steps", "8"), "8")
        XCTAssertEqual(parse("steps", " 12 "), "12")
        XCTAssertEqual(parse("seed", "4294967295"), "4294967295")
        XCTAssertEqual(parse("steps", "0"), "invalid settings: steps: '0' is not allowed: expected an integer from 1 to 1000")
        XCTAssertEqual(parse("steps", "8.5"), "invalid settings: steps: '8.5' is not allowed (not an integer): expected an integer from 1 to 1000")
        XCTAssertTrue(parse("steps", "").contains("not an integer"))
        XCTAssertTrue(parse("seed", "4294967296").contains("expected an integer from 0 to 4294967295"))
        XCTAssertTrue(parse("seed", "-1").contains("is not allowed"))
        XCTAssertTrue(parse("threads", "99999999999999999999").contains("not an integer"))
    }

    func testRealGrammar() {
        XCTAssertEqual(parse("guidance", "12.5"), "12.5")
        XCTAssertEqual(parse("pnp_f_t", "1e-1"), "0.1")
        XCTAssertEqual(parse("strength", "1"), "1.0")
        XCTAssertEqual(parse("guidance", "-0"), "0.0")
        for bad in ["nan", "inf", "-inf", "1e999", "abc", "", "0x1p-2", "7,5"] {
            XCTAssertTrue(parse("guidance", bad).contains("not a finite decimal number"), bad)
        }
        XCTAssertEqual(parse("guidance", "101"), "invalid settings: guidance: '101' is not allowed: expected a number from 0 to 100")
        XCTAssertTrue(parse("pnp_attn_t", "-0.1").contains("expected a number from 0 to 1"))
    }

    func testChoiceGrammar() {
        XCTAssertEqual(parse("method", "sdedit"), "sdedit")
        XCTAssertEqual(parse("method", "2"), "reconstruct", "a choice may be given by its index, as FFmpeg's constants")
        XCTAssertEqual(parse("method", "4"), "invalid settings: method: '4' is not allowed: expected one of tokenflow, sdedit, reconstruct, cove")
        XCTAssertTrue(parse("method", "SDEdit").contains("is not allowed"), "names are exact")
    }

    func testWorkingSizeGrammar() {
        XCTAssertEqual(parse("size", ""), "512")
        XCTAssertEqual(parse("size", "768"), "768")
        XCTAssertEqual(parse("size", "input"), "input")
        XCTAssertEqual(parse("size", "INPUT"), "input")
        XCTAssertEqual(parse("size", "640x368"), "640x368")
        XCTAssertEqual(parse("size", "640X368"), "640x368")
        for bad in ["640x362", "hd720", "4x4", "7", "16385", "x", "64x", "x64", "64x64x64", "-8", "8 x 8"] {
            XCTAssertTrue(parse("size", bad).contains("size: '\(bad)' is not allowed: expected WxH (multiples of 8"), bad)
        }
    }

    func testTextAndNames() {
        XCTAssertEqual(parse("prompt", "a cat: in snow, 'quoted'"), "a cat: in snow, 'quoted'")
        XCTAssertEqual(parse("negative-prompt", "x"), "x", "'-' is accepted for '_'")
        XCTAssertTrue(parse("stepz", "1").contains("unknown setting 'stepz'; the settings are: model, prediction, prompt"))
    }
}
