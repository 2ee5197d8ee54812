using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Control.Management;
using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

/// <summary>
/// <see cref="FlowEventEmitter.Report"/>: the one step kernel mode's events go through, the userspace firewall's own:
/// nothing while off, the mesh resolver's flows left out with <c>collect_dns = false</c>, flows out through an exit
/// node left out with <c>collect_exit_node = false</c>, and each end named (peer or routed resource).
/// </summary>
public sealed class FlowEventReportTests
{
    private static readonly IPAddress Self = IPAddress.Parse("100.64.0.1");
    private static readonly IPAddress Remote = IPAddress.Parse("100.64.0.2");
    private static readonly IPAddress Lan = IPAddress.Parse("10.77.0.5");
    private static readonly IPAddress Internet = IPAddress.Parse("203.0.113.10");

    [Fact]
    public void Off_nothing_is_reported()
    {
        var (emitter, sink, switchable) = Emitter();
        switchable.Collection = FlowCollection.Off;

        Assert.Null(emitter.Report(Event(Remote, Self, 80, FlowDirection.Ingress)));
        emitter.Emit(emitter.Report(Event(Remote, Self, 80, FlowDirection.Ingress)));
        Assert.Empty(sink.Events);
    }

    [Fact]
    public void Each_end_is_named_the_peer_of_an_overlay_address_and_the_resource_of_a_routed_one()
    {
        var (emitter, _, _) = Emitter();

        var mesh = emitter.Report(Event(Remote, Self, 80, FlowDirection.Ingress));
        Assert.Equal("peer-remote", mesh!.SourceResourceId);
        var outbound = emitter.Report(Event(Self, Remote, 80, FlowDirection.Egress));
        Assert.Equal("peer-remote", outbound!.DestinationResourceId);

        var routed = emitter.Report(Event(Remote, Lan, 80, FlowDirection.Ingress));
        Assert.Equal(("peer-remote", "lan-resource"), (routed!.SourceResourceId, routed.DestinationResourceId));

        // Names the source already gave are kept.
        var named = emitter.Report(Event(Remote, Self, 80, FlowDirection.Ingress) with { SourceResourceId = "given" });
        Assert.Equal("given", named!.SourceResourceId);
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, false)]
    public void The_mesh_resolver_s_flows_follow_collect_dns(bool collectDns, bool reported)
    {
        var (emitter, _, switchable) = Emitter();
        switchable.Collection = new FlowCollection(true, collectDns, true);

        Assert.Equal(reported, emitter.Report(Event(Remote, Self, 53, FlowDirection.Ingress, IpProtocol.Udp)) is not null);
        // Other flows to this peer are reported either way.
        Assert.NotNull(emitter.Report(Event(Remote, Self, 54, FlowDirection.Ingress, IpProtocol.Udp)));
    }

    [Theory]
    [InlineData(true, true)]
    [InlineData(false, false)]
    public void Flows_out_through_an_exit_node_follow_collect_exit_node(bool collectExitNode, bool reported)
    {
        var (emitter, _, switchable) = Emitter();
        switchable.Collection = new FlowCollection(true, true, collectExitNode);

        var exit = emitter.Report(Event(Self, Internet, 80, FlowDirection.Egress));
        Assert.Equal(reported, exit is not null);
        if (exit is not null)
        {
            Assert.Equal("exit-resource", exit.DestinationResourceId);
        }

        // A routed network of its own is no exit-node flow.
        Assert.NotNull(emitter.Report(Event(Self, Lan, 80, FlowDirection.Egress)));
    }

    [Fact]
    public void The_userspace_drop_and_the_kernel_drop_are_built_alike()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UnixEpoch);
        var packet = TestPackets.Tcp(Remote.ToString(), 40000, Self.ToString(), 23, TcpFlags.Syn);
        Assert.True(PacketParser.TryParse(packet, out var header));

        var drop = FlowEvents.Drop(header, inbound: true, "no-telnet", time.GetUtcNow(), null, null);

        Assert.Equal((FlowEventType.Drop, FlowDirection.Ingress, IpProtocol.Tcp), (drop.Type, drop.Direction, drop.Protocol));
        Assert.Equal((Remote, (ushort)40000, Self, (ushort)23), (drop.SourceAddress, drop.SourcePort, drop.DestinationAddress, drop.DestinationPort));
        Assert.Equal((1UL, (ulong)packet.Length, 0UL, 0UL), (drop.RxPackets, drop.RxBytes, drop.TxPackets, drop.TxBytes));
        Assert.Equal("no-telnet", drop.RuleId);
        Assert.NotEqual(drop.Id, drop.FlowId);
    }

    private static (FlowEventEmitter Emitter, CollectingFlowSink Sink, SwitchableFlowSink Switchable) Emitter()
    {
        var sink = new CollectingFlowSink();
        var switchable = new SwitchableFlowSink { Target = sink, Collection = FlowCollection.All };
        var emitter = new FlowEventEmitter(switchable, new FakeTimeProvider(DateTimeOffset.UnixEpoch), 100);
        var overlay = IpPrefix128.TryParse("100.64.0.0/10", out var prefix) ? prefix : default;
        IpPrefix128 Prefix(string text) => IpPrefix128.TryParse(text, out var p) ? p : throw new ArgumentException(text);
        emitter.UpdateScope(scope => scope with
        {
            Peers = PeerDirectory.From(RemotePeerMap()),
            Resources = RoutedResources.Create([(Prefix("10.77.0.0/24"), "lan-resource", false), (Prefix("0.0.0.0/0"), "exit-resource", true)], overlay),
            Resolver = [LocalService.Udp(Self, 53), LocalService.Tcp(Self, 53)],
        });
        return (emitter, sink, switchable);
    }

    private static NetworkMap RemotePeerMap()
    {
        var map = new NetworkMap();
        map.RemotePeers.Add(new RemotePeer { Id = "peer-remote", Hostname = "remote", WgPubKey = ByteString.CopyFrom(new byte[32]), AllowedIps = { $"{Remote}/32" } });
        return map;
    }

    private static FlowEvent Event(IPAddress source, IPAddress destination, ushort port, FlowDirection direction, byte protocol = IpProtocol.Tcp)
        => new(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UnixEpoch, FlowEventType.Start, direction, protocol, source, 40000, destination, port, 0, 0, 1, 60, 0, 0, "rule", null, null);

    private sealed class CollectingFlowSink : IFlowSink
    {
        public List<FlowEvent> Events { get; } = [];

        public void Emit(FlowEvent flowEvent) => Events.Add(flowEvent);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
