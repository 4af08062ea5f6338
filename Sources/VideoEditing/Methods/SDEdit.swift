/// TokenFlow propagation on an SDEdit schedule: sampling starts part-way, running the last `strength`
/// fraction of the schedule from the inverted noise, with no injection.
public struct SDEdit: PropagatingMethod {
    public static let name = "sdedit"
    public static let summary = "TokenFlow propagation on an SDEdit schedule (uses strength)"

    public let propagation: KeyframePropagation

    public init(_ context: MethodContext) throws {
        let all = context.schedules.sampling.timesteps, settings = context.settings
        let count = min(scheduleStepCount(all.count, fraction: settings.strength), all.count)
        guard count > 0 else {
            throw EditError.invalidSettings("strength \(settings.strength) with \(settings.steps) steps leaves no sampling step")
        }
        propagation = try KeyframePropagation(context, timesteps: Array(all.suffix(count)))
    }
}
