namespace Modular.Core.Firewall;

/// <summary>Where a tracked connection stands. UDP and ICMP use <see cref="New"/> until a reply, then <see cref="Established"/>.</summary>
public enum ConnectionState : byte
{
    New,
    /// <summary>TCP: the originator's SYN went through.</summary>
    SynSent,
    /// <summary>TCP: the responder's SYN-ACK went through.</summary>
    SynReceived,
    Established,
    /// <summary>TCP: one side sent FIN.</summary>
    FinWait,
    /// <summary>TCP: both sides sent FIN.</summary>
    TimeWait,
    /// <summary>TCP: a RST went through.</summary>
    Closed,
}

/// <summary>A copy of one tracked connection's state and counters.</summary>
/// <param name="Key">The 5-tuple of the connection's first packet.</param>
/// <param name="Direction">Inbound when the remote side opened it.</param>
public sealed record FlowSnapshot(Guid FlowId, FlowKey Key, RuleDirection Direction, ConnectionState State, string? RuleId, ulong OriginalPackets, ulong OriginalBytes, ulong ReplyPackets, ulong ReplyBytes);
