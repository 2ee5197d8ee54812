using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// Turns what the firewall decides into <see cref="FlowEvent"/>s for the optional <see cref="IFlowSink"/>: Start when a
/// connection is tracked, End when it expires or a rule update ends it, Drop when a new flow is refused. Without a
/// sink, or while a <see cref="SwitchableFlowSink"/> is off, it builds nothing, so the packet path allocates nothing
/// for events. Events are built under the flow table's lock (their counters are read there) and handed to the sink
/// only after it is released. Flows the <see cref="FlowCollection"/> leaves out (the mesh resolver's, those through
/// an exit node) give no event; the others name the peer or resource at each end (<see cref="Scope"/>). Kernel mode's
/// source (<see cref="Nftables.KernelFlowSource"/>) reports through one too (<see cref="Report"/>): the same
/// switch, filters and names in both modes.
/// </summary>
internal sealed class FlowEventEmitter
{
    // Immutable after construction.
    private readonly IFlowSink? _sink;
    private readonly SwitchableFlowSink? _switchable;
    private readonly TimeProvider _time;
    private readonly int _maxDropEventsPerSecond;

    // Replaced whole (writers serialised by _scopeLock), read without a lock: volatile.
    private readonly Lock _scopeLock = new();
    private volatile FlowScope _scope = FlowScope.Empty;

    // Lock-free, Interlocked only: the drop-event budget of the current one-second window, and the counters.
    private long _dropEventWindow;
    private long _dropEventsInWindow;
    private long _suppressedDropEvents;
    private long _sinkFailures;

    public FlowEventEmitter(IFlowSink? sink, TimeProvider time, int maxDropEventsPerSecond)
    {
        ArgumentNullException.ThrowIfNull(time);
        _sink = sink;
        _switchable = sink as SwitchableFlowSink;
        _time = time;
        _maxDropEventsPerSecond = maxDropEventsPerSecond;
    }

    /// <summary>
    /// False without a sink or while a switchable one is off (a volatile read): callers skip work (collecting ended
    /// flows, naming resources) that only events need.
    /// </summary>
    public bool Enabled => _switchable?.Active ?? _sink is not null;

    /// <summary>What names the two ends of a flow and which flows are the mesh resolver's.</summary>
    public FlowScope Scope => _scope;

    /// <summary>Changes <see cref="Scope"/> (rare: a map, the resolver starting); concurrent changes are serialised.</summary>
    public void UpdateScope(Func<FlowScope, FlowScope> change)
    {
        lock (_scopeLock)
        {
            _scope = change(_scope);
        }
    }

    /// <summary>Drop events not built because more than the per-second bound came in one second.</summary>
    public long SuppressedDropEvents => Interlocked.Read(ref _suppressedDropEvents);

    /// <summary>Events the sink threw on.</summary>
    public long SinkFailures => Interlocked.Read(ref _sinkFailures);

    /// <summary>The Start event of a connection just tracked; null while off or for a flow left out.</summary>
    public FlowEvent? Started(FlowEntry entry) => Reports(entry) ? ToEvent(entry, FlowEventType.Start, _time.GetUtcNow()) : null;

    /// <summary>The End event of a connection just removed; null while off or for a flow left out.</summary>
    public FlowEvent? Ended(FlowEntry entry) => Reports(entry) ? ToEvent(entry, FlowEventType.End, _time.GetUtcNow()) : null;

    /// <summary>The ID of the peer (by overlay address) or else the routed resource <paramref name="address"/> belongs to; null while off.</summary>
    public string? NameOf(UInt128 address)
    {
        if (!Enabled)
        {
            return null;
        }

        var scope = _scope;
        return scope.Peers.Find(address) ?? scope.Resources.Find(address);
    }

