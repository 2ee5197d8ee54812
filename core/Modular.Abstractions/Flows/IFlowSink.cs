using System.Net;
using Modular.Abstractions.Plugins;

namespace Modular.Abstractions.Flows;

/// <summary>What a <see cref="FlowEvent"/> reports.</summary>
public enum FlowEventType
{
    /// <summary>A new flow was seen.</summary>
    Start,
    /// <summary>The flow ended (closed or timed out); counters are final.</summary>
    End,
    /// <summary>A packet of the flow was dropped by a firewall rule.</summary>
    Drop,
}

/// <summary>Which way the flow's first packet crossed the interface.</summary>
public enum FlowDirection
{
    /// <summary>Into this peer from the overlay.</summary>
    Ingress,
    /// <summary>Out of this peer into the overlay.</summary>
    Egress,
}

/// <summary>
/// One connection-tracking event. <see cref="Protocol"/> is the IP protocol number (6 TCP,
/// 17 UDP, 1 ICMP, 58 ICMPv6); ports are 0 for ICMP, which carries type and code instead.
/// Counters are totals for the flow at the time of the event.
/// </summary>
public sealed record FlowEvent(
    Guid Id,
    Guid FlowId,
    DateTimeOffset Timestamp,
    FlowEventType Type,
    FlowDirection Direction,
    byte Protocol,
    IPAddress SourceAddress,
    ushort SourcePort,
    IPAddress DestinationAddress,
    ushort DestinationPort,
    byte IcmpType,
    byte IcmpCode,
    ulong RxPackets,
    ulong RxBytes,
    ulong TxPackets,
    ulong TxBytes,
    string? RuleId,
    string? SourceResourceId,
    string? DestinationResourceId);

/// <summary>
/// Receives flow events. Called from the connection tracker: must not block; a sink that
/// throws is isolated (logged and counted), never stopping the tracker or other sinks.
/// </summary>
public interface IFlowSink : IAsyncDisposable
{
    /// <summary>
    /// Takes one event. Called on the packet path by the connection tracker, from several threads at once (it
    /// must be thread-safe), and not after <see cref="IAsyncDisposable.DisposeAsync"/> began. It must return
    /// quickly and never block (queue and ship elsewhere), and must not call back into the host. A throw is
    /// counted and the event dropped.
    /// </summary>
    void Emit(FlowEvent flowEvent);
}

/// <summary>Export with <c>[Export(typeof(IFlowSinkFactory))]</c> and a <c>[PluginName]</c>.</summary>
public interface IFlowSinkFactory : IPluginFactory
{
    /// <summary>
    /// Creates the sink for one run of the engine, which disposes it when it stops. Not called concurrently
    /// with itself. The factory's own constructor must stay cheap; work (files, sockets) starts here.
    /// </summary>
    ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken);
}
