using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Control.Management;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

/// <summary>
/// What the userspace firewall reports through a <see cref="SwitchableFlowSink"/>: nothing while off, the mesh
/// resolver's and exit-node flows only when collected, and the peer or resource at each end of a flow.
/// This peer is 100.64.0.1; peer-b is 100.64.0.2; 10.77.0.0/24 is a routed resource, 0.0.0.0/0 an exit node it uses.
/// </summary>
public sealed class FlowCollectionTests : IDisposable
{
    private const string Self = "100.64.0.1";
    private const string PeerB = "100.64.0.2";
    private const string LanHost = "10.77.0.10";
    private const string Internet = "203.0.113.10";

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly RecordingSink _target = new();
    private readonly SwitchableFlowSink _switch = new();
    private readonly StatefulFirewall _firewall;

    public FlowCollectionTests()
    {
        _firewall = new StatefulFirewall(new FirewallOptions { LocalAddresses = [IPAddress.Parse(Self)] }, _time, _switch);
        _firewall.UpdateRules([Rule("all-in", RuleAction.Accept, RuleProtocol.All, "100.64.0.0/10")]);
        Assert.True(IpPrefix128.TryParse("10.77.0.0/24", out var lan));
        Assert.True(IpPrefix128.TryParse("0.0.0.0/0", out var everything));
        Assert.True(IpPrefix128.TryParse("100.64.0.0/10", out var overlay));
        _firewall.UpdateResources(RoutedResources.Create([(lan, "lan-id", false), (everything, "exit-id", true)], overlay));
        _firewall.UpdatePeers(PeerDirectory.From(MapWith(("peer-b-id", PeerB + "/32"), ("", "100.64.0.3/32"))));
        _firewall.LocalServices = [LocalService.Udp(IPAddress.Parse(Self), 53), LocalService.Tcp(IPAddress.Parse(Self), 53)];
    }

    public void Dispose() => _firewall.Dispose();

