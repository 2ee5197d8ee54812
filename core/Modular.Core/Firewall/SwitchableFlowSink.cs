using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// What the firewall reports while flow logging runs: whether at all (<see cref="Active"/>), and whether flows to
/// or from the mesh resolver (<see cref="CollectDns"/>) and flows leaving through an exit node
/// (<see cref="CollectExitNode"/>) are included.
/// </summary>
public sealed record FlowCollection(bool Active, bool CollectDns, bool CollectExitNode)
{
    /// <summary>Nothing is reported.</summary>
    public static readonly FlowCollection Off = new(false, false, false);

    /// <summary>Every flow is reported (a firewall built with a plain sink).</summary>
    public static readonly FlowCollection All = new(true, true, true);
}

/// <summary>
/// The sink a firewall is built with when flow logging may be switched on and off while it runs (the account's
/// setting comes with each network map, after the firewall exists). The engine sets <see cref="Target"/> once, when
/// flow logging is first on, and <see cref="Collection"/> after every map; the firewall's
/// <see cref="FlowEventEmitter"/> reads <see cref="Collection"/> (one volatile read) before it builds any event, so
/// while off nothing is even built. Disposing it does not dispose <see cref="Target"/>: the engine owns the real
/// sinks (a firewall rebuilt after a failed start gets this same instance) and closes them at stop, after the
/// firewall.
/// </summary>
public sealed class SwitchableFlowSink : IFlowSink
{
    // Each replaced whole, read without a lock: volatile.
    private volatile FlowCollection _collection = FlowCollection.Off;
    private volatile IFlowSink? _target;

    /// <summary>What is reported now; <see cref="FlowCollection.Off"/> until the engine says otherwise.</summary>
    public FlowCollection Collection
    {
        get => _collection;
        set => _collection = value ?? FlowCollection.Off;
    }

    /// <summary>The sinks events go to (one, or a <see cref="FlowSinkFanOut"/>); null until flow logging is first on.</summary>
    public IFlowSink? Target
    {
        get => _target;
        set => _target = value;
    }

    /// <summary>True while events are reported: on, with a sink to take them.</summary>
    public bool Active => _collection.Active && _target is not null;

    /// <summary>Thread-safe; drops the event while off (an event built just before a switch to off).</summary>
    public void Emit(FlowEvent flowEvent)
    {
        if (_collection.Active && _target is { } target)
        {
            target.Emit(flowEvent);
        }
    }

    /// <summary>Does nothing: the engine owns <see cref="Target"/>, clears it and disposes it at stop.</summary>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
