using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Control.Management;
using Modular.Core.Engine;
using Modular.Core.Firewall;
using Modular.WireGuard.Interface;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

/// <summary>The engine's wiring of the firewall: installed on a userspace interface, fed by network maps.</summary>
public sealed class EngineFirewallTests
{
    private const string Self = "100.64.0.2";
    private const string Peer = "100.64.0.1";

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    private static UserspaceWgIface NewUserspace()
        => new(new WgIfaceOptions("mdlfwtest", WgKeys.GeneratePrivateKey(), IPAddress.Parse(Self), 10), NullLoggerFactory.Instance, TimeProvider.System);

    private static NetworkMap MapAllowingTcp80(ulong serial) => new()
    {
        Serial = serial,
        FirewallRules =
        {
            new Modular.Control.Management.FirewallRule
            {
                RuleId = "web", PeerIp = Peer + "/32", Direction = "in", Action = "accept", Protocol = "tcp",
                PortRanges = { new Modular.Control.Management.PortRange { Start = 80, End = 80 } },
            },
        },
    };

    private static NetworkMap MapAllowingAll(ulong serial) => new()
    {
        Serial = serial,
        FirewallRules = { new Modular.Control.Management.FirewallRule { RuleId = "open", PeerIp = "0.0.0.0/0", Direction = "in", Action = "accept", Protocol = "all" } },
    };

    [Fact]
    public async Task A_userspace_interface_gets_the_firewall_as_its_packet_filter_before_it_is_created()
    {
        var iface = NewUserspace();
        await using var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance);

        Assert.NotNull(engineFirewall.Firewall);
        Assert.Same(engineFirewall.Firewall, iface.PacketFilter);
    }

    [Fact]
    public async Task A_userspace_firewall_reports_its_flows_to_the_sink_and_leaves_closing_it_to_its_owner()
    {
        var iface = NewUserspace();
        var sink = new RecordingSink();
        var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance, flowSink: sink);
        await engineFirewall.ApplyAsync(MapAllowingTcp80(1));

        Assert.True(iface.PacketFilter!.AllowInbound(Tcp(Peer, 40000, Self, 80, TcpFlags.Syn)));
        Assert.False(iface.PacketFilter.AllowInbound(Tcp(Peer, 40001, Self, 22, TcpFlags.Syn)));

        var start = Assert.Single(sink.Events, e => e.Type == Modular.Abstractions.Flows.FlowEventType.Start);
        Assert.Equal("web", start.RuleId);
        Assert.Equal(IPAddress.Parse(Peer), start.SourceAddress);
        Assert.Equal(80, start.DestinationPort);
        var drop = Assert.Single(sink.Events, e => e.Type == Modular.Abstractions.Flows.FlowEventType.Drop);
        Assert.Equal(22, drop.DestinationPort);
        Assert.Equal(0, sink.Disposals);

        // The engine's FlowSwitch owns the sinks and closes them after the firewall: the firewall never does, so a
        // sink is closed exactly once whatever hands it on.
        await engineFirewall.DisposeAsync();
        Assert.Equal(0, sink.Disposals);
    }

    [Fact]
    public async Task Before_any_map_inbound_traffic_is_dropped()
    {
        var iface = NewUserspace();
        await using var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance);

        Assert.False(iface.PacketFilter!.AllowInbound(Tcp(Peer, 40000, Self, 80, TcpFlags.Syn)));
        Assert.Equal(1, engineFirewall.Firewall!.DefaultDrops);
    }

    [Fact]
    public async Task Each_map_replaces_the_rules_the_filter_enforces()
    {
        var iface = NewUserspace();
        await using var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance);
        var filter = iface.PacketFilter!;

        await engineFirewall.ApplyAsync(MapAllowingTcp80(1));
        Assert.True(filter.AllowInbound(Tcp(Peer, 40000, Self, 80, TcpFlags.Syn)));
        Assert.False(filter.AllowInbound(Tcp(Peer, 40001, Self, 22, TcpFlags.Syn)));
        Assert.False(filter.AllowInbound(Udp(Peer, 40002, Self, 53)));
        Assert.False(filter.AllowInbound(Echo(Peer, Self, 7, reply: false)));

        await engineFirewall.ApplyAsync(MapAllowingAll(2));
        Assert.True(filter.AllowInbound(Tcp(Peer, 40003, Self, 22, TcpFlags.Syn)));
        Assert.True(filter.AllowInbound(Echo(Peer, Self, 8, reply: false)));

        // A map with no rules (every policy deleted) closes the mesh again.
        await engineFirewall.ApplyAsync(new NetworkMap { Serial = 3 });
        Assert.False(filter.AllowInbound(Udp(Peer, 40004, Self, 5353)));
    }

    [Fact]
    public async Task Unreadable_rules_are_skipped_and_the_rest_enforced()
    {
        var iface = NewUserspace();
        await using var engineFirewall = await EngineFirewall.AttachAsync(iface, _time, NullLogger.Instance);
        var map = MapAllowingTcp80(1);
        map.FirewallRules.Add(new Modular.Control.Management.FirewallRule { RuleId = "bad", PeerIp = "not-an-ip", Direction = "in", Action = "accept", Protocol = "all" });

        await engineFirewall.ApplyAsync(map);

        Assert.True(iface.PacketFilter!.AllowInbound(Tcp(Peer, 40000, Self, 80, TcpFlags.Syn)));
        Assert.False(iface.PacketFilter!.AllowInbound(Tcp(Peer, 40001, Self, 22, TcpFlags.Syn)));
    }
}
