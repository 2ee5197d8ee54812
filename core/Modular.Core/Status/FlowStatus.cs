using Modular.Abstractions.Flows;

namespace Modular.Core.Status;

/// <summary>Flow logging as it runs: whether its sinks take events, and each sink's counters.</summary>
/// <param name="Running">True while flow logging is on and a sink takes the events (even with no traffic yet).</param>
/// <param name="Sinks">The sinks created for this run (they stay while flow logging is switched off again).</param>
public sealed record FlowStatus(bool Running, IReadOnlyList<FlowSinkStatus> Sinks)
{
    /// <summary>No sink created (flow logging never on in this run).</summary>
    public static readonly FlowStatus Off = new(false, []);
}

/// <summary>One flow sink of <c>[netflow] sinks</c>.</summary>
/// <param name="Counters">Its counters when the sink reports them (<see cref="IFlowSinkStatus"/>), else null.</param>
public sealed record FlowSinkStatus(string Name, FlowSinkCounters? Counters);
