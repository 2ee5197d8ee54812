using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Status;

namespace Modular.Core.Routing;

/// <summary>Numbers the exit-node policy routing uses.</summary>
/// <param name="Table">The routing table holding the tunnel's default route; also WireGuard's fwmark (as wg-quick does).</param>
/// <param name="ControlRulePriority">`to &lt;control address&gt; lookup main` rules: management, signal, relay and STUN never enter the tunnel.</param>
/// <param name="SuppressRulePriority">`lookup main suppress_prefixlength 0`: every route of main but its default still wins.</param>
/// <param name="TunnelRulePriority">`not fwmark &lt;Table&gt; lookup &lt;Table&gt;`: everything else not sent by WireGuard itself goes to the tunnel.</param>
public sealed record RouteManagerOptions(int Table, int ControlRulePriority = 5170, int SuppressRulePriority = 5180, int TunnelRulePriority = 5190)
{
    /// <summary>False (<c>[firewall] enabled = false</c>): a routing peer forwards every mesh connection, route rules are not enforced.</summary>
    public bool FilterForwarded { get; init; } = true;

    /// <summary>Kernel-mode flow logging: forwarded mesh connections are marked for conntrack's flow events (<see cref="ForwardingTable.Render"/>).</summary>
    public bool MarkFlows { get; init; }

    /// <summary>With <see cref="MarkFlows"/>: where each forward table's accept rule IDs are recorded, so routed flows name their rule.</summary>
    public KernelFlowRules? FlowRules { get; init; }

    /// <summary>wg-quick's choice: the listen port as table and mark (51820 when the OS picks the port).</summary>
    public static RouteManagerOptions For(IWgIface iface)
    {
        ArgumentNullException.ThrowIfNull(iface);
        return new(iface.ListenPort is > 0 and <= 65535 ? iface.ListenPort : 51820);
    }
}

/// <summary>
/// Puts a <see cref="RoutePlan"/> into the OS and remembers exactly what it added, so it only ever removes
/// its own routes and rules, on change and on stop.
/// Client routes: <c>ip route &lt;network&gt; dev &lt;iface&gt;</c> (a prefix the OS already routes is left alone,
/// with a warning). Exit node: wg-quick's policy routing — the default route in a table of its own,
/// WireGuard's socket marked, <c>not fwmark</c> → that table, <c>suppress_prefixlength 0</c> on main, plus
/// <c>to &lt;addr&gt;/32 lookup main</c> for every control-plane address so management, signal, relay and STUN
/// stay off the tunnel. Routing peer: IPv4 forwarding on (logged once) and the <see cref="ForwardingTable"/> (forward
/// filter and masquerade, through <see cref="INftables"/>). A peer that serves nothing keeps the table as a filter
/// alone (every packet forwarded from the mesh dropped: forwarding may be on for other reasons, and a peer must not
/// reach what lies behind this host by widening its own allowed IPs), and forwarding goes back to what it was if
/// this agent turned it on. The table is deleted on stop, or when the firewall is off and nothing is served.
/// A table whose script is unchanged is not applied again; a changed one gets a new conntrack generation, cleared
/// from conntrack first (<see cref="MarkGenerations"/>), so revoking a route rule ends its forwarded connections.
/// Every OS failure is logged and the rest goes on: a route that cannot be installed must not take the
/// mesh down. Not thread-safe: the engine applies maps one at a time.
/// </summary>
public sealed class RouteManager
{
    private readonly IWgIface _iface;
    private readonly IRouteOs _os;
    private readonly INftables _nft;
    private readonly ILogger _logger;
    private readonly RouteManagerOptions _options;
    private readonly Action<uint>? _markOtherSockets;
    private readonly HashSet<OsRoute> _routes = [];
    private readonly List<OsRule> _rules = [];
    private readonly Dictionary<OsRoute, string> _routeProblems = [];
    private string? _exitProblem;
    private string? _forwardingProblem;
    private string? _lastFailure;
    private string? _forwardingScript;
    private readonly MarkGenerations _generations;
    private bool _forwardingEnabled;
    private string? _forwardingBefore;
    private bool _marked;
    private bool _swept;

    /// <param name="nft">Where the forwarding table goes: <see cref="HostNftables.Instance"/> in the agent.</param>
    /// <param name="markOtherSockets">Marks the agent's other sockets that talk to peers directly (kernel mode's ICE socket) with WireGuard's mark.</param>
    /// <param name="conntrack">Where the forward table's old generations are cleared; null: forwarded connections walk the rules on every packet.</param>
    public RouteManager(IWgIface iface, IRouteOs os, INftables nft, ILogger logger, RouteManagerOptions? options = null, Action<uint>? markOtherSockets = null, IConntrack? conntrack = null)
    {
        _iface = iface;
        _os = os;
        _nft = nft;
        _logger = logger;
        _options = options ?? RouteManagerOptions.For(iface);
        _markOtherSockets = markOtherSockets;
        _generations = new MarkGenerations(conntrack, forwarded: true, logger);
    }

