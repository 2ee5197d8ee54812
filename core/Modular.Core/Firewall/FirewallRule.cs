namespace Modular.Core.Firewall;

public enum RuleAction
{
    Accept,
    Drop,
}

/// <summary>Which packets a rule filters: traffic arriving from the peer side (inbound) or leaving towards it (outbound).</summary>
public enum RuleDirection
{
    Inbound,
    Outbound,
}

public enum RuleProtocol
{
    All,
    Tcp,
    Udp,
    Icmp,
}

/// <summary>An inclusive port range; a single port has <see cref="Start"/> == <see cref="End"/>.</summary>
public readonly record struct PortRange(ushort Start, ushort End)
{
    public static readonly PortRange Any = new(0, ushort.MaxValue);

    /// <summary>How many ports it covers; narrower ranges are more specific.</summary>
    public int Width => End - Start + 1;

    public bool Contains(ushort port) => port >= Start && port <= End;
}

/// <summary>
/// One firewall rule as the agent applies it: packets exchanged with <see cref="Remote"/> (the source of an
/// inbound flow, the destination of an outbound one) of <see cref="Protocol"/>, towards one of
/// <see cref="Ports"/> (the destination port of the flow's first packet), get <see cref="Action"/>.
/// An empty port list means every port; ICMP has no ports.
/// </summary>
public sealed record FirewallRule(string RuleId, RuleDirection Direction, RuleAction Action, RuleProtocol Protocol, IpPrefix128 Remote, IReadOnlyList<PortRange> Ports)
{
    /// <summary>
    /// Routed traffic only: the network resource the connection goes to (on a routing peer). Null: the rule
    /// is about this peer's own traffic. A rule never applies to the other kind.
    /// </summary>
    public IpPrefix128? Destination { get; init; }

    /// <summary>True for a rule about forwarded traffic (see <see cref="Destination"/>).</summary>
    public bool IsRouted => Destination is not null;
}
