using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

/// <summary>
/// Issue 13 item 3: the userspace connection table and fragment tracker under a flood from one peer (through the mesh
/// resolver's port, which every peer may reach whatever the policies), and the End events of flows the table removes.
/// </summary>
public sealed class FirewallFloodTests
{
    private const string Local = "100.64.0.2";
    private const string Flooder = "100.64.0.1";
    private const string Other = "100.64.0.3";

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly RecordingSink _sink = new();

    [Fact]
    public void One_peer_flooding_the_dns_port_cannot_starve_other_peers_flows()
    {
        using var firewall = Firewall(new FirewallOptions { MaxFlows = 64 });

        // The isolated peer: UDP queries and SYNs to port 53 from 2,000 source ports each, answered by the resolver.
        Flood(firewall, ports: 2_000);
        Assert.InRange(firewall.ActiveFlows, 1, 64);

        // Another peer still opens new connections to this host (allowed by its policy)...
        for (ushort port = 41000; port < 41004; port++)
        {
            Assert.True(firewall.AllowInbound(Tcp(Other, port, Local, 80, TcpFlags.Syn)), $"the other peer's SYN from port {port} was dropped");
            Assert.True(firewall.AllowOutbound(Tcp(Local, 80, Other, port, TcpFlags.Syn | TcpFlags.Ack)));
            Assert.True(firewall.AllowInbound(Tcp(Other, port, Local, 80, TcpFlags.Ack)));
        }

        // ...and this host still opens new connections to it.
        for (ushort port = 52000; port < 52003; port++)
        {
            Assert.True(firewall.AllowOutbound(Udp(Local, port, Other, 443)), $"the host's own flow from port {port} was dropped");
            Assert.True(firewall.AllowInbound(Udp(Other, 443, Local, port)));
        }

        // The flood went on meanwhile: its new flows take only the flooder's own places, never the others'.
        Flood(firewall, ports: 2_000, firstPort: 3_000);
        Assert.True(firewall.AllowInbound(Tcp(Other, 41000, Local, 80, TcpFlags.Ack | TcpFlags.Psh, payload: 10)), "an established flow of the other peer was evicted by the flood");
        Assert.True(firewall.AllowInbound(Udp(Other, 443, Local, 52000)), "an established flow of the host was evicted by the flood");

        AssertEveryFlowEndsOnce(firewall);
    }

    [Fact]
    public void One_peer_cannot_hold_more_inbound_flows_than_the_per_source_bound()
    {
        using var firewall = Firewall(new FirewallOptions());
        Flood(firewall, ports: 10_000, syns: false);

        const int bound = 4_096; // the documented default of FirewallOptions.MaxFlowsPerSource
        Assert.InRange(firewall.ActiveFlows, 1, bound);
        Assert.Equal(10_000 - firewall.ActiveFlows, firewall.TableFullDrops);
        Assert.True(firewall.AllowInbound(Tcp(Other, 41000, Local, 80, TcpFlags.Syn)));
        Assert.True(firewall.AllowOutbound(Udp(Local, 52000, Other, 443)));
    }

    [Fact]
    public void One_peer_flooding_first_fragments_cannot_starve_other_peers_fragments()
    {
        var tracker = new FragmentTracker(_time, capacity: 64);
        var flooder = Address(Flooder);
        for (uint id = 0; id < 1_000; id++)
        {
            tracker.AllowFirst(new FragmentKey(IpProtocol.Udp, flooder, Address(Local), id));
        }

        Assert.InRange(tracker.Count, 1, 64 / 16); // one source: a sixteenth of the tracker
        var other = new FragmentKey(IpProtocol.Udp, Address(Other), Address(Local), 7);
        tracker.AllowFirst(other);
        Assert.True(tracker.IsAllowed(other), "the other peer's first fragment was not remembered");

        // Many sources filling the tracker: a source holding fewer entries still gets in, at the heaviest one's expense.
        for (var source = 10; source < 40; source++)
        {
            for (uint id = 0; id < 10; id++)
            {
                tracker.AllowFirst(new FragmentKey(IpProtocol.Udp, Address($"100.64.1.{source}"), Address(Local), id));
            }
        }

        Assert.Equal(64, tracker.Count);
        var late = new FragmentKey(IpProtocol.Udp, Address("100.64.2.1"), Address(Local), 1);
        tracker.AllowFirst(late);
        Assert.True(tracker.IsAllowed(late), "a newcomer's first fragment was refused while others held more than it");
        Assert.InRange(tracker.Count, 1, 64);
    }