    /// <summary>The routes this agent added and has not removed.</summary>
    public IReadOnlyCollection<OsRoute> InstalledRoutes => [.. _routes];

    /// <summary>The policy rules this agent added, in the order added.</summary>
    public IReadOnlyList<OsRule> InstalledRules => [.. _rules];

    /// <summary>True while this agent's forwarding table is installed.</summary>
    public bool ForwardingInstalled => _forwardingScript is not null;

    /// <summary>
    /// Makes the OS match <paramref name="plan"/>. <paramref name="controlHosts"/> are the host names or
    /// addresses of management, signal, relay and STUN (resolved here, only while an exit node is in use).
    /// </summary>
    public Task ApplyAsync(RoutePlan plan, IReadOnlyCollection<string> controlHosts, CancellationToken cancellationToken)
        => ApplyAsync(plan, controlHosts, stopping: false, cancellationToken);

    private async Task ApplyAsync(RoutePlan plan, IReadOnlyCollection<string> controlHosts, bool stopping, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(controlHosts);
        var exit = plan.ExitNode;
        var wantedRoutes = plan.Client.Select(r => r.IsExitNode ? new OsRoute("default", _iface.Name, _options.Table) : new OsRoute(r.Network.ToString(), _iface.Name)).ToList();
        var wantedRules = exit is null ? [] : await ExitRulesAsync(controlHosts, cancellationToken);
        if (!_swept)
        {
            // An agent killed while it used an exit node leaves its two fixed rules behind (harmless, but
            // clutter): they name this agent's table and priorities, so they are ours to remove.
            _swept = true;
            foreach (var stale in FixedExitRules().Where(r => !wantedRules.Contains(r)))
            {
                for (var copies = 0; copies < 16 && await _os.DeleteRuleAsync(stale, cancellationToken); copies++)
                {
                }
            }
        }

        // Out first, tunnel rule (the last priority) first: traffic never points at a missing table, and control
        // traffic is never left without its way around the tunnel while the tunnel rule still stands.
        foreach (var rule in _rules.Where(r => !wantedRules.Contains(r)).OrderByDescending(r => r.Priority).ToList())
        {
            await TryAsync($"remove rule {rule}", () => _os.DeleteRuleAsync(rule, cancellationToken));
            _rules.Remove(rule);
        }

        foreach (var route in _routes.Where(r => !wantedRoutes.Contains(r)).ToList())
        {
            await TryAsync($"remove route {route}", () => _os.DeleteRouteAsync(route, cancellationToken));
            _routes.Remove(route);
            _logger.LogInformation("Route {Route} removed", route);
        }

        if (exit is not null && !_marked)
        {
            // WireGuard's own datagrams carry the mark before the rule that sends everything unmarked into the tunnel exists.
            _marked = await TryAsync($"mark WireGuard's socket {_options.Table}", () => MarkAsync((uint)_options.Table, cancellationToken));
            await TryAsync("net.ipv4.conf.all.src_valid_mark=1", () => _os.WriteSysctlAsync("net.ipv4.conf.all.src_valid_mark", "1", cancellationToken));
        }

        _routeProblems.Clear();
        foreach (var route in wantedRoutes.Where(r => !_routes.Contains(r)))
        {
            var added = false;
            if (!await TryAsync($"add route {route}", async () => added = await _os.AddRouteAsync(route, cancellationToken)))
            {
                _routeProblems[route] = $"adding the route failed: {_lastFailure}";
                continue;
            }

            if (added)
            {
                _routes.Add(route);
                _logger.LogInformation("Route {Route} added", route);
            }
            else
            {
                _logger.LogWarning("Route {Route} not added: the system already routes that prefix (left alone)", route);
                _routeProblems[route] = "the system already routes that prefix";
            }
        }

        var rulesAdded = 0;
        _exitProblem = null;
        if (exit is not null && !_marked)
        {
            _exitProblem = "WireGuard's socket could not be marked, so its own traffic would loop into the tunnel";
            _logger.LogWarning("Exit node {Name} not used: WireGuard's socket could not be marked, so its own traffic would loop into the tunnel", exit.Name);
        }
        else
        {
            foreach (var rule in wantedRules.Where(r => !_rules.Contains(r)))
            {
                // A copy left by an agent that crashed is ours too: remove it so rules never pile up.
                for (var stale = 0; stale < 16 && await _os.DeleteRuleAsync(rule, cancellationToken); stale++)
                {
                }

                // Remembered before it is added: if the agent stops in the middle, cleanup still removes it.
                _rules.Add(rule);
                if (await TryAsync($"add rule {rule}", () => _os.AddRuleAsync(rule, cancellationToken)))
                {
                    rulesAdded++;
                }
                else
                {
                    _rules.Remove(rule);
                    _exitProblem ??= $"policy rule {rule} could not be added: {_lastFailure}";
                }
            }
        }

        if (exit is null && _marked && await TryAsync("clear WireGuard's socket mark", () => MarkAsync(0, cancellationToken)))
        {
            _marked = false;
        }

        if (exit is not null && rulesAdded > 0 && wantedRules.Count == _rules.Count)
        {
            _logger.LogInformation("Exit node {Name}: default route through the tunnel (table {Table}), control plane {Hosts} direct", exit.Name, _options.Table, string.Join(", ", controlHosts));
        }

        await ApplyForwardingAsync(plan, stopping, cancellationToken);
    }

