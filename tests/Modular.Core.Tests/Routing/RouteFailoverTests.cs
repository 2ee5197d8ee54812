using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Routing;

namespace Modular.Core.Tests.Routing;

/// <summary>Routing peers that serve the same network: a connected one carries it, whatever the metrics (failover).</summary>
public sealed class RouteFailoverTests
{
    private static readonly IPNetwork Overlay = IPNetwork.Parse("100.64.0.0/10");
    private static readonly WgKey Self = RouteMaps.Self;
    private static readonly WgKey Primary = RouteMaps.RouterA;
    private static readonly WgKey Backup = RouteMaps.RouterB;
    private static readonly NetworkMap HaMap = RouteMaps.Map(
        RouteMaps.Route("lan-primary", "10.1.0.0/24", Primary, 10), RouteMaps.Route("lan-backup", "10.1.0.0/24", Backup, 20), RouteMaps.Route("other", "10.9.0.0/24", Backup, 5));

    [Fact]
    public void Both_connected_the_metric_decides_and_the_other_is_lost_to_it()
    {
        var plan = RoutePlan.From(HaMap, Self, Overlay, isConnected: _ => true);

        Assert.Equal(Primary, plan.Client.Single(r => r.Network.ToString() == "10.1.0.0/24").Peer);
        Assert.Equal("lost to route lan-primary (metric 10)", plan.Unused.Single().Reason);
        Assert.Equal([Primary, Backup], plan.Contenders.OrderBy(k => k.ToArray()[0]));
        Assert.Equal([Primary, Backup], plan.ConnectedContenders.OrderBy(k => k.ToArray()[0]));
    }

    [Fact]
    public void A_connected_backup_carries_the_network_while_the_primary_is_down_and_hands_it_back()
    {
        var down = RoutePlan.From(HaMap, Self, Overlay, isConnected: peer => peer == Backup);
        Assert.Equal(Backup, down.Client.Single(r => r.Network.ToString() == "10.1.0.0/24").Peer);
        var standby = down.Unused.Single();
        Assert.Equal(("lan-primary", Primary), (standby.Name, standby.Peer!.Value));
        Assert.StartsWith("standby: its routing peer is not connected", standby.Reason, StringComparison.Ordinal);

        // Nothing changed: the plan holds. The primary comes back: the plan is stale, and the next one returns to it.
        Assert.False(down.IsStale(peer => peer == Backup));
        Assert.True(down.IsStale(_ => true));
        var back = RoutePlan.From(HaMap, Self, Overlay, isConnected: _ => true);
        var moved = Assert.Single(back.MovedFrom(down));
        Assert.Equal(("10.1.0.0/24", Primary), (moved.Network.ToString(), moved.Peer));
        Assert.Equal(Primary, back.Client.Single(r => r.Network.ToString() == "10.1.0.0/24").Peer);
        Assert.Empty(back.MovedFrom(RoutePlan.From(HaMap, Self, Overlay, isConnected: _ => true)));
    }

    [Fact]
    public void With_no_routing_peer_connected_the_metric_still_picks_one_and_a_lone_router_is_no_contender()
    {
        var plan = RoutePlan.From(HaMap, Self, Overlay, isConnected: _ => false);
        Assert.Equal(Primary, plan.Client.Single(r => r.Network.ToString() == "10.1.0.0/24").Peer);
        Assert.Equal(Backup, plan.Client.Single(r => r.Network.ToString() == "10.9.0.0/24").Peer); // served by one peer only
        Assert.Empty(plan.ConnectedContenders);
        Assert.True(plan.IsStale(peer => peer == Backup)); // the backup came up: plan again

        var lone = RoutePlan.From(RouteMaps.Map(RouteMaps.Route("lan", "10.1.0.0/24", Primary, 10)), Self, Overlay, isConnected: _ => false);
        Assert.Empty(lone.Contenders);
        Assert.False(lone.IsStale(_ => true));
    }

    [Fact]
    public void Without_connection_states_the_plan_is_by_metric_and_never_stale()
    {
        var plan = RoutePlan.From(HaMap, Self, Overlay);
        Assert.Equal(Primary, plan.Client.Single(r => r.Network.ToString() == "10.1.0.0/24").Peer);
        Assert.Empty(plan.Contenders);
        Assert.False(plan.IsStale(_ => true));
        Assert.False(RoutePlan.Empty.IsStale(_ => true));
    }
}
