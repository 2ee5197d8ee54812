using System.Net;
using Modular.Abstractions.Flows;
using Modular.Control.Flows;

namespace Modular.Server.Tests;

/// <summary>Flow events as an agent's tracker makes them, for the Flow API and store tests.</summary>
internal static class FlowSamples
{
    /// <summary>A TCP event from 100.64.0.1:40000+i to 100.64.0.2:22 at <paramref name="at"/>.</summary>
    public static FlowEvent Tcp(DateTimeOffset at, int i = 0, FlowEventType type = FlowEventType.Start, ulong rxBytes = 60, ulong txBytes = 40, string? ruleId = "policy-1")
        => new(
            Guid.NewGuid(),
            Guid.NewGuid(),
            // The wire and the store keep milliseconds: so do the samples, and they compare equal after a round trip.
            DateTimeOffset.FromUnixTimeMilliseconds(at.ToUnixTimeMilliseconds()),
            type,
            FlowDirection.Egress,
            6,
            IPAddress.Parse("100.64.0.1"),
            (ushort)(40000 + i),
            IPAddress.Parse("100.64.0.2"),
            22,
            0,
            0,
            1,
            rxBytes,
            1,
            txBytes,
            ruleId,
            null,
            null);

    /// <summary><paramref name="count"/> TCP events at <paramref name="at"/>.</summary>
    public static FlowEvent[] Batch(DateTimeOffset at, int count) => [.. Enumerable.Range(0, count).Select(i => Tcp(at, i))];

    public static FlowRecord[] Records(IEnumerable<FlowEvent> events) => [.. events.Select(FlowRecords.ToRecord)];
}