    /// <summary>
    /// Every route of <paramref name="plan"/> (the one last applied) as status reports it: used or not, and whether
    /// its OS route or forwarding table is in place. <paramref name="peerName"/> names a routing peer (null: its key).
    /// </summary>
    public IReadOnlyList<RouteStatus> Describe(RoutePlan plan, Func<WgKey, string?> peerName)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(peerName);
        if (plan.Client.Count == 0 && plan.Served.Count == 0 && plan.Unused.Count == 0)
        {
            return [];
        }

        string Name(WgKey key) => peerName(key) ?? key.ToString();
        var entries = new List<RouteStatus>(plan.Client.Count + plan.Served.Count + plan.Unused.Count);
        foreach (var route in plan.Client)
        {
            var os = route.IsExitNode ? new OsRoute("default", _iface.Name, _options.Table) : new OsRoute(route.Network.ToString(), _iface.Name);
            var reason = !_routes.Contains(os)
                ? _routeProblems.GetValueOrDefault(os, "not added")
                : route.IsExitNode ? _exitProblem : null;
            entries.Add(new RouteStatus(route.Id, route.Name, route.Network.ToString(), Name(route.Peer), RouteStatus.ClientRole, route.IsExitNode,
                reason is null, reason, route.Masquerade, route.Metric));
        }

        var forwarding = _forwardingProblem ?? (_forwardingScript is null ? "the forwarding table is not installed" : null);
        foreach (var route in plan.Served)
        {
            entries.Add(new RouteStatus(route.Id, route.Name, route.Network.ToString(), RouteStatus.SelfPeer, RouteStatus.ServingRole, route.IsExitNode,
                forwarding is null, forwarding, route.Masquerade, route.Metric));
        }

        foreach (var route in plan.Unused)
        {
            var serving = route.Peer is { } key && key == _iface.PublicKey;
            entries.Add(new RouteStatus(route.Id, route.Name, route.Network, serving ? RouteStatus.SelfPeer : route.Peer is { } peer ? Name(peer) : "",
                serving ? RouteStatus.ServingRole : RouteStatus.ClientRole, route.Network is "0.0.0.0/0" or "::/0", false, route.Reason, route.Masquerade, route.Metric));
        }

