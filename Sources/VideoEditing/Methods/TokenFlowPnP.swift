/// TokenFlow with plug-and-play injection (the paper's main method): the whole sampling schedule, with the
/// source branch's resnet features injected in the first `pnp_f_t` of the steps and its self-attention
/// queries/keys in the first `pnp_attn_t`.
public struct TokenFlowPnP: PropagatingMethod {
    public static let name = "tokenflow"
    public static let summary = "TokenFlow with plug-and-play feature and attention injection"

    public let propagation: KeyframePropagation

    public init(_ context: MethodContext) throws {
        let schedule = context.schedules.sampling.timesteps, settings = context.settings
        func injected(_ fraction: Float) -> Set<Int> { Set(schedule.prefix(scheduleStepCount(settings.steps, fraction: fraction))) }
        propagation = try KeyframePropagation(context, timesteps: schedule,
                                              featureInjection: injected(settings.pnpFeatureThreshold),
                                              queryKeyInjection: injected(settings.pnpAttentionThreshold))
    }
}
