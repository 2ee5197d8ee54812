using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// Turns what the firewall decides into <see cref="FlowEvent"/>s for the optional <see cref="IFlowSink"/>: Start when a
/// connection is tracked, End when it expires or a rule update ends it, Drop when a new flow is refused. Without a
/// sink it builds nothing, so the packet path allocates nothing for events. Events are built under the flow table's
/// lock (their counters are read there) and handed to the sink only after it is released.
/// </summary>
internal sealed class FlowEventEmitter
{
    // Immutable after construction.
    private readonly IFlowSink? _sink;
    private readonly TimeProvider _time;
    private readonly int _maxDropEventsPerSecond;

    // Lock-free, Interlocked only: the drop-event budget of the current one-second window, and the counters.
    private long _dropEventWindow;
    private long _dropEventsInWindow;
    private long _suppressedDropEvents;
    private long _sinkFailures;

    public FlowEventEmitter(IFlowSink? sink, TimeProvider time, int maxDropEventsPerSecond)
    {
        ArgumentNullException.ThrowIfNull(time);
        _sink = sink;
        _time = time;
        _maxDropEventsPerSecond = maxDropEventsPerSecond;
    }

    /// <summary>False without a sink: callers skip work (collecting ended flows, naming resources) that only events need.</summary>
    public bool Enabled => _sink is not null;

    /// <summary>Drop events not built because more than the per-second bound came in one second.</summary>
    public long SuppressedDropEvents => Interlocked.Read(ref _suppressedDropEvents);

    /// <summary>Events the sink threw on.</summary>
    public long SinkFailures => Interlocked.Read(ref _sinkFailures);

    /// <summary>The Start event of a connection just tracked; null without a sink.</summary>
    public FlowEvent? Started(FlowEntry entry) => _sink is null ? null : ToEvent(entry, FlowEventType.Start, _time.GetUtcNow());

    /// <summary>The End event of a connection just removed; null without a sink.</summary>
    public FlowEvent? Ended(FlowEntry entry) => _sink is null ? null : ToEvent(entry, FlowEventType.End, _time.GetUtcNow());

    /// <summary>
    /// The Drop event of a refused new flow, or null without a sink or past this second's budget (then counted in
    /// <see cref="SuppressedDropEvents"/>): a flood of dropped packets must not become a flood of events.
    /// </summary>
    public FlowEvent? Dropped(in PacketHeader header, RuleDirection direction, string? ruleId, RoutedResources resources, long nowTicks)
    {
        if (_sink is null || !TakeDropEventToken(nowTicks))
        {
            return null;
        }

        var inbound = direction == RuleDirection.Inbound;
        return new FlowEvent(
            Guid.NewGuid(),
            Guid.NewGuid(),
            _time.GetUtcNow(),
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
            null,
            resources.Find(header.Destination));
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
        if (_sink is null || ended is null)
        {
            return;
        }

        foreach (var entry in ended)
        {
            Emit(ToEvent(entry, FlowEventType.End, now));
        }
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
            null,
            entry.ResourceId);
    }
}
