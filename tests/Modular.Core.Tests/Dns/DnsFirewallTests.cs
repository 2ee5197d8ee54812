using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Dns;

/// <summary>The firewall's local services: the mesh resolver is reachable whatever the policies, and nothing else is.</summary>
public sealed class DnsFirewallTests : IDisposable
{
    private const string Own = "100.64.0.2";
    private const string Peer = "100.64.0.1";
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly StatefulFirewall _firewall;

    public DnsFirewallTests()
    {
        _firewall = new StatefulFirewall(new FirewallOptions(), _time);
        // An explicit drop for everything from the peer: the resolver must still answer it.
        _firewall.UpdateRules([Rule("deny-all", RuleAction.Drop, RuleProtocol.All, Peer + "/32")]);
    }

    public void Dispose() => _firewall.Dispose();

    [Fact]
    public void Without_local_services_dns_is_dropped_like_everything_else()
    {
        Assert.False(_firewall.AllowInbound(Udp(Peer, 40000, Own, 53)));
        Assert.False(_firewall.AllowInbound(Tcp(Peer, 40000, Own, 53, TcpFlags.Syn)));
    }

    [Fact]
    public void Udp_and_tcp_53_to_the_own_address_pass_and_their_replies_too()
    {
        _firewall.LocalServices = [LocalService.Udp(IPAddress.Parse(Own), 53), LocalService.Tcp(IPAddress.Parse(Own), 53)];
        Assert.True(_firewall.AllowInbound(Udp(Peer, 40000, Own, 53)));
        Assert.True(_firewall.AllowOutbound(Udp(Own, 53, Peer, 40000)));
        Assert.True(_firewall.AllowInbound(Tcp(Peer, 40001, Own, 53, TcpFlags.Syn)));
        Assert.True(_firewall.AllowOutbound(Tcp(Own, 53, Peer, 40001, TcpFlags.Syn | TcpFlags.Ack)));
        Assert.True(_firewall.AllowInbound(Tcp(Peer, 40001, Own, 53, TcpFlags.Ack)));

        // Other ports, another destination address and the other protocol on another port stay closed.
        Assert.False(_firewall.AllowInbound(Udp(Peer, 40000, Own, 54)));
        Assert.False(_firewall.AllowInbound(Udp(Peer, 40000, "100.64.0.9", 53)));
        Assert.False(_firewall.AllowInbound(Tcp(Peer, 40002, Own, 22, TcpFlags.Syn)));

        // A rule update does not end the resolver's flows.
        _firewall.UpdateRules([Rule("deny-all-2", RuleAction.Drop, RuleProtocol.All, "100.64.0.0/10")]);
        Assert.True(_firewall.AllowInbound(Tcp(Peer, 40001, Own, 53, TcpFlags.Ack | TcpFlags.Psh, payload: 30)));
        Assert.Equal(2, _firewall.ActiveFlows);
    }

    [Fact]
    public void Clearing_the_list_closes_the_port_for_new_flows()
    {
        _firewall.LocalServices = [LocalService.Udp(IPAddress.Parse(Own), 53)];
        Assert.True(_firewall.AllowInbound(Udp(Peer, 40000, Own, 53)));
        _firewall.LocalServices = [];
        Assert.False(_firewall.AllowInbound(Udp(Peer, 40005, Own, 53)));
    }
}
