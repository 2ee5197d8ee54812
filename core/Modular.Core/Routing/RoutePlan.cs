using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Firewall;
using Modular.Core.Peers;
using FirewallRule = Modular.Core.Firewall.FirewallRule;

namespace Modular.Core.Routing;

/// <summary>A network this agent sends through another peer (a client route); prefix length 0: the exit node.</summary>
public sealed record ClientRoute(IPNetwork Network, WgKey Peer, string Id, string Name, int Metric)
{
    /// <summary>As management sent it; the routing peer does the masquerading, this only reports it.</summary>
    public bool Masquerade { get; init; }

    public bool IsExitNode => Network.PrefixLength == 0;
}

/// <summary>A network this agent forwards for others (it is the routing peer).</summary>
public sealed record ServedRoute(IPNetwork Network, string Id, string Name, bool Masquerade)
{
    /// <summary>As management sent it (clients choose by it), for status.</summary>
    public int Metric { get; init; }

    public bool IsExitNode => Network.PrefixLength == 0;
}

/// <summary>A route of the map this agent does not use, and why (for status).</summary>
/// <param name="Peer">The routing peer, when its key was readable.</param>
public sealed record UnusedRoute(string Network, WgKey? Peer, string Id, string Name, int Metric, bool Masquerade, string Reason);

/// <summary>
/// What one network map asks of routing: the client routes that won (one peer per prefix, since WireGuard
/// allowed IPs cannot overlap: a connected routing peer first, then lowest metric, then key order), the routes this peer serves, and the
/// routed firewall rules that say which forwarded connections it lets through. IPv4 only; anything it
/// cannot use (an IPv6 or malformed prefix, a prefix inside the overlay, a route through a peer not in the
/// map) is skipped with a warning.
/// </summary>
public sealed record RoutePlan(IReadOnlyList<ClientRoute> Client, IReadOnlyList<ServedRoute> Served, IReadOnlyList<FirewallRule> ForwardRules)
{
    // Before Empty: static initializers run in order, and Empty's init reads it.
    private static readonly IReadOnlySet<WgKey> EmptyKeys = new HashSet<WgKey>();

    public static RoutePlan Empty { get; } = new([], [], []);

    /// <summary>The map's routes this plan does not use (skipped or lost to another peer), with the reason.</summary>
    public IReadOnlyList<UnusedRoute> Unused { get; init; } = [];

    /// <summary>The exit node in use, if any.</summary>
    public ClientRoute? ExitNode => Client.FirstOrDefault(r => r.IsExitNode);

    /// <summary>
    /// Routing peers that share a network with another routing peer (high availability): whether each is
    /// connected decides which one carries it, so a change in that calls for a new plan.
    /// </summary>
    public IReadOnlySet<WgKey> Contenders { get; init; } = EmptyKeys;

    /// <summary>The <see cref="Contenders"/> that were connected when this plan was made.</summary>
    public IReadOnlySet<WgKey> ConnectedContenders { get; init; } = EmptyKeys;

    /// <summary>
    /// The peers at the other end of a route. As a client: every peer that carries, or stands by for, a network this
    /// plan routes through a peer (exit node included). As a routing peer: every peer an accepting forward rule of the
    /// networks served here lets in. Lazy connections never park them (<see cref="Lazy.LazyOptions.RoutePeers"/>): a
    /// routed subnet works from its first packet, failover compares live connections, not a parked standby that merely
    /// looks "not connected", and a routing peer does not park a client that still counts it as connected (the client
    /// never parks its router, so nothing would wake the router's end before the client's next handshake).
    /// </summary>
    public IReadOnlySet<WgKey> RoutePeers { get; init; } = EmptyKeys;

    /// <summary>True when a contender's connection came up or went down since this plan was made.</summary>
    public bool IsStale(Func<WgKey, bool> isConnected) => Contenders.Any(peer => isConnected(peer) != ConnectedContenders.Contains(peer));