    /// <summary>
    /// The Drop event of a refused new flow, or null without a sink or past this second's budget (then counted in
    /// <see cref="SuppressedDropEvents"/>): a flood of dropped packets must not become a flood of events.
    /// </summary>
    public FlowEvent? Dropped(in PacketHeader header, RuleDirection direction, string? ruleId, long nowTicks)
    {
        if (!Enabled || LeftOut(header.Key, direction) || !TakeDropEventToken(nowTicks))
        {
            return null;
        }

        return FlowEvents.Drop(header, direction == RuleDirection.Inbound, ruleId, _time.GetUtcNow(), NameOf(header.Source), NameOf(header.Destination));
    }

    /// <summary>
    /// An event a flow source outside the userspace tracker read (kernel mode: conntrack, the policy table's drop
    /// logs), put through the same step as the tracker's own: null while off or for a flow the collection settings
    /// leave out (<c>collect_dns</c>, <c>collect_exit_node</c>); else the event with the peer or resource at each end
    /// named where the source left it unnamed. Thread-safe (the scope is one volatile read).
    /// </summary>
    public FlowEvent? Report(FlowEvent flowEvent)
    {
        ArgumentNullException.ThrowIfNull(flowEvent);
        if (!Enabled)
        {
            return null;
        }

        var source = IpPrefix128.ToUInt128(flowEvent.SourceAddress);
        var destination = IpPrefix128.ToUInt128(flowEvent.DestinationAddress);
        var key = new FlowKey(flowEvent.Protocol, source, destination, flowEvent.SourcePort, flowEvent.DestinationPort);
        if (LeftOut(key, flowEvent.Direction == FlowDirection.Ingress ? RuleDirection.Inbound : RuleDirection.Outbound))
        {
            return null;
        }

        return flowEvent.SourceResourceId is not null && flowEvent.DestinationResourceId is not null
            ? flowEvent
            : flowEvent with
            {
                SourceResourceId = flowEvent.SourceResourceId ?? NameOf(source),
                DestinationResourceId = flowEvent.DestinationResourceId ?? NameOf(destination),
            };
    }

    /// <summary>Hands <paramref name="flowEvent"/> to the sink. Call with no lock held.</summary>
    public void Emit(FlowEvent? flowEvent)
    {
        if (flowEvent is null)
        {
            return;
        }

        try
        {
            _sink!.Emit(flowEvent);
        }
        catch (Exception)
        {
            // A broken sink must never take the packet path down with it.
            Interlocked.Increment(ref _sinkFailures);
        }
    }

    /// <summary>Emits the End events of connections removed together (a sweep or a rule update), all stamped <paramref name="now"/>.</summary>
    public void EmitEnded(List<FlowEntry>? ended, DateTimeOffset now)
    {
        if (ended is null || !Enabled)
        {
            return;
        }

        foreach (var entry in ended)
        {
            if (!LeftOut(entry.Key, entry.Direction))
            {
                Emit(ToEvent(entry, FlowEventType.End, now));
            }
        }
    }

    private bool Reports(FlowEntry entry) => Enabled && !LeftOut(entry.Key, entry.Direction);

    /// <summary>
    /// Whether the collection settings leave this flow out: <c>collect_dns = false</c> and one end is the mesh
    /// resolver (a <see cref="LocalService"/>), or <c>collect_exit_node = false</c> and it is outbound to an address
    /// that only an exit node's default route covers. A firewall built with a plain sink reports every flow.
    /// </summary>
    private bool LeftOut(in FlowKey key, RuleDirection direction)
    {
        var collection = _switchable?.Collection ?? FlowCollection.All;
        if (collection.CollectDns && collection.CollectExitNode)
        {
            return false;
        }

        var scope = _scope;
        if (!collection.CollectDns)
        {
            foreach (var service in scope.Resolver)
            {
                if (service.Protocol == key.Protocol
                    && ((service.Address == key.Destination && service.Port == key.DestinationPort) || (service.Address == key.Source && service.Port == key.SourcePort)))
                {
                    return true;
                }
            }
        }

        return !collection.CollectExitNode && direction == RuleDirection.Outbound && scope.Resources.IsExitNode(key.Destination);
    }