    [Fact]
    public void A_full_table_emits_the_end_of_each_expired_flow_it_removes()
    {
        using var firewall = Firewall(new FirewallOptions { MaxFlows = 16, SweepInterval = TimeSpan.FromHours(1) });
        for (ushort port = 1; port <= 200; port++)
        {
            firewall.AllowOutbound(Udp(Local, port, Other, 53));
        }

        Assert.Equal(16, firewall.ActiveFlows);

        // Past the UDP timeout, with no sweep yet: the full table makes room by removing the expired flows itself.
        _time.Advance(TimeSpan.FromSeconds(31));
        for (ushort port = 1001; port <= 1200; port++)
        {
            firewall.AllowOutbound(Udp(Local, port, Other, 53));
        }

        Assert.Contains(firewall.SnapshotFlows(), f => f.Key.SourcePort > 1000);
        AssertEveryFlowEndsOnce(firewall);
    }

    [Fact]
    public void A_reopened_flow_ends_the_old_one_exactly_once_before_the_new_one_starts()
    {
        using var firewall = Firewall(new FirewallOptions { SweepInterval = TimeSpan.FromHours(1) });

        // UDP: the same 5-tuple after the old flow expired (found expired by the new flow's first packet).
        Assert.True(firewall.AllowOutbound(Udp(Local, 5000, Other, 53)));
        _time.Advance(TimeSpan.FromSeconds(31));
        Assert.True(firewall.AllowOutbound(Udp(Local, 5000, Other, 53)));

        // TCP: a fresh SYN on a connection that was reset.
        Assert.True(firewall.AllowInbound(Tcp(Other, 41000, Local, 80, TcpFlags.Syn)));
        Assert.True(firewall.AllowOutbound(Tcp(Local, 80, Other, 41000, TcpFlags.Rst | TcpFlags.Ack)));
        Assert.True(firewall.AllowInbound(Tcp(Other, 41000, Local, 80, TcpFlags.Syn)));

        var udp = _sink.Events.Where(e => e.Protocol == IpProtocol.Udp).ToList();
        Assert.Equal([FlowEventType.Start, FlowEventType.End, FlowEventType.Start], udp.Select(e => e.Type));
        Assert.Equal(udp[0].FlowId, udp[1].FlowId);
        var tcp = _sink.Events.Where(e => e.Protocol == IpProtocol.Tcp).ToList();
        Assert.Equal([FlowEventType.Start, FlowEventType.End, FlowEventType.Start], tcp.Select(e => e.Type));
        Assert.Equal(tcp[0].FlowId, tcp[1].FlowId);
        AssertEveryFlowEndsOnce(firewall);
    }

    private StatefulFirewall Firewall(FirewallOptions options)
    {
        var firewall = new StatefulFirewall(options, _time, _sink);
        firewall.UpdateRules([Rule("other-web", RuleAction.Accept, RuleProtocol.Tcp, Other + "/32", "80")]);
        firewall.LocalServices = [LocalService.Udp(System.Net.IPAddress.Parse(Local), 53), LocalService.Tcp(System.Net.IPAddress.Parse(Local), 53)];
        return firewall;
    }

    /// <summary>The isolated peer's queries (answered) and SYNs (answered with SYN-ACK) to the resolver, one per source port.</summary>
    private static void Flood(StatefulFirewall firewall, int ports, int firstPort = 1, bool syns = true)
    {
        for (var port = (ushort)firstPort; port < firstPort + ports; port++)
        {
            if (firewall.AllowInbound(Udp(Flooder, port, Local, 53)))
            {
                firewall.AllowOutbound(Udp(Local, 53, Flooder, port));
            }

            if (syns && firewall.AllowInbound(Tcp(Flooder, port, Local, 53, TcpFlags.Syn)))
            {
                firewall.AllowOutbound(Tcp(Local, 53, Flooder, port, TcpFlags.Syn | TcpFlags.Ack));
            }
        }
    }

    /// <summary>Ends whatever is left, then checks that every flow that started ended exactly once.</summary>
    private void AssertEveryFlowEndsOnce(StatefulFirewall firewall)
    {
        _time.Advance(TimeSpan.FromHours(3));
        firewall.SweepExpired();
        Assert.Equal(0, firewall.ActiveFlows);
        var events = _sink.Events;
        var starts = events.Where(e => e.Type == FlowEventType.Start).Select(e => e.FlowId).ToList();
        Assert.Equal(starts.Count, starts.Distinct().Count());
        var ends = events.Where(e => e.Type == FlowEventType.End).GroupBy(e => e.FlowId).ToDictionary(g => g.Key, g => g.Count());
        Assert.All(starts, id => Assert.Equal(1, ends.GetValueOrDefault(id)));
        Assert.Equal(starts.Count, ends.Count);
    }

    private static UInt128 Address(string address) => IpPrefix128.ToUInt128(System.Net.IPAddress.Parse(address));

    private sealed class RecordingSink : IFlowSink
    {
        private readonly ConcurrentQueue<FlowEvent> _events = new();

        public IReadOnlyList<FlowEvent> Events => [.. _events];

        public void Emit(FlowEvent flowEvent) => _events.Enqueue(flowEvent);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