    [Fact]
    public void While_off_no_event_is_built_and_switched_on_new_flows_are_reported()
    {
        _switch.Target = _target;
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40000, Self, 9000)));
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40001, PeerB, 22, TcpFlags.Syn)));
        _time.Advance(TimeSpan.FromMinutes(10));
        _firewall.SweepExpired();
        Assert.Empty(_target.Events); // off by default: neither Start nor End, though a target is set

        _switch.Collection = FlowCollection.All;
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40002, Self, 9000)));
        Assert.Equal(40002, Assert.Single(_target.Events).SourcePort);

        _switch.Collection = FlowCollection.Off;
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40003, Self, 9000)));
        _time.Advance(TimeSpan.FromMinutes(10));
        _firewall.SweepExpired();
        Assert.Single(_target.Events); // no End for 40002 and no Start for 40003 once off again
    }

    [Fact]
    public void On_without_a_target_reports_nothing_and_counts_no_failure()
    {
        _switch.Collection = FlowCollection.All;
        Assert.False(_switch.Active);
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40000, Self, 9000)));
        Assert.Equal(0, _firewall.SinkFailures);
        _switch.Target = _target;
        Assert.True(_switch.Active);
        Assert.Empty(_target.Events);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Collect_dns_decides_whether_flows_to_the_mesh_resolver_are_reported(bool collectDns)
    {
        _switch.Target = _target;
        _switch.Collection = new FlowCollection(true, collectDns, true);
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40000, Self, 53)));
        Assert.True(_firewall.AllowInbound(Tcp(PeerB, 40001, Self, 53, TcpFlags.Syn)));
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40002, Self, 5353))); // another port: not the resolver
        _time.Advance(TimeSpan.FromMinutes(10));
        _firewall.SweepExpired();

        var ports = _target.Events.Select(e => (e.Type, e.SourcePort)).Order().ToList();
        var expected = collectDns ? new ushort[] { 40000, 40001, 40002 } : [40002];
        Assert.Equal(expected.SelectMany(p => new[] { (FlowEventType.Start, p), (FlowEventType.End, p) }).Order(), ports);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Collect_exit_node_decides_whether_flows_out_through_the_exit_node_are_reported(bool collectExitNode)
    {
        _switch.Target = _target;
        _switch.Collection = new FlowCollection(true, true, collectExitNode);
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40000, Internet, 443, TcpFlags.Syn))); // only the exit node's 0.0.0.0/0 covers it
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40001, LanHost, 443, TcpFlags.Syn)));  // a routed resource
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40002, PeerB, 443, TcpFlags.Syn)));    // a peer
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40003, Self, 9000)));                  // inbound

        var reported = _target.Events.Select(e => e.SourcePort).Order().ToList();
        Assert.Equal(collectExitNode ? new ushort[] { 40000, 40001, 40002, 40003 } : [40001, 40002, 40003], reported);
    }

    [Fact]
    public void An_exit_node_drop_is_left_out_too_when_exit_node_flows_are_not_collected()
    {
        _switch.Target = _target;
        _switch.Collection = new FlowCollection(true, true, false);
        _firewall.UpdateRules([Rule("all-in", RuleAction.Accept, RuleProtocol.All, "100.64.0.0/10"), Rule("no-out", RuleAction.Drop, RuleProtocol.All, "0.0.0.0/0", direction: RuleDirection.Outbound)]);
        Assert.False(_firewall.AllowOutbound(Tcp(Self, 40000, Internet, 443, TcpFlags.Syn)));
        Assert.False(_firewall.AllowOutbound(Tcp(Self, 40001, LanHost, 443, TcpFlags.Syn)));

        var drop = Assert.Single(_target.Events);
        Assert.Equal((FlowEventType.Drop, (ushort)40001, "no-out"), (drop.Type, drop.SourcePort, drop.RuleId));
    }

    [Fact]
    public void Events_name_the_peer_for_an_overlay_address_and_the_resource_for_a_routed_one()
    {
        _switch.Target = _target;
        _switch.Collection = FlowCollection.All;
        Assert.True(_firewall.AllowInbound(Udp(PeerB, 40000, Self, 9000)));
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40001, PeerB, 22, TcpFlags.Syn)));
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40002, LanHost, 80, TcpFlags.Syn)));
        Assert.True(_firewall.AllowOutbound(Tcp(Self, 40003, "100.64.0.3", 80, TcpFlags.Syn))); // a peer the map gave no ID

        var events = _target.Events.ToDictionary(e => e.SourcePort);
        Assert.Equal(("peer-b-id", null), (events[40000].SourceResourceId, events[40000].DestinationResourceId));
        Assert.Equal((null, "peer-b-id"), (events[40001].SourceResourceId, events[40001].DestinationResourceId));
        Assert.Equal((null, "lan-id"), (events[40002].SourceResourceId, events[40002].DestinationResourceId));
        Assert.Equal((null, null), (events[40003].SourceResourceId, events[40003].DestinationResourceId));
    }

    [Fact]
    public void On_a_routing_peer_a_forwarded_flow_names_the_peer_it_comes_from_and_the_resource_it_goes_to_even_when_dropped()
    {
        _switch.Target = _target;
        _switch.Collection = FlowCollection.All;
        Assert.True(IpPrefix128.TryParse("10.77.0.0/24", out var lan));
        _firewall.UpdateRules([Rule("lan-web", RuleAction.Accept, RuleProtocol.Tcp, PeerB + "/32", "80") with { Destination = lan }]);
        Assert.True(_firewall.AllowInbound(Tcp(PeerB, 40000, LanHost, 80, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(PeerB, 40001, LanHost, 22, TcpFlags.Syn)));

        var events = _target.Events.ToDictionary(e => e.SourcePort);
        Assert.Equal((FlowEventType.Start, "peer-b-id", "lan-id"), (events[40000].Type, events[40000].SourceResourceId, events[40000].DestinationResourceId));
        Assert.Equal((FlowEventType.Drop, "peer-b-id", "lan-id"), (events[40001].Type, events[40001].SourceResourceId, events[40001].DestinationResourceId));
    }

    [Fact]
    public void The_peer_directory_maps_overlay_addresses_to_ids_and_skips_peers_without_one()
    {
        var directory = PeerDirectory.From(MapWith(("a", "100.64.0.2/32"), ("", "100.64.0.3/32"), ("c", "fd00::3/128"), ("d", "not an address")));
        Assert.Equal(2, directory.Count);
        Assert.Equal("a", directory.Find(IpPrefix128.ToUInt128(IPAddress.Parse("100.64.0.2"))));
        Assert.Equal("c", directory.Find(IpPrefix128.ToUInt128(IPAddress.Parse("fd00::3"))));
        Assert.Null(directory.Find(IpPrefix128.ToUInt128(IPAddress.Parse("100.64.0.3"))));
    }

    private static NetworkMap MapWith(params (string Id, string AllowedIp)[] peers)
    {
        var map = new NetworkMap();
        var n = 0;
        foreach (var (id, allowed) in peers)
        {
            map.RemotePeers.Add(new RemotePeer { Id = id, Hostname = $"p{n}", WgPubKey = ByteString.CopyFrom(new byte[32]), AllowedIps = { allowed } });
            n++;
        }

        return map;
    }
}
