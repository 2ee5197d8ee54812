using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Routing;

/// <summary>Routed rules in the userspace firewall of a routing peer (own address 100.64.0.2, routes 10.77.0.0/24).</summary>
public sealed class RoutedFirewallTests : IDisposable
{
    private const string Self = "100.64.0.2";
    private const string Client = "100.64.0.1";
    private const string Other = "100.64.0.9";
    private const string LanHost = "10.77.0.10";

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly StatefulFirewall _firewall;

    public RoutedFirewallTests() => _firewall = new StatefulFirewall(new FirewallOptions { LocalAddresses = [IPAddress.Parse(Self)] }, _time);

    public void Dispose() => _firewall.Dispose();

    [Fact]
    public void A_rule_to_the_peer_itself_does_not_open_the_network_it_routes()
    {
        _firewall.UpdateRules([Rule("to-peer", RuleAction.Accept, RuleProtocol.All, Client + "/32")]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, Self, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40001, LanHost, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Udp(Client, 40001, LanHost, 53)));
    }

    [Fact]
    public void A_route_rule_does_not_open_the_peer_itself()
    {
        _firewall.UpdateRules([Routed("lan-all", Client + "/32", "10.77.0.0/24", RuleProtocol.All)]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40001, Self, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Echo(Client, Self, 7, reply: false)));
    }

    [Fact]
    public void A_route_rule_never_opens_the_routing_peers_own_addresses()
    {
        // The routing peer's LAN address lies inside the routed network; its docker0 and public addresses do not.
        const string OwnLan = "10.77.0.1";
        _firewall.UpdateHostAddresses([IPAddress.Parse(OwnLan), IPAddress.Parse("172.17.0.1"), IPAddress.Parse("203.0.113.5"), IPAddress.Parse("fd77::1")]);
        _firewall.UpdateRules([
            Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80"),
            Routed("exit", Client + "/32", "0.0.0.0/0", RuleProtocol.All),
            Routed("exit6", "fd00::9/128", "::/0", RuleProtocol.All),
        ]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Syn)), "the route itself must still work");
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, "198.51.100.7", 443, TcpFlags.Syn)), "the exit route itself must still work");
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40001, OwnLan, 80, TcpFlags.Syn)), "the routing peer's own LAN address was opened by a route rule");
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40002, "172.17.0.1", 22, TcpFlags.Syn)), "docker0 was opened by the exit route");
        Assert.False(_firewall.AllowInbound(Udp(Client, 40003, "203.0.113.5", 53)), "the public address was opened by the exit route");
        Assert.True(_firewall.AllowInbound(Tcp("fd00::9", 40004, "2001:db8::7", 22, TcpFlags.Syn)), "the IPv6 exit route itself must still work");
        Assert.False(_firewall.AllowInbound(Tcp("fd00::9", 40004, "fd77::1", 22, TcpFlags.Syn)), "an IPv6 host address was opened by the exit route");

        // The host's own addresses are reached by the rules for the peer itself, as its overlay address is.
        _firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80"), Rule("own-ssh", RuleAction.Accept, RuleProtocol.Tcp, Client + "/32", "22")]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40005, OwnLan, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40006, OwnLan, 80, TcpFlags.Syn)));
    }

    [Fact]
    public void A_new_host_address_ends_connections_a_route_rule_let_in_to_it()
    {
        _firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80")]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, "10.77.0.1", 80, TcpFlags.Syn)), "not yet the host's: a lan host like any other");
        _firewall.UpdateHostAddresses([IPAddress.Parse("10.77.0.1")]);
        Assert.Empty(_firewall.SnapshotFlows());
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40000, "10.77.0.1", 80, TcpFlags.Ack)));
    }

    [Fact]
    public void Route_rules_match_destination_source_protocol_and_port_and_replies_pass()
    {
        _firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80")]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Syn)));
        Assert.True(_firewall.AllowOutbound(Tcp(LanHost, 80, Client, 40000, TcpFlags.Syn | TcpFlags.Ack)));
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Ack)));
        Assert.Equal("lan-web", Assert.Single(_firewall.SnapshotFlows()).RuleId);

        Assert.False(_firewall.AllowInbound(Tcp(Client, 40002, LanHost, 22, TcpFlags.Syn)), "another port");
        Assert.False(_firewall.AllowInbound(Udp(Client, 40003, LanHost, 80)), "another protocol");
        Assert.False(_firewall.AllowInbound(Tcp(Other, 40004, LanHost, 80, TcpFlags.Syn)), "another source");
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40005, "10.78.0.10", 80, TcpFlags.Syn)), "a destination outside the route");
    }

    [Fact]
    public void The_longest_destination_decides_and_a_wider_route_rule_still_applies_inside_a_narrower_route()
    {
        _firewall.UpdateRules([
            Routed("wide", Client + "/32", "10.0.0.0/16", RuleProtocol.Tcp, "443"),
            Routed("narrow-drop", Client + "/32", "10.0.1.0/24", RuleProtocol.Tcp, "22", RuleAction.Drop),
            Routed("narrow-ssh-other", Other + "/32", "10.0.1.0/24", RuleProtocol.Tcp, "22"),
        ]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, "10.0.1.5", 443, TcpFlags.Syn)), "the /16 rule holds inside the /24");
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40001, "10.0.2.5", 443, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40002, "10.0.1.5", 22, TcpFlags.Syn)));
        Assert.True(_firewall.AllowInbound(Tcp(Other, 40003, "10.0.1.5", 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Other, 40004, "10.0.2.5", 22, TcpFlags.Syn)), "the /24 rule does not leak into the rest of the /16");
        Assert.Equal(1, _firewall.DropsByRule["narrow-drop"]);
    }

    [Fact]
    public void Removing_a_route_rule_ends_its_tracked_connections()
    {
        _firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80")]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Syn)));
        Assert.Equal(1, _firewall.ActiveFlows);
        _firewall.UpdateRules([Rule("to-peer", RuleAction.Accept, RuleProtocol.All, Client + "/32")]);
        Assert.Equal(0, _firewall.ActiveFlows);
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Ack)));
    }

    [Fact]
    public void Without_local_addresses_every_packet_counts_as_the_peers_own_and_route_rules_never_match()
    {
        using var firewall = new StatefulFirewall(new FirewallOptions(), _time);
        firewall.UpdateRules([Routed("lan-all", Client + "/32", "10.77.0.0/24", RuleProtocol.All)]);
        Assert.False(firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Syn)));
    }

    [Fact]
    public void An_exit_node_rule_opens_every_forwarded_destination_but_not_the_peer()
    {
        _firewall.UpdateRules([Routed("exit", "100.64.0.0/10", "0.0.0.0/0", RuleProtocol.All)]);
        Assert.True(_firewall.AllowInbound(Tcp(Client, 40000, "203.0.113.10", 443, TcpFlags.Syn)));
        Assert.True(_firewall.AllowInbound(Echo(Other, "198.51.100.1", 9, reply: false)));
        Assert.False(_firewall.AllowInbound(Tcp(Client, 40001, Self, 443, TcpFlags.Syn)));
    }

    [Fact]
    public void The_routed_lookup_allocates_nothing_per_packet()
    {
        _firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80")]);
        var dropped = Udp(Other, 40000, LanHost, 53);
        _firewall.AllowInbound(dropped); // warm up
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 1000; i++)
        {
            _firewall.AllowInbound(dropped);
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
    }

    [Fact]
    public void Flow_events_name_the_resource_a_connection_goes_to_but_never_for_overlay_destinations()
    {
        var sink = new RecordingSink();
        using var firewall = new StatefulFirewall(new FirewallOptions { LocalAddresses = [IPAddress.Parse(Self)] }, _time, sink);
        firewall.UpdateRules([Routed("lan-web", Client + "/32", "10.77.0.0/24", RuleProtocol.Tcp, "80"), Rule("own", RuleAction.Accept, RuleProtocol.All, Client + "/32")]);
        Assert.True(IpPrefix128.TryParse("10.77.0.0/24", out var lan));
        Assert.True(IpPrefix128.TryParse("0.0.0.0/0", out var everything));
        Assert.True(IpPrefix128.TryParse("100.64.0.0/10", out var overlay));
        firewall.UpdateResources(RoutedResources.Create([(everything, "exit-id"), (lan, "lan-id")], overlay));

        Assert.True(firewall.AllowInbound(Tcp(Client, 40000, LanHost, 80, TcpFlags.Syn)));
        Assert.False(firewall.AllowInbound(Tcp(Client, 40001, LanHost, 22, TcpFlags.Syn)));
        Assert.True(firewall.AllowOutbound(Tcp(Self, 40002, "203.0.113.10", 443, TcpFlags.Syn)));
        Assert.True(firewall.AllowInbound(Tcp(Client, 40003, Self, 22, TcpFlags.Syn)));

        var events = sink.Events;
        Assert.Equal("lan-id", Assert.Single(events, e => e.Type == FlowEventType.Start && e.DestinationPort == 80).DestinationResourceId);
        Assert.Equal("lan-id", Assert.Single(events, e => e.Type == FlowEventType.Drop).DestinationResourceId);
        Assert.Equal("exit-id", Assert.Single(events, e => e.DestinationPort == 443).DestinationResourceId);
        Assert.Null(Assert.Single(events, e => e.Type == FlowEventType.Start && e.DestinationPort == 22).DestinationResourceId);
    }

    private sealed class RecordingSink : IFlowSink
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<FlowEvent> _events = new();

        public IReadOnlyList<FlowEvent> Events => [.. _events];

        public void Emit(FlowEvent flowEvent) => _events.Enqueue(flowEvent);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private static FirewallRule Routed(string id, string source, string destination, RuleProtocol protocol, string ports = "", RuleAction action = RuleAction.Accept)
    {
        Assert.True(IpPrefix128.TryParse(destination, out var prefix));
        return Rule(id, action, protocol, source, ports) with { Destination = prefix };
    }
}
