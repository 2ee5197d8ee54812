using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Routing;
using Modular.Core.Tests.Routing;
using static Modular.Core.Tests.Engine.AgentEngineTests;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Lazy connections never park a peer that serves (or stands by for) a route this client installed: a routed subnet
/// works from its first packet, and route failover compares live connections, not a parked standby that only looks
/// "not connected" (issue 17).
/// </summary>
public sealed class LazyRoutingPeerTests
{
    private static readonly LoginResponse Login = new() { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" } };
    private static readonly WgKey Plain = RouteMaps.Key(7);

    private static EngineRig LazyRig()
        => new((_, _) => ValueTask.CompletedTask, configure: config => config with
        {
            Features = config.Features with { LazyConnections = new LocalToggle(Config: true) },
        });

    private static bool Parked(EngineRig rig, WgKey peer) => rig.Engine.Connections!.Find(peer)!.IsParked;

    [Fact]
    public async Task Routing_peers_and_their_standby_stay_open_while_other_lazy_peers_park()
    {
        await using var rig = LazyRig();
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        var ha = RouteMaps.Map(RouteMaps.Route("lan-a", "10.1.0.0/24", RouteMaps.RouterA, 10), RouteMaps.Route("lan-b", "10.1.0.0/24", RouteMaps.RouterB, 20));
        Assert.Equal((3, 0, 0), await rig.Engine.ApplyMapAsync(ha, CancellationToken.None));

        Assert.True(Parked(rig, Plain), "a peer that serves no route parks as lazy connections say");
        Assert.False(Parked(rig, RouteMaps.RouterA), "the routing peer in use is never parked");
        Assert.False(Parked(rig, RouteMaps.RouterB), "the standby routing peer is never parked either: failover needs its real state");
        Assert.Equal(PeerConnectionState.Idle, rig.Recorder.Snapshot().Peers.Single(p => p.PublicKey == Plain.ToString()).State);
        Assert.NotEqual(PeerConnectionState.Idle, rig.Recorder.Snapshot().Peers.Single(p => p.PublicKey == RouteMaps.RouterB.ToString()).State);
    }

    [Fact]
    public async Task A_parked_peer_that_becomes_a_routing_peer_opens_with_that_map()
    {
        await using var rig = LazyRig();
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(RouteMaps.Map(), CancellationToken.None);
        Assert.True(Parked(rig, RouteMaps.RouterA));
        Assert.True(Parked(rig, Plain));

        // Now it serves an exit node this client uses: it opens, the others stay parked.
        await rig.Engine.ApplyMapAsync(RouteMaps.Map(RouteMaps.Route("exit", "0.0.0.0/0", RouteMaps.RouterA)), CancellationToken.None);
        Assert.False(Parked(rig, RouteMaps.RouterA));
        Assert.True(Parked(rig, RouteMaps.RouterB));
        Assert.True(Parked(rig, Plain));
    }

    [Fact]
    public void The_plan_names_every_routing_peer_of_a_network_it_routes_but_none_of_a_network_served_here()
    {
        var self = RouteMaps.Self;
        var map = RouteMaps.Map(
            RouteMaps.Route("lan-a", "10.1.0.0/24", RouteMaps.RouterA, 10), RouteMaps.Route("lan-b", "10.1.0.0/24", RouteMaps.RouterB, 20),
            RouteMaps.Route("mine", "10.2.0.0/24", self), RouteMaps.Route("also-mine", "10.2.0.0/24", Plain));
        var plan = RoutePlan.From(map, self, System.Net.IPNetwork.Parse("100.64.0.0/10"), isConnected: _ => false);

        Assert.Equal([RouteMaps.RouterA, RouteMaps.RouterB], plan.RoutePeers.OrderBy(k => k.ToArray()[0]));
        Assert.Empty(RoutePlan.Empty.RoutePeers);
    }

    [Fact]
    public void A_routing_peer_may_not_idle_even_with_lazy_connections_on()
    {
        var router = new Modular.Core.Peers.RemotePeerInfo(RouteMaps.RouterA, "router", "100.64.0.2", [System.Net.IPNetwork.Parse("100.64.0.2/32")], null);
        var lazy = new Modular.Core.Lazy.LazyOptions(true, TimeSpan.FromMinutes(15), []);
        Assert.True(lazy.MayIdle(router));
        Assert.False((lazy with { RoutePeers = new HashSet<WgKey> { RouteMaps.RouterA } }).MayIdle(router));
        Assert.True((lazy with { RoutePeers = new HashSet<WgKey> { RouteMaps.RouterB } }).MayIdle(router));
    }

    /// <summary>
    /// The routing peer's end: with lazy connections on there too, it parked its client after the inactivity timeout
    /// while the client (which never parks its router) still counted it connected and kept sending on the old session,
    /// so the routed subnet went dark until the client's next handshake (found by the E2E test in RouteTests).
    /// </summary>
    [Fact]
    public async Task A_routing_peer_keeps_the_peers_its_routes_let_in_and_parks_the_others()
    {
        await using var rig = LazyRig();
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);

        await rig.Engine.ApplyMapAsync(ServingMap(rig.PublicKey), CancellationToken.None);
        Assert.False(Parked(rig, Plain), "the peer the served route lets in is never parked");
        Assert.True(Parked(rig, RouteMaps.RouterA), "a peer only a drop rule names parks");
        Assert.True(Parked(rig, RouteMaps.RouterB), "a peer no forward rule names parks");
    }

    [Fact]
    public void The_plan_of_a_routing_peer_names_the_peers_an_accepting_forward_rule_lets_in()
    {
        var overlay = System.Net.IPNetwork.Parse("100.64.0.0/10");
        Assert.Equal([Plain], RoutePlan.From(ServingMap(RouteMaps.Self), RouteMaps.Self, overlay).RoutePeers);

        // The same rules on a peer that serves nothing name no one; a rule for the whole overlay names every peer.
        var notServing = ServingMap(RouteMaps.Self);
        notServing.Routes.Clear();
        Assert.Empty(RoutePlan.From(notServing, RouteMaps.Self, overlay).RoutePeers);
        var everyone = ServingMap(RouteMaps.Self);
        everyone.FirewallRules.Add(new FirewallRule { RuleId = "all", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "all", Destination = "10.9.0.0/24" });
        Assert.Equal(3, RoutePlan.From(everyone, RouteMaps.Self, overlay).RoutePeers.Count);
    }

    // This peer (self) serves 10.9.0.0/24: peer 7 (100.64.0.7) may reach it, router A (100.64.0.2) is named only by a drop rule,
    // and a rule without a destination (this peer's own traffic) names router B (100.64.0.3).
    private static NetworkMap ServingMap(WgKey self)
    {
        var map = RouteMaps.Map(RouteMaps.Route("mine", "10.9.0.0/24", self));
        map.FirewallRules.Add(new FirewallRule { RuleId = "web", PeerIp = "100.64.0.7/32", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.9.0.0/24", PortRanges = { new PortRange { Start = 80, End = 80 } } });
        map.FirewallRules.Add(new FirewallRule { RuleId = "deny", PeerIp = "100.64.0.2/32", Direction = "in", Action = "drop", Protocol = "all", Destination = "10.9.0.0/24" });
        map.FirewallRules.Add(new FirewallRule { RuleId = "own", PeerIp = "100.64.0.3/32", Direction = "in", Action = "accept", Protocol = "all" });
        return map;
    }
}