        entries.Sort((a, b) => string.CompareOrdinal(a.Network, b.Network) is var byNetwork and not 0 ? byNetwork : string.CompareOrdinal(a.Id, b.Id));
        return entries;
    }

    /// <summary>Removes everything this agent added (on stop). Never throws.</summary>
    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        try
        {
            await ApplyAsync(RoutePlan.Empty, [], stopping: true, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task<List<OsRule>> ExitRulesAsync(IReadOnlyCollection<string> controlHosts, CancellationToken cancellationToken)
    {
        var addresses = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var host in controlHosts.Where(h => h.Length > 0).Distinct(StringComparer.Ordinal))
        {
            IReadOnlyList<IPAddress> resolved = [];
            if (await TryAsync($"resolve {host}", async () => resolved = await _os.ResolveAsync(host, cancellationToken)))
            {
                foreach (var address in resolved)
                {
                    addresses.Add(address.ToString());
                }
            }
        }

        var rules = addresses.Select(a => new OsRule(_options.ControlRulePriority, $"to {a}/32", "main")).ToList();
        rules.AddRange(FixedExitRules());
        return rules;
    }

    /// <summary>The suppress rule and the tunnel rule, in the order they are added.</summary>
    private OsRule[] FixedExitRules()
    {
        var table = _options.Table.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return [new OsRule(_options.SuppressRulePriority, "", "main", "suppress_prefixlength 0"), new OsRule(_options.TunnelRulePriority, $"not fwmark {table}", table)];
    }

    private async Task ApplyForwardingAsync(RoutePlan plan, bool stopping, CancellationToken cancellationToken)
    {
        var table = ForwardingTable.TableName(_iface.Name);
        _forwardingProblem = null;
        if (plan.Served.Count == 0)
        {
            await RestoreForwardingAsync(cancellationToken);
            if (stopping || !_options.FilterForwarded)
            {
                if (_forwardingScript is not null && await TryAsync($"delete nft table {table}", () => _nft.DeleteTableAsync(ForwardingTable.Family, table, cancellationToken)))
                {
                    _forwardingScript = null;
                    _logger.LogInformation("No longer filtering forwarded mesh traffic: forwarding table {Table} removed", table);
                }

                return;
            }
        }
        else if (!_forwardingEnabled)
        {
            var previous = "";
            _forwardingEnabled = await TryAsync("net.ipv4.ip_forward=1", async () => previous = await _os.WriteSysctlAsync("net.ipv4.ip_forward", "1", cancellationToken));
            if (!_forwardingEnabled)
            {
                _forwardingProblem = $"IPv4 forwarding could not be enabled: {_lastFailure}";
            }
            else if (previous != "1")
            {
                _forwardingBefore = previous;
                _logger.LogWarning("Routing peer: enabled IPv4 forwarding (net.ipv4.ip_forward=1, was {Previous}); set back when this peer routes nothing any more", previous);
            }
        }

        if (_forwardingScript is not null
            && ForwardingTable.Render(_iface.Name, _iface.Address, plan.Served, plan.ForwardRules, _options.FilterForwarded, _generations.Current, _generations.CurrentTrusted, _options.MarkFlows) == _forwardingScript)
        {
            return;
        }

        var (generation, trusted) = await _generations.NextAsync(cancellationToken);
        var script = ForwardingTable.Render(_iface.Name, _iface.Address, plan.Served, plan.ForwardRules, _options.FilterForwarded, generation, trusted, _options.MarkFlows);
        if (!await TryAsync($"apply nft table {table}", () => _nft.ApplyAsync(script, cancellationToken)))
        {
            // The table in force (if any) is an older one: this plan's served routes are not in place.
            _forwardingProblem ??= $"the forwarding table could not be applied: {_lastFailure}";
        }
        else
        {
            _forwardingScript = script;
            _generations.Commit(generation, trusted);
            if (_options.MarkFlows)
            {
                _options.FlowRules?.RecordForwarded(generation, ForwardingTable.AcceptRuleIds(plan.ForwardRules, _options.FilterForwarded));
            }
            if (plan.Served.Count == 0)
            {
                _logger.LogInformation("Not routing for the mesh: nft table {Table} drops whatever the kernel would forward from {Interface}", table, _iface.Name);
            }
            else
            {
                _logger.LogInformation("Routing for the mesh: {Routes} ({Rules} route rules) in nft table {Table}",
                    string.Join(", ", plan.Served.Select(r => $"{r.Name} {r.Network}{(r.Masquerade ? " masquerade" : "")}")), plan.ForwardRules.Count, table);
            }
        }
    }

    /// <summary>Sets IPv4 forwarding back to what it was, if this agent turned it on.</summary>
    private async Task RestoreForwardingAsync(CancellationToken cancellationToken)
    {
        if (!_forwardingEnabled)
        {
            return;
        }

        if (_forwardingBefore is not { } before)
        {
            _forwardingEnabled = false; // it was on before this agent: not ours to turn off
            return;
        }

        if (await TryAsync($"net.ipv4.ip_forward={before}", () => _os.WriteSysctlAsync("net.ipv4.ip_forward", before, cancellationToken)))
        {
            _forwardingEnabled = false;
            _forwardingBefore = null;
            _logger.LogInformation("No longer routing for the mesh: IPv4 forwarding set back to {Previous}", before);
        }
    }

    private async Task MarkAsync(uint mark, CancellationToken cancellationToken)
    {
        await _os.SetFwmarkAsync(_iface, mark, cancellationToken);
        _markOtherSockets?.Invoke(mark);
    }

    private async Task<bool> TryAsync(string what, Func<Task> action)
    {
        try
        {
            await action();
            return true;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or UnauthorizedAccessException or System.ComponentModel.Win32Exception or System.Net.Sockets.SocketException)
        {
            _lastFailure = e.Message;
            _logger.LogWarning("Routing: {What} failed: {Problem}", what, e.Message);
            return false;
        }
    }
}