    /// <summary>This plan's client routes that <paramref name="before"/> sent through another peer (or not at all).</summary>
    public IReadOnlyList<ClientRoute> MovedFrom(RoutePlan before)
        => [.. Client.Where(route => !before.Client.Any(old => old.Network.Equals(route.Network) && old.Peer == route.Peer))];

    /// <param name="isConnected">
    /// Whether a routing peer's connection is up. Among routing peers of the same network a connected one wins
    /// over a better metric (failover); null: metric and key order alone.
    /// </param>
    public static RoutePlan From(NetworkMap map, WgKey self, IPNetwork overlay, ILogger? logger = null, Func<WgKey, bool>? isConnected = null)
    {
        ArgumentNullException.ThrowIfNull(map);
        if (map.Routes.Count == 0)
        {
            return Empty; // the common case: no work per map, whatever the number of peers
        }

        var inMap = new HashSet<WgKey>(map.RemotePeers.Where(p => p.WgPubKey.Length == WgKey.Size).Select(p => new WgKey(p.WgPubKey.Span)));
        var served = new List<ServedRoute>();
        var candidates = new List<ClientRoute>();
        var unused = new List<UnusedRoute>();
        foreach (var route in map.Routes)
        {
            WgKey? key = route.PeerWgPubKey.Length == WgKey.Size ? new WgKey(route.PeerWgPubKey.Span) : null;
            void Skip(string reason) => unused.Add(new UnusedRoute(route.Network, key, route.Id, route.Name, route.Metric, route.Masquerade, reason));
            if (!IPNetwork.TryParse(route.Network, out var network) || network.BaseAddress.AddressFamily != AddressFamily.InterNetwork)
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): not an IPv4 prefix", route.Name, route.Network);
                Skip("not an IPv4 prefix");
                continue;
            }