    /// <summary>A fixed one-second window; racing threads may let a few extra through at a window's edge, which is harmless.</summary>
    private bool TakeDropEventToken(long nowTicks)
    {
        var window = nowTicks / _time.TimestampFrequency;
        if (Interlocked.Read(ref _dropEventWindow) != window)
        {
            Interlocked.Exchange(ref _dropEventWindow, window);
            Interlocked.Exchange(ref _dropEventsInWindow, 0);
        }

        if (Interlocked.Increment(ref _dropEventsInWindow) <= _maxDropEventsPerSecond)
        {
            return true;
        }

        Interlocked.Increment(ref _suppressedDropEvents);
        return false;
    }

    private static FlowEvent ToEvent(FlowEntry entry, FlowEventType type, DateTimeOffset now)
    {
        var inbound = entry.Direction == RuleDirection.Inbound;
        var isIcmp = entry.Key.Protocol is IpProtocol.Icmp or IpProtocol.IcmpV6;
        return new FlowEvent(
            Guid.NewGuid(),
            entry.FlowId,
            now,
            type,
            inbound ? FlowDirection.Ingress : FlowDirection.Egress,
            entry.Key.Protocol,
            IpPrefix128.ToAddress(entry.Key.Source),
            isIcmp ? (ushort)0 : entry.Key.SourcePort,
            IpPrefix128.ToAddress(entry.Key.Destination),
            isIcmp ? (ushort)0 : entry.Key.DestinationPort,
            entry.IcmpType,
            entry.IcmpCode,
            inbound ? entry.OriginalPackets : entry.ReplyPackets,
            inbound ? entry.OriginalBytes : entry.ReplyBytes,
            inbound ? entry.ReplyPackets : entry.OriginalPackets,
            inbound ? entry.ReplyBytes : entry.OriginalBytes,
            entry.RuleId,
            entry.SourceResourceId,
            entry.ResourceId);
    }
}

/// <summary>
/// Builds the events every flow source shares the shape of, so the userspace tracker and kernel mode's drop logs
/// report a refused packet alike.
/// </summary>
internal static class FlowEvents
{
    /// <summary>
    /// The Drop event of one refused packet: a flow ID of its own, the packet's length counted on the side it came
    /// from (rx inbound, tx outbound), ports zero for ICMP (its type and code are carried instead).
    /// </summary>
    public static FlowEvent Drop(in PacketHeader header, bool inbound, string? ruleId, DateTimeOffset now, string? sourceResourceId, string? destinationResourceId)
        => new(
            Guid.NewGuid(),
            Guid.NewGuid(),
            now,
            FlowEventType.Drop,
            inbound ? FlowDirection.Ingress : FlowDirection.Egress,
            header.Protocol,
            IpPrefix128.ToAddress(header.Source),
            header.IsIcmp ? (ushort)0 : header.SourcePort,
            IpPrefix128.ToAddress(header.Destination),
            header.IsIcmp ? (ushort)0 : header.DestinationPort,
            header.IcmpType,
            header.IcmpCode,
            inbound ? 1UL : 0,
            inbound ? (ulong)header.Length : 0,
            inbound ? 0 : 1UL,
            inbound ? 0 : (ulong)header.Length,
            ruleId,
            sourceResourceId,
            destinationResourceId);
}

/// <summary>
/// What flow events need to know about the mesh, replaced whole when it changes: the routed resources and the
/// peers (to name each end of a flow), and the mesh resolver's services (for <c>collect_dns</c>).
/// </summary>
internal sealed record FlowScope(RoutedResources Resources, PeerDirectory Peers, LocalService[] Resolver)
{
    public static readonly FlowScope Empty = new(RoutedResources.Empty, PeerDirectory.Empty, []);
}
