using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Lazy;
using Modular.Core.Peers;
using Modular.Core.Routing;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// The one way peers and routes change. Map application, route failover, a user's switch and clearing the peers of a
/// removed agent all go through <see cref="_gate"/>, one at a time: otherwise one of them puts back what another just
/// took away (a failover re-applying the map in force after management removed this agent). Each applies the
/// firewall, DNS, lazy setting, peers, OS routes and status from one map and one <see cref="RoutePlan"/>.
/// <para>
/// Lock order: <see cref="_gate"/> first; the connection manager's, route manager's and recorder's own locks are taken
/// inside it, never the other way round.
/// </para>
/// </summary>
internal sealed class MapApplier
{
    // Immutable after construction.
    private readonly Func<EngineParts?> _parts;
    private readonly WgKey _ownKey;
    private readonly EngineOptions _options;
    private readonly EngineSeams _seams;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly Func<IReadOnlyCollection<string>> _controlHosts;
    private readonly FlowSwitch? _flows;

    private readonly ApplyGate _gate = new();
    private readonly ExpiredPeers _expired;

    // Written only with _gate held. _routePlan is also read without it, by failover's quick "anything stale?" check.
    private volatile NetworkMap? _appliedMap;
    private volatile RoutePlan _routePlan = RoutePlan.Empty;
    private int _switchesApplied;

    /// <param name="parts">The engine's parts once built (null before): maps only come after the interface.</param>
    /// <param name="controlHosts">The control plane's hosts, which an exit node must not carry.</param>
    /// <param name="flows">Flow logging, switched by each map's account settings; null: none.</param>
    public MapApplier(Func<EngineParts?> parts, WgKey ownKey, EngineOptions options, EngineSeams seams, StatusRecorder recorder, ILogger logger, Func<IReadOnlyCollection<string>> controlHosts, FlowSwitch? flows = null)
    {
        _flows = flows;
        _parts = parts;
        _ownKey = ownKey;
        _options = options;
        _seams = seams;
        _recorder = recorder;
        _logger = logger;
        _controlHosts = controlHosts;
        _expired = new ExpiredPeers(recorder);
    }

    /// <summary>For tests: how many changes wait for the apply gate.</summary>
    public int GateWaiting => _gate.Waiting;

    /// <summary>The parts, for work that only runs once they exist (maps come after the interface).</summary>
    private EngineParts Parts => _parts() ?? throw new InvalidOperationException("the engine's interface is not built yet");

    /// <summary>
    /// Puts a whole network map in force: firewall rules, DNS, then peers and routes by a new route plan. Peers whose
    /// login expired are left out of all of it and only shown in status (<see cref="ExpiredPeers"/>).
    /// </summary>
    public async Task<(int Added, int Updated, int Removed)> ApplyMapAsync(NetworkMap map, CancellationToken cancellationToken)
    {
        var parts = Parts;
        using (await _gate.EnterAsync(cancellationToken))
        {
            (map, var expired) = ExpiredPeers.Split(map);
            var routes = RoutePlan.From(map, _ownKey, parts.Iface.Address, _logger, IsConnected);
            if (parts.Firewall is not null)
            {
                await parts.Firewall.ApplyAsync(map, cancellationToken);
            }

            await ApplyDnsAsync(parts, map, cancellationToken);
            _expired.Forget(expired);
            var changes = await ApplyRoutePlanAsync(parts, map, routes, cancellationToken);
            _expired.Show(expired);
            return changes;
        }
    }

    /// <summary>Management removed this agent: every tunnel goes, and the routes through them.</summary>
    public async Task ClearPeersAsync()
    {
        await _seams.BeforeAsync(EngineStep.ClearPeers, CancellationToken.None);
        if (_parts() is not { } parts)
        {
            return;
        }

        // Through the gate, as every change of peers: a failover or switch in progress puts the map in force back
        // otherwise, with the peers of the agent management just removed.
        using (await _gate.EnterAsync(CancellationToken.None))
        {
            await parts.Manager.ApplyAsync([], CancellationToken.None);
            _expired.Forget([]);
            await parts.Routes.ApplyAsync(RoutePlan.Empty, [], CancellationToken.None);
            _recorder.SetRoutes([]);
            (_appliedMap, _routePlan) = (null, RoutePlan.Empty);
        }
    }

