using System.Net;
using Modular.Abstractions.Plugins;

namespace Modular.Abstractions.Flows;

public enum FlowEventType
{
    Start,
    End,
    Drop,
}

public enum FlowDirection
{
    Ingress,
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
    void Emit(FlowEvent flowEvent);
}

/// <summary>Export with <c>[Export(typeof(IFlowSinkFactory))]</c> and a <c>[PluginName]</c>.</summary>
public interface IFlowSinkFactory : IPluginFactory
{
    ValueTask<IFlowSink> CreateAsync(IPluginContext context, CancellationToken cancellationToken);
}
