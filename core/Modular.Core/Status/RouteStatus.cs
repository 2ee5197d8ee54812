namespace Modular.Core.Status;

/// <summary>
/// One route of the current network map as this agent uses it (`status --json` → "routes"). Every route in the
/// map has an entry, also the ones not used, so an operator sees why a prefix does not go where they expected.
/// </summary>
/// <param name="Id">The network resource's stable ID (flow events carry it).</param>
/// <param name="Network">The prefix as management sent it, e.g. "10.20.0.0/24".</param>
/// <param name="Peer">The routing peer's name; "self" when this peer serves the route.</param>
/// <param name="Role">"client" (sent through another peer) or "serving" (this peer forwards it).</param>
/// <param name="ExitNode">The default route (0.0.0.0/0).</param>
/// <param name="Installed">The OS route (client) or the forwarding table (serving) is in place.</param>
/// <param name="Reason">Why it is not installed (lost to a lower metric, IPv6, overlaps the overlay, an OS error); null when installed.</param>
public sealed record RouteStatus(
    string Id,
    string Name,
    string Network,
    string Peer,
    string Role,
    bool ExitNode,
    bool Installed,
    string? Reason,
    bool Masquerade,
    int Metric)
{
    public const string ClientRole = "client";
    public const string ServingRole = "serving";
    public const string SelfPeer = "self";
}

/// <summary>
/// The mesh resolver (`status --json` → "dns"). Counters are queries since the agent started, refreshed on the
/// statistics cadence; the rest changes when a map arrives or the listener starts, moves or stops.
/// </summary>
/// <param name="Enabled">The agent's [dns] setting and management both want the resolver.</param>
/// <param name="Listening">The endpoint it answers on (UDP and TCP), e.g. "100.64.0.1:53"; null while not listening.</param>
/// <param name="Zone">The account's zone, e.g. "modular.internal"; empty when none.</param>
/// <param name="Records">Names answered from the zone (peers and this peer).</param>
/// <param name="NameserverGroups">Upstream groups names outside the zone are forwarded to.</param>
/// <param name="Queries">Queries received (everything answered or forwarded; packets that are not queries are not counted).</param>
/// <param name="AnsweredLocally">Answered from the zone or a peer's reverse name, NXDOMAIN and NODATA included.</param>
/// <param name="Forwarded">Sent to a nameserver group.</param>
/// <param name="Nxdomain">Names under the zone that no peer has.</param>
/// <param name="Refused">Names outside the zone with no nameserver group.</param>
/// <param name="Servfail">Forwarded queries every upstream failed (or too many forwards in flight).</param>
/// <param name="Malformed">FORMERR and NOTIMP answers.</param>
public sealed record DnsStatus(
    bool Enabled,
    string? Listening,
    string Zone,
    int Records,
    int NameserverGroups,
    long Queries,
    long AnsweredLocally,
    long Forwarded,
    long Nxdomain,
    long Refused,
    long Servfail,
    long Malformed)
{
    /// <summary>No resolver: [dns] enabled = false, or before the first map.</summary>
    public static DnsStatus Off { get; } = new(false, null, "", 0, 0, 0, 0, 0, 0, 0, 0, 0);
}