    /// <summary>
    /// Route failover: when a routing peer that shares a network with another one connects or drops, the
    /// routes are planned again from the map in force, so a connected routing peer carries the network.
    /// </summary>
    public async Task FailOverRoutesAsync(CancellationToken cancellationToken)
    {
        if (_parts() is not { } parts || !_routePlan.IsStale(IsConnected))
        {
            return; // the common case: nothing shared, or nothing changed
        }

        using (await _gate.EnterAsync(cancellationToken))
        {
            if (_appliedMap is not { } map || !_routePlan.IsStale(IsConnected))
            {
                return;
            }

            var plan = RoutePlan.From(map, _ownKey, parts.Iface.Address, null, IsConnected);
            var moved = plan.MovedFrom(_routePlan);
            var names = PeerNames(map, plan);
            if (moved.Count == 0)
            {
                _routePlan = plan; // e.g. a standby came up: remember it, nothing moves
                _recorder.SetRoutes(parts.Routes.Describe(plan, names));
                return;
            }

            foreach (var route in moved)
            {
                _logger.LogWarning("Route {Name} ({Network}) fails over to routing peer {Peer} ({State})",
                    route.Name, route.Network, names(route.Peer) ?? route.Peer.ToShortString(), IsConnected(route.Peer) ? "connected" : "none of its routing peers is connected");
            }

            await _seams.BeforeAsync(EngineStep.Failover, cancellationToken);
            await ApplyRoutePlanAsync(parts, map, plan, cancellationToken);
        }
    }

    /// <summary>Puts a switch the user just changed in force: the map in force is applied again under the new setting.</summary>
    public async Task ApplySwitchesAsync(CancellationToken cancellationToken)
    {
        var version = _options.Switches.Version;
        if (version == _switchesApplied || _parts() is not { } parts)
        {
            return;
        }

        using (await _gate.EnterAsync(cancellationToken))
        {
            if (_appliedMap is { } map)
            {
                await ApplyRoutePlanAsync(parts, map, _routePlan, cancellationToken);
                _switchesApplied = version;
            }
        }
    }

