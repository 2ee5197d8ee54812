namespace Modular.Core.Firewall;

/// <summary>
/// One tracked connection: its 5-tuple as first seen, the rule that let it in, its state and counters each way.
/// A class (not a struct) so the packet path updates it in place after one lookup. Owned by a
/// <see cref="FlowTable"/>: every member is read and written under the lock of the shard that holds the entry.
/// </summary>
internal sealed class FlowEntry(Guid flowId, FlowKey key, RuleDirection direction, string? ruleId)
{
    public Guid FlowId { get; } = flowId;

    /// <summary>The key of the connection's first packet; replies carry its <see cref="FlowKey.Reverse"/>.</summary>
    public FlowKey Key { get; } = key;

    /// <summary>Inbound when the remote side opened the connection.</summary>
    public RuleDirection Direction { get; } = direction;

    /// <summary>The rule that accepted it (null: a default or a local service); rule updates re-point it.</summary>
    public string? RuleId { get; set; } = ruleId;

    /// <summary>The peer or network resource the connection goes to (set only when flow events are emitted).</summary>
    public string? ResourceId { get; init; }

    /// <summary>The peer or network resource the connection comes from (set only when flow events are emitted).</summary>
    public string? SourceResourceId { get; init; }

    /// <summary>ICMP/ICMPv6: the type and code of the packet that opened it (an echo request); 0 otherwise.</summary>
    public byte IcmpType { get; init; }

    /// <inheritdoc cref="IcmpType"/>
    public byte IcmpCode { get; init; }

    public ConnectionState State { get; set; }

    /// <summary>Which sides of a TCP connection have sent FIN.</summary>
    public TcpFins Fins { get; set; }

    /// <summary>The TimeProvider timestamp of the last packet either way.</summary>
    public long LastSeen { get; set; }

    public ulong OriginalPackets { get; set; }

    public ulong OriginalBytes { get; set; }

    public ulong ReplyPackets { get; set; }

    public ulong ReplyBytes { get; set; }

    /// <summary>Counts one packet of <paramref name="length"/> bytes in its direction.</summary>
    public void Count(bool isReply, int length)
    {
        if (isReply)
        {
            ReplyPackets++;
            ReplyBytes += (ulong)length;
        }
        else
        {
            OriginalPackets++;
            OriginalBytes += (ulong)length;
        }
    }

    public FlowSnapshot Snapshot() => new(FlowId, Key, Direction, State, RuleId, OriginalPackets, OriginalBytes, ReplyPackets, ReplyBytes);
}