            if (network.PrefixLength > 0 && (network.Contains(overlay.BaseAddress) || overlay.Contains(network.BaseAddress)))
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): it overlaps the overlay network {Overlay}", route.Name, route.Network, overlay);
                Skip($"overlaps the overlay network {overlay}");
                continue;
            }

            if (key is not { } peer)
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): routing peer key is not 32 bytes", route.Name, route.Network);
                Skip("routing peer key is not 32 bytes");
                continue;
            }

            if (peer == self)
            {
                served.Add(new ServedRoute(network, route.Id, route.Name, route.Masquerade) { Metric = route.Metric });
            }
            else if (inMap.Contains(peer))
            {
                candidates.Add(new ClientRoute(network, peer, route.Id, route.Name, route.Metric) { Masquerade = route.Masquerade });
            }
            else
            {
                logger?.LogDebug("Route {Name} ({Network}) is served by a peer not in this map; not used", route.Name, route.Network);
                Skip("the routing peer is not in this peer's map");
            }
        }

        // A network this peer serves itself is never sent to another peer (HA routers serving the same LAN,
        // or an exit node that could use another one).
        var client = new List<ClientRoute>();
        var contenders = new HashSet<WgKey>();
        var connectedContenders = new HashSet<WgKey>();
        var routePeers = new HashSet<WgKey>();
        foreach (var group in candidates.GroupBy(r => r.Network))
        {
            var servedHere = served.Any(s => s.Network.Equals(group.Key));
            var connected = group.Select(r => r.Peer).Distinct().ToDictionary(peer => peer, peer => isConnected?.Invoke(peer) ?? false);
            var ranked = group.OrderByDescending(r => connected[r.Peer]).ThenBy(r => r.Metric).ThenBy(r => r.Peer.ToArray(), ByteOrder.Instance).ToList();
            if (!servedHere)
            {
                client.Add(ranked[0]);
                routePeers.UnionWith(connected.Keys);
                if (isConnected is not null && connected.Count > 1)
                {
                    contenders.UnionWith(connected.Keys);
                    connectedContenders.UnionWith(connected.Where(c => c.Value).Select(c => c.Key));
                }
            }

            foreach (var other in servedHere ? ranked : ranked.Skip(1))
            {
                var reason = servedHere ? "this peer serves that network itself"
                    : connected[ranked[0].Peer] && !connected[other.Peer] ? $"standby: its routing peer is not connected; route {ranked[0].Name} carries the network"
                    : $"lost to route {ranked[0].Name} (metric {ranked[0].Metric})";
                unused.Add(new UnusedRoute(other.Network.ToString(), other.Peer, other.Id, other.Name, other.Metric, other.Masquerade, reason));
            }
        }

        client = [.. client.OrderBy(r => r.Network.PrefixLength).ThenBy(r => r.Network.ToString(), StringComparer.Ordinal)];
        var forward = served.Count == 0
            ? []
            : FirewallRuleMapper.Map(map.FirewallRules.Where(r => r.Destination.Length > 0)).Rules.Where(r => r.IsRouted && r.Direction == RuleDirection.Inbound).ToList();
        routePeers.UnionWith(RouteClients(map, forward));

        var distinctServed = served.DistinctBy(s => s.Network).ToList();
        foreach (var duplicate in served.Except(distinctServed))
        {
            var first = distinctServed.First(s => s.Network.Equals(duplicate.Network));
            unused.Add(new UnusedRoute(duplicate.Network.ToString(), self, duplicate.Id, duplicate.Name, duplicate.Metric, duplicate.Masquerade, $"same network as route {first.Name}, which this peer serves"));
        }

        return new RoutePlan(client, distinctServed, forward) { Unused = unused, Contenders = contenders, ConnectedContenders = connectedContenders, RoutePeers = routePeers };
    }

    // The peers whose overlay address an accepting forward rule lets in (each peer's first allowed IP is its own).
    private static IEnumerable<WgKey> RouteClients(NetworkMap map, IReadOnlyList<FirewallRule> forward)
    {
        var accepting = forward.Where(rule => rule.Action == RuleAction.Accept).Select(rule => rule.Remote).ToList();
        if (accepting.Count == 0)
        {
            yield break;
        }

        foreach (var peer in map.RemotePeers)
        {
            if (peer.WgPubKey.Length == WgKey.Size && peer.AllowedIps.Count > 0 && IPNetwork.TryParse(peer.AllowedIps[0], out var own)
                && accepting.Any(remote => remote.Contains(IpPrefix128.ToUInt128(own.BaseAddress))))
            {
                yield return new WgKey(peer.WgPubKey.Span);
            }
        }
    }

    /// <summary>The resources this plan uses or serves, for the firewall's flow events (none inside <paramref name="overlay"/>); the exit nodes it uses are marked.</summary>
    public RoutedResources ToFirewallResources(IPNetwork overlay)
    {
        if (Client.Count == 0 && Served.Count == 0)
        {
            return RoutedResources.Empty;
        }

        static IpPrefix128 Prefix(IPNetwork network) => IpPrefix128.TryParse(network.ToString(), out var prefix) ? prefix : default;
        return RoutedResources.Create(
            [.. Served.Select(s => (Prefix(s.Network), s.Id, false)), .. Client.Select(c => (Prefix(c.Network), c.Id, c.IsExitNode))],
            Prefix(overlay));
    }

    /// <summary>Each peer with the networks it routes for us added to its allowed IPs (a new list only where something is added).</summary>
    public IReadOnlyList<RemotePeerInfo> MergeAllowedIps(IReadOnlyList<RemotePeerInfo> peers)
    {
        ArgumentNullException.ThrowIfNull(peers);
        if (Client.Count == 0)
        {
            return peers;
        }

        var byPeer = Client.ToLookup(r => r.Peer);
        return [.. peers.Select(p => byPeer[p.PublicKey].Any()
            ? p with { AllowedIps = [.. p.AllowedIps, .. byPeer[p.PublicKey].Select(r => r.Network).Where(n => !p.AllowedIps.Contains(n))] }
            : p)];
    }

    private sealed class ByteOrder : IComparer<byte[]>
    {
        public static readonly ByteOrder Instance = new();

        public int Compare(byte[]? x, byte[]? y) => x.AsSpan().SequenceCompareTo(y);
    }
}