    /// <summary>
    /// The PSK provider rotated a key: the map in force is applied again, so the changed peers get their new PSK in place
    /// (their tunnel stays up).
    /// </summary>
    public async Task ApplyKeyChangesAsync(CancellationToken cancellationToken)
    {
        if (_parts() is not { } parts || !parts.PresharedKeys.TakeChanged())
        {
            return;
        }

        using (await _gate.EnterAsync(cancellationToken))
        {
            if (_appliedMap is { } map)
            {
                await ApplyRoutePlanAsync(parts, map, _routePlan, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Puts a route plan in force: the networks it routes through peers join their allowed IPs, the OS
    /// routes follow, then status (caller holds <see cref="_gate"/>).
    /// </summary>
    private async Task<(int Added, int Updated, int Removed)> ApplyRoutePlanAsync(EngineParts parts, NetworkMap map, RoutePlan plan, CancellationToken cancellationToken)
    {
        parts.Firewall?.UpdateResources(plan.ToFirewallResources(parts.Iface.Address));
        if (_flows is not null)
        {
            await _flows.ApplyAsync(map, cancellationToken);
            // With the features below, not a stats tick later: status never says "on" while its flows section says not running.
            _recorder.SetFlows(_flows.Status());
        }

        // The PSK provider starts or ends before status is built, so status never says Rosenpass is on without one.
        await parts.PresharedKeys.ApplyAsync(map, cancellationToken);
        LazySwitch.Apply(parts.Manager, map, _options.Config, _options.Switches, _recorder, _logger,
            FeatureStatusBuilder.Merge(_flows?.NotAvailable, parts.PresharedKeys.NotAvailable));
        if (!parts.Manager.Lazy.RoutePeers.SetEquals(plan.RoutePeers))
        {
            // Before the peer diff, which opens a parked peer that became a routing peer (and never parks a new one).
            parts.Manager.Lazy = parts.Manager.Lazy with { RoutePeers = plan.RoutePeers };
        }

        var peers = plan.MergeAllowedIps(ToPeers(map, _logger));
        var allowed = await parts.PresharedKeys.DecideAsync(map, peers, cancellationToken, peer => parts.Manager.Find(peer)?.IsParked == true);
        var changes = await parts.Manager.ApplyAsync(allowed, cancellationToken);
        parts.PresharedKeys.PublishRefused(peers);
        await parts.Routes.ApplyAsync(plan, _controlHosts(), cancellationToken);
        _recorder.SetRoutes(parts.Routes.Describe(plan, PeerNames(map, plan)));
        _appliedMap = map;
        _routePlan = plan;
        return changes;
    }

    private bool IsConnected(WgKey peer)
        => _seams.IsConnected is { } isConnected ? isConnected(peer) : _parts()?.Manager.Find(peer)?.State == PeerConnectionState.Connected;

    /// <summary>The mesh resolver follows the map (records, listener); the assembly opens the firewall to its listener.</summary>
    private async Task ApplyDnsAsync(EngineParts parts, NetworkMap map, CancellationToken cancellationToken)
    {
        if (parts.Dns is { } dns)
        {
            await dns.ApplyAsync(map, cancellationToken);
            _recorder.SetDns(dns.Status());
        }
    }

    /// <summary>Names routing peers as status does for peers (fqdn, else hostname); looks up only when the plan has routes.</summary>
    private static Func<WgKey, string?> PeerNames(NetworkMap map, RoutePlan plan)
    {
        if (plan.Client.Count == 0 && plan.Unused.Count == 0)
        {
            return _ => null;
        }

        var names = new Dictionary<WgKey, string>();
        foreach (var remote in map.RemotePeers)
        {
            if (remote.WgPubKey.Length == WgKey.Size)
            {
                names.TryAdd(new WgKey(remote.WgPubKey.Span), remote.Fqdn.Length > 0 ? remote.Fqdn : remote.Hostname);
            }
        }

        return key => names.GetValueOrDefault(key);
    }

    /// <summary>Turns a network map into the manager's peer list; malformed entries are skipped with a warning.</summary>
    public static IReadOnlyList<RemotePeerInfo> ToPeers(NetworkMap map, ILogger? logger = null)
    {
        WgKey? psk = map.AccountPsk.Length == WgKey.Size ? new WgKey(map.AccountPsk.Span) : null;
        var peers = new List<RemotePeerInfo>(map.RemotePeers.Count);
        foreach (var remote in map.RemotePeers)
        {
            if (remote.WgPubKey.Length != WgKey.Size)
            {
                logger?.LogWarning("Skipped map entry {Name}: public key is not 32 bytes", remote.Hostname);
                continue;
            }

            var allowed = new List<IPNetwork>(remote.AllowedIps.Count);
            foreach (var text in remote.AllowedIps)
            {
                if (IPNetwork.TryParse(text, out var network))
                {
                    allowed.Add(network);
                }
                else
                {
                    logger?.LogWarning("Skipped allowed IP {Text} of {Name}: not a prefix", text, remote.Hostname);
                }
            }

            var ip = remote.AllowedIps.Count > 0 ? AddressOnly(remote.AllowedIps[0]) : "";
            var name = remote.Fqdn.Length > 0 ? remote.Fqdn : remote.Hostname;
            peers.Add(new RemotePeerInfo(new WgKey(remote.WgPubKey.Span), name, ip, allowed, psk));
        }

        return peers;
    }

    /// <summary>"address/prefix" to the address.</summary>
    internal static string AddressOnly(string prefixText)
    {
        var slash = prefixText.IndexOf('/', StringComparison.Ordinal);
        return slash > 0 ? prefixText[..slash] : prefixText;
    }
}
