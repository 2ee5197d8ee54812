namespace Modular.Core.Firewall;

/// <summary>Connection-tracking limits and timeouts. The defaults follow Linux conntrack's spirit, shortened where a mesh VPN peer can re-open cheaply.</summary>
public sealed record FirewallOptions
{
    /// <summary>
    /// Tracked connections at most. A new outbound flow past this is dropped (and counted); inbound flows hold at
    /// most seven eighths of it (the rest is kept for this host's outbound flows), and a new inbound flow meeting a
    /// full share may take the place of a flow of the source holding the most (see docs/firewall.md).
    /// </summary>
    public int MaxFlows { get; init; } = 65_536;

    /// <summary>
    /// Inbound connections one remote source address may have tracked at once (split evenly over the table's 16
    /// shards, at least one each), so one peer cannot fill the table through a port every peer may reach (the
    /// mesh resolver). The default, a sixteenth of the default table, is far above what one peer's real use opens.
    /// </summary>
    public int MaxFlowsPerSource { get; init; } = 4_096;

    public TimeSpan TcpHandshakeTimeout { get; init; } = TimeSpan.FromSeconds(60);

    public TimeSpan TcpEstablishedTimeout { get; init; } = TimeSpan.FromHours(2);

    /// <summary>After a FIN from either side, until both closed and the last ACK is surely through.</summary>
    public TimeSpan TcpClosingTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>After a RST: short, just enough for stray segments in flight.</summary>
    public TimeSpan TcpResetTimeout { get; init; } = TimeSpan.FromSeconds(10);

    public TimeSpan UdpTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>UDP that has seen replies (a "stream") lives longer.</summary>
    public TimeSpan UdpStreamTimeout { get; init; } = TimeSpan.FromSeconds(180);

    public TimeSpan IcmpTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>How often expired flows are swept (their End events emitted); lookups also expire flows lazily.</summary>
    public TimeSpan SweepInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Drop events sent to the flow sink per second at most; a flood of dropped packets is counted, not turned into a flood of events.</summary>
    public int MaxDropEventsPerSecond { get; init; } = 200;

    /// <summary>What a new inbound flow that no rule matches gets. Drop: only what policies allow comes in.</summary>
    public RuleAction DefaultInbound { get; init; } = RuleAction.Drop;

    /// <summary>What a new outbound flow that no rule matches gets. The peer's own inbound policy guards the far end.</summary>
    public RuleAction DefaultOutbound { get; init; } = RuleAction.Accept;

    /// <summary>
    /// This peer's own overlay addresses. An inbound packet to any other address that is not the host's own either
    /// (<see cref="StatefulFirewall.UpdateHostAddresses"/>) is forwarded traffic (this peer routes a network) and is
    /// checked only against routed rules (<see cref="FirewallRule.Destination"/>); one to these only against the others. Empty: every inbound packet counts as this peer's own, and
    /// routed rules are never matched.
    /// </summary>
    public IReadOnlyList<System.Net.IPAddress> LocalAddresses { get; init; } = [];

    /// <summary>
    /// Kernel mode: the UDP port of the Rosenpass exchange on this peer's own overlay address, accepted from every peer
    /// whatever the policies (as mesh DNS is); null: none. Userspace sets it at run time instead (local services).
    /// </summary>
    public ushort? RosenpassPort { get; init; }
}
