using System.Globalization;
using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Routing;

/// <summary>A kernel route the agent installs: <c>ip route add Network dev Device [table Table]</c> (Table 0: main).</summary>
public sealed record OsRoute(string Network, string Device, int Table = 0)
{
    /// <summary>The `ip -4 route` arguments after add/del.</summary>
    public IReadOnlyList<string> Arguments => Table == 0 ? [Network, "dev", Device] : [Network, "dev", Device, "table", Table.ToString(CultureInfo.InvariantCulture)];

    public override string ToString() => string.Join(' ', Arguments);
}

/// <summary>
/// A policy-routing rule: <c>ip rule add [Match] table Table [Action] priority Priority</c>, e.g. "not fwmark
/// 51820" → table 51820, or "to 198.51.100.7/32" → table main.
/// </summary>
public sealed record OsRule(int Priority, string Match, string Table, string Action = "")
{
    /// <summary>The `ip -4 rule` arguments after add/del.</summary>
    public IReadOnlyList<string> Arguments =>
        [.. Split(Match), "table", Table, .. Split(Action), "priority", Priority.ToString(CultureInfo.InvariantCulture)];

    public override string ToString() => string.Join(' ', Arguments);

    private static string[] Split(string text) => text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>
/// The host settings routing needs (routes, policy rules, sysctls, WireGuard's socket mark, name resolution),
/// behind one small interface so the route logic is tested with an in-memory double and the real thing
/// (<see cref="HostRouteOs"/>) by the end-to-end tests. Failures are <see cref="IOException"/>s. nftables is
/// not here: the forwarding table goes through <see cref="Firewall.Nftables.INftables"/>, the agent's one nft seam.
/// </summary>
public interface IRouteOs
{
    /// <summary>Adds a route; false (nothing changed) when one for the same prefix already exists: not ours, left alone.</summary>
    Task<bool> AddRouteAsync(OsRoute route, CancellationToken cancellationToken);

    /// <summary>Deletes a route this agent added; one already gone is not an error.</summary>
    Task DeleteRouteAsync(OsRoute route, CancellationToken cancellationToken);

    Task AddRuleAsync(OsRule rule, CancellationToken cancellationToken);

    /// <summary>Deletes one copy of the rule; true when there was one.</summary>
    Task<bool> DeleteRuleAsync(OsRule rule, CancellationToken cancellationToken);

    /// <summary>Writes a sysctl (e.g. net.ipv4.ip_forward) and returns its previous value.</summary>
    Task<string> WriteSysctlAsync(string key, string value, CancellationToken cancellationToken);

    /// <summary>Sets the firewall mark of WireGuard's UDP socket (0 clears it).</summary>
    Task SetFwmarkAsync(IWgIface iface, uint mark, CancellationToken cancellationToken);

    /// <summary>The IPv4 addresses of a host name or literal.</summary>
    Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken);
}
