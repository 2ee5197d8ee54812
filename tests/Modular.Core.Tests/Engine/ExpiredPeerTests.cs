using Modular.Abstractions.Peers;
using Modular.Control.Management;
using Modular.Core.Engine;
using Modular.Core.Tests.Routing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// A peer whose login expired stays in the map marked <c>expired</c>: the agent shows it as Idle, "login expired", and
/// puts nothing of it in force (no connection, no WireGuard peer, no route through it); when it logs in again it is an
/// ordinary peer once more, and when it leaves the map it leaves status.
/// </summary>
public sealed class ExpiredPeerTests
{
    private static readonly LoginResponse Login = new() { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" } };

    private static NetworkMap Map(ulong serial, bool routerBExpired, bool withRouterB = true)
    {
        var map = RouteMaps.Map(RouteMaps.Route("lan-b", "10.2.0.0/24", RouteMaps.RouterB));
        map.Serial = serial;
        var routerB = map.RemotePeers.Single(p => p.Hostname == "p3");
        routerB.Expired = routerBExpired;
        if (!withRouterB)
        {
            map.RemotePeers.Remove(routerB);
        }

        return map;
    }

    [Fact]
    public async Task An_expired_peer_is_shown_idle_with_its_reason_and_kept_out_of_wireguard_and_routes()
    {
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, _ => true);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        var routerB = RouteMaps.RouterB.ToBase64();

        // Live: a connection, and the route through it.
        await rig.Engine.ApplyMapAsync(Map(1, routerBExpired: false), CancellationToken.None);
        Assert.NotNull(rig.Engine.Connections!.Find(RouteMaps.RouterB));
        Assert.Equal(["10.2.0.0/24 dev mdl-test"], rig.RouteOs.Routes);
        var iface = Assert.IsType<AgentEngineTests.TrackedWgIface>(rig.Engine.Interface);

        // Its login expires: the connection (the only writer of its WireGuard peer) and the route go, the row stays.
        var map = Map(2, routerBExpired: true);
        Assert.Equal((0, 0, 1), await rig.Engine.ApplyMapAsync(map, CancellationToken.None));
        Assert.Null(rig.Engine.Connections.Find(RouteMaps.RouterB));
        Assert.False(iface.Peers.ContainsKey(RouteMaps.RouterB));
        Assert.Empty(rig.RouteOs.Routes);
        var row = Assert.Single(rig.Recorder.Snapshot().Peers, p => p.PublicKey == routerB);
        Assert.Equal(PeerConnectionState.Idle, row.State);
        Assert.Equal("login expired", row.Reason);
        Assert.Equal("p3", row.Name);
        Assert.Equal("100.64.0.3", row.Ip);
        Assert.Null(row.ConnectionType);
        Assert.Equal(3, rig.Recorder.Snapshot().Peers.Count);
        // The map the caller holds (deltas apply to it) keeps the expired peer.
        Assert.Equal(3, map.RemotePeers.Count);

        // The same map again, and a failover or switch re-applying the map in force, leave it as it is.
        Assert.Equal((0, 0, 0), await rig.Engine.ApplyMapAsync(Map(3, routerBExpired: true), CancellationToken.None));
        await rig.Engine.FailOverRoutesAsync(CancellationToken.None);
        Assert.Equal("login expired", Assert.Single(rig.Recorder.Snapshot().Peers, p => p.PublicKey == routerB).Reason);
        Assert.Null(rig.Engine.Connections.Find(RouteMaps.RouterB));

        // It registers again: an ordinary peer, its connection's row replaces the expired one.
        Assert.Equal((1, 0, 0), await rig.Engine.ApplyMapAsync(Map(4, routerBExpired: false), CancellationToken.None));
        Assert.NotNull(rig.Engine.Connections.Find(RouteMaps.RouterB));
        Assert.NotEqual("login expired", Assert.Single(rig.Recorder.Snapshot().Peers, p => p.PublicKey == routerB).Reason);
        Assert.Equal(["10.2.0.0/24 dev mdl-test"], rig.RouteOs.Routes);

        // Expired again, then removed by the operator: it leaves status.
        await rig.Engine.ApplyMapAsync(Map(5, routerBExpired: true), CancellationToken.None);
        Assert.Equal("login expired", Assert.Single(rig.Recorder.Snapshot().Peers, p => p.PublicKey == routerB).Reason);
        await rig.Engine.ApplyMapAsync(Map(6, routerBExpired: false, withRouterB: false), CancellationToken.None);
        Assert.DoesNotContain(rig.Recorder.Snapshot().Peers, p => p.PublicKey == routerB);
        Assert.Equal(2, rig.Recorder.Snapshot().Peers.Count);
    }

    [Fact]
    public async Task Management_removing_this_agent_clears_expired_rows_too()
    {
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask);
        await rig.Engine.EnsureInterfaceAsync(Login, CancellationToken.None);
        await rig.Engine.ApplyMapAsync(Map(1, routerBExpired: true), CancellationToken.None);
        Assert.Equal(3, rig.Recorder.Snapshot().Peers.Count);

        await rig.Engine.ClearPeersAsync();

        Assert.Empty(rig.Recorder.Snapshot().Peers);
    }
}
