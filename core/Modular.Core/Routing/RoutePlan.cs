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
    public bool IsExitNode => Network.PrefixLength == 0;
}

/// <summary>A network this agent forwards for others (it is the routing peer).</summary>
public sealed record ServedRoute(IPNetwork Network, string Id, string Name, bool Masquerade)
{
    public bool IsExitNode => Network.PrefixLength == 0;
}

/// <summary>
/// What one network map asks of routing: the client routes that won (one peer per prefix, since WireGuard
/// allowed IPs cannot overlap: lowest metric, then key order), the routes this peer serves, and the
/// routed firewall rules that say which forwarded connections it lets through. IPv4 only; anything it
/// cannot use (an IPv6 or malformed prefix, a prefix inside the overlay, a route through a peer not in the
/// map) is skipped with a warning.
/// </summary>
public sealed record RoutePlan(IReadOnlyList<ClientRoute> Client, IReadOnlyList<ServedRoute> Served, IReadOnlyList<FirewallRule> ForwardRules)
{
    public static RoutePlan Empty { get; } = new([], [], []);

    /// <summary>The exit node in use, if any.</summary>
    public ClientRoute? ExitNode => Client.FirstOrDefault(r => r.IsExitNode);

    public static RoutePlan From(NetworkMap map, WgKey self, IPNetwork overlay, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(map);
        if (map.Routes.Count == 0)
        {
            return Empty; // the common case: no work per map, whatever the number of peers
        }

        var inMap = new HashSet<WgKey>(map.RemotePeers.Where(p => p.WgPubKey.Length == WgKey.Size).Select(p => new WgKey(p.WgPubKey.Span)));
        var served = new List<ServedRoute>();
        var candidates = new List<ClientRoute>();
        foreach (var route in map.Routes)
        {
            if (!IPNetwork.TryParse(route.Network, out var network) || network.BaseAddress.AddressFamily != AddressFamily.InterNetwork)
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): not an IPv4 prefix", route.Name, route.Network);
                continue;
            }

            if (network.PrefixLength > 0 && (network.Contains(overlay.BaseAddress) || overlay.Contains(network.BaseAddress)))
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): it overlaps the overlay network {Overlay}", route.Name, route.Network, overlay);
                continue;
            }

            if (route.PeerWgPubKey.Length != WgKey.Size)
            {
                logger?.LogWarning("Skipped route {Name} ({Network}): routing peer key is not 32 bytes", route.Name, route.Network);
                continue;
            }

            var peer = new WgKey(route.PeerWgPubKey.Span);
            if (peer == self)
            {
                served.Add(new ServedRoute(network, route.Id, route.Name, route.Masquerade));
            }
            else if (inMap.Contains(peer))
            {
                candidates.Add(new ClientRoute(network, peer, route.Id, route.Name, route.Metric));
            }
            else
            {
                logger?.LogDebug("Route {Name} ({Network}) is served by a peer not in this map; not used", route.Name, route.Network);
            }
        }

        // A network this peer serves itself is never sent to another peer (HA routers serving the same LAN,
        // or an exit node that could use another one).
        var client = candidates
            .Where(r => !served.Any(s => s.Network.Equals(r.Network)))
            .GroupBy(r => r.Network)
            .Select(g => g.OrderBy(r => r.Metric).ThenBy(r => r.Peer.ToArray(), ByteOrder.Instance).First())
            .OrderBy(r => r.Network.PrefixLength).ThenBy(r => r.Network.ToString(), StringComparer.Ordinal)
            .ToList();
        var forward = served.Count == 0
            ? []
            : FirewallRuleMapper.Map(map.FirewallRules.Where(r => r.Destination.Length > 0)).Rules.Where(r => r.IsRouted && r.Direction == RuleDirection.Inbound).ToList();
        return new RoutePlan(client, served.DistinctBy(s => s.Network).ToList(), forward);
    }

    /// <summary>The resources this plan uses or serves, for the firewall's flow events (none inside <paramref name="overlay"/>).</summary>
    public RoutedResources ToFirewallResources(IPNetwork overlay)
    {
        if (Client.Count == 0 && Served.Count == 0)
        {
            return RoutedResources.Empty;
        }

        static IpPrefix128 Prefix(IPNetwork network) => IpPrefix128.TryParse(network.ToString(), out var prefix) ? prefix : default;
        return RoutedResources.Create(
            [.. Served.Select(s => (Prefix(s.Network), s.Id)), .. Client.Select(c => (Prefix(c.Network), c.Id))],
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
