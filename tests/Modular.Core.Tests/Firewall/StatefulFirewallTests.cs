using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

public sealed class StatefulFirewallTests : IDisposable
{
    private const string Local = "100.64.0.2";
    private const string Remote = "100.64.0.1";

    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly RecordingSink _sink = new();
    private readonly StatefulFirewall _firewall;

    public StatefulFirewallTests()
    {
        _firewall = new StatefulFirewall(new FirewallOptions(), _time, _sink);
        _firewall.UpdateRules([Rule("allow-web", RuleAction.Accept, RuleProtocol.Tcp, Remote + "/32", "80")]);
    }

    public void Dispose() => _firewall.Dispose();

    [Fact]
    public void Tcp_handshake_data_and_close_walk_the_state_machine()
    {
        Assert.True(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Syn)));
        Assert.Equal(ConnectionState.SynSent, Single().State);
        Assert.True(_firewall.AllowOutbound(Tcp(Local, 80, Remote, 40000, TcpFlags.Syn | TcpFlags.Ack)));
        Assert.Equal(ConnectionState.SynReceived, Single().State);
        Assert.True(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Ack)));
        Assert.Equal(ConnectionState.Established, Single().State);
        Assert.True(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Ack | TcpFlags.Psh, payload: 100)));
        Assert.True(_firewall.AllowOutbound(Tcp(Local, 80, Remote, 40000, TcpFlags.Ack | TcpFlags.Psh, payload: 1000)));

        var flow = Single();
        Assert.Equal(RuleDirection.Inbound, flow.Direction);
        Assert.Equal("allow-web", flow.RuleId);
        Assert.Equal(3UL, flow.OriginalPackets);
        Assert.Equal(2UL, flow.ReplyPackets);
        Assert.Equal((ulong)(40 + 40 + 140), flow.OriginalBytes);
        Assert.Equal((ulong)(40 + 1040), flow.ReplyBytes);

        Assert.True(_firewall.AllowOutbound(Tcp(Local, 80, Remote, 40000, TcpFlags.Fin | TcpFlags.Ack)));
        Assert.Equal(ConnectionState.FinWait, Single().State);
        Assert.True(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Fin | TcpFlags.Ack)));
        Assert.Equal(ConnectionState.TimeWait, Single().State);

        // After the closing timeout the flow ends and its End event carries the counters.
        _time.Advance(TimeSpan.FromMinutes(3));
        _firewall.SweepExpired();
        Assert.Equal(0, _firewall.ActiveFlows);
        var end = Assert.Single(_sink.Events, e => e.Type == FlowEventType.End);
        Assert.Equal(FlowDirection.Ingress, end.Direction);
        Assert.Equal(4UL, end.RxPackets);
        Assert.Equal(3UL, end.TxPackets);
        Assert.Equal("allow-web", end.RuleId);
        Assert.Equal(80, end.DestinationPort);
        Assert.Single(_sink.Events, e => e.Type == FlowEventType.Start);
    }

    [Fact]
    public void Unmatched_inbound_flows_are_dropped_and_counted_per_rule_or_default()
    {
        _firewall.UpdateRules([
            Rule("allow-web", RuleAction.Accept, RuleProtocol.Tcp, Remote + "/32", "80"),
            Rule("no-ssh", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "22"),
        ]);
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 40001, Local, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 40001, Local, 22, TcpFlags.Syn)));
        Assert.False(_firewall.AllowInbound(Udp(Remote, 5000, Local, 53)));
        Assert.Equal(2, _firewall.DropsByRule["no-ssh"]);
        Assert.Equal(1, _firewall.DefaultDrops);
        Assert.Equal(0, _firewall.ActiveFlows);
        var drop = _sink.Events.First(e => e.Type == FlowEventType.Drop);
        Assert.Equal("no-ssh", drop.RuleId);
        Assert.Equal(22, drop.DestinationPort);
        Assert.Equal(Remote, drop.SourceAddress.ToString());
    }

    [Fact]
    public void Replies_to_outbound_connections_pass_but_unsolicited_inbound_does_not()
    {
        Assert.True(_firewall.AllowOutbound(Udp(Local, 50000, Remote, 53)));
        Assert.True(_firewall.AllowInbound(Udp(Remote, 53, Local, 50000)));
        Assert.Equal(ConnectionState.Established, Single().State);
        Assert.False(_firewall.AllowInbound(Udp(Remote, 53, Local, 50001)));

        Assert.True(_firewall.AllowOutbound(Echo(Local, Remote, 9, reply: false)));
        Assert.True(_firewall.AllowInbound(Echo(Remote, Local, 9, reply: true)));
        Assert.False(_firewall.AllowInbound(Echo(Remote, Local, 10, reply: false)));
    }

    [Fact]
    public void Inbound_tcp_that_opens_nothing_is_invalid()
    {
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Ack)));
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Syn | TcpFlags.Ack)));
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 40000, Local, 80, TcpFlags.Rst)));
        Assert.Equal(3, _firewall.InvalidDrops);
        Assert.Equal(0, _firewall.ActiveFlows);
    }

    [Fact]
    public void Timeouts_depend_on_state_and_an_expired_flow_needs_the_rules_again()
    {
        Assert.True(_firewall.AllowOutbound(Udp(Local, 50000, Remote, 53)));
        _time.Advance(TimeSpan.FromSeconds(31));
        Assert.False(_firewall.AllowInbound(Udp(Remote, 53, Local, 50000)), "an unreplied UDP flow outlived its 30 s timeout");

        Assert.True(_firewall.AllowOutbound(Udp(Local, 50002, Remote, 53)));
        Assert.True(_firewall.AllowInbound(Udp(Remote, 53, Local, 50002)));
        _time.Advance(TimeSpan.FromSeconds(120));
        Assert.True(_firewall.AllowInbound(Udp(Remote, 53, Local, 50002)), "a replied UDP stream lives 180 s");

        Assert.True(_firewall.AllowInbound(Tcp(Remote, 41000, Local, 80, TcpFlags.Syn)));
        Assert.Contains(_firewall.SnapshotFlows(), f => f.Key.SourcePort == 41000);
        _time.Advance(TimeSpan.FromSeconds(61));
        _firewall.SweepExpired();
        Assert.DoesNotContain(_firewall.SnapshotFlows(), f => f.Key.SourcePort == 41000);
    }

    [Fact]
    public void Established_tcp_survives_idle_minutes_and_a_reset_closes_it()
    {
        OpenWebConnection(42000);
        _time.Advance(TimeSpan.FromMinutes(30));
        Assert.True(_firewall.AllowInbound(Tcp(Remote, 42000, Local, 80, TcpFlags.Ack)));
        Assert.True(_firewall.AllowOutbound(Tcp(Local, 80, Remote, 42000, TcpFlags.Rst)));
        Assert.Equal(ConnectionState.Closed, Single().State);
        _time.Advance(TimeSpan.FromSeconds(11));
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 42000, Local, 80, TcpFlags.Ack)));
    }

    [Fact]
    public void Removing_the_rule_ends_tracked_connections_at_once()
    {
        OpenWebConnection(43000);
        _firewall.UpdateRules([]);
        Assert.Equal(0, _firewall.ActiveFlows);
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 43000, Local, 80, TcpFlags.Ack)));
        Assert.Contains(_sink.Events, e => e.Type == FlowEventType.End);
    }

    [Fact]
    public void A_full_table_drops_new_flows_instead_of_evicting_live_ones()
    {
        using var small = new StatefulFirewall(new FirewallOptions { MaxFlows = 16 }, _time);
        var passed = 0;
        for (ushort port = 1; port <= 200; port++)
        {
            if (small.AllowOutbound(Udp(Local, port, Remote, 53)))
            {
                passed++;
            }
        }

        Assert.InRange(small.ActiveFlows, 1, 16);
        Assert.Equal(passed, small.ActiveFlows);
        Assert.Equal(200 - passed, small.TableFullDrops);

        // Once they expire, room comes back.
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.True(small.AllowOutbound(Udp(Local, 1, Remote, 53)));
    }

    [Fact]
    public void Malformed_and_fragmented_packets_are_dropped_and_counted()
    {
        Assert.False(_firewall.AllowInbound([0x45, 0, 0]));
        Assert.False(_firewall.AllowInbound([]));
        var fragment = Udp(Remote, 1, Local, 80);
        fragment[7] = 10;
        Assert.False(_firewall.AllowInbound(fragment));
        Assert.Equal(2, _firewall.MalformedDrops);
        Assert.Equal(1, _firewall.FragmentDrops);
    }

    [Fact]
    public void Later_fragments_follow_the_verdict_of_their_first_fragment()
    {
        // An allowed first fragment (UDP 80 is not allowed; TCP 80 is) lets the rest of its packet through.
        var first = Fragment(Tcp(Remote, 40000, Local, 80, TcpFlags.Syn, payload: 64), id: 7, offsetUnits: 0, more: true);
        var later = Fragment(Udp(Remote, 1, Local, 1, payload: 64), id: 7, offsetUnits: 11, more: false, protocol: IpProtocol.Tcp);
        Assert.True(_firewall.AllowInbound(first));
        Assert.True(_firewall.AllowInbound(later));

        // Same source but another identification: its first fragment was never seen.
        var stranger = Fragment(Udp(Remote, 1, Local, 1, payload: 64), id: 8, offsetUnits: 11, more: false, protocol: IpProtocol.Tcp);
        Assert.False(_firewall.AllowInbound(stranger));

        // A denied first fragment (TCP 22) does not open its later fragments.
        var deniedFirst = Fragment(Tcp(Remote, 40001, Local, 22, TcpFlags.Syn, payload: 64), id: 9, offsetUnits: 0, more: true);
        var deniedLater = Fragment(Udp(Remote, 1, Local, 1, payload: 64), id: 9, offsetUnits: 11, more: false, protocol: IpProtocol.Tcp);
        Assert.False(_firewall.AllowInbound(deniedFirst));
        Assert.False(_firewall.AllowInbound(deniedLater));
        Assert.Equal(2, _firewall.FragmentDrops);

        // The verdict does not outlive the reassembly window.
        _time.Advance(FragmentTracker.Lifetime + TimeSpan.FromSeconds(1));
        Assert.False(_firewall.AllowInbound(later));
    }

    [Fact]
    public void Ipv6_later_fragments_follow_their_first_fragment()
    {
        using var firewall = new StatefulFirewall(new FirewallOptions(), _time);
        firewall.UpdateRules([Rule("v6-dns", RuleAction.Accept, RuleProtocol.Udp, "fd00::1/128", "53")]);
        var first = Ipv6Fragment(Udp("fd00::1", 5000, "fd00::2", 53, payload: 64), id: 0xABCDEF01, offsetUnits: 0, more: true);
        var later = Ipv6Fragment(Udp("fd00::1", 5000, "fd00::2", 9, payload: 64), id: 0xABCDEF01, offsetUnits: 9, more: false);
        var other = Ipv6Fragment(Udp("fd00::1", 5000, "fd00::2", 9, payload: 64), id: 0xABCDEF02, offsetUnits: 9, more: false);
        Assert.True(firewall.AllowInbound(first));
        Assert.True(firewall.AllowInbound(later));
        Assert.False(firewall.AllowInbound(other));
    }

    /// <summary>Turns an IPv4 packet into a fragment: identification, offset (8-byte units) and the more-fragments bit.</summary>
    private static byte[] Fragment(byte[] packet, ushort id, ushort offsetUnits, bool more, byte? protocol = null)
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), id);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(6), (ushort)(offsetUnits | (more ? 0x2000 : 0)));
        if (protocol is { } p)
        {
            packet[9] = p;
        }

        return packet;
    }

    /// <summary>Inserts an IPv6 fragment header after the fixed header of <paramref name="packet"/>.</summary>
    private static byte[] Ipv6Fragment(byte[] packet, uint id, ushort offsetUnits, bool more)
    {
        var result = new byte[packet.Length + 8];
        packet.AsSpan(0, 40).CopyTo(result);
        packet.AsSpan(40).CopyTo(result.AsSpan(48));
        result[40] = packet[6];
        result[6] = 44;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(result.AsSpan(42), (ushort)((offsetUnits << 3) | (more ? 1 : 0)));
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(result.AsSpan(44), id);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(result.AsSpan(4), (ushort)(result.Length - 40));
        return result;
    }

    [Fact]
    public void A_flood_of_drops_is_counted_in_full_but_emits_bounded_events()
    {
        using var firewall = new StatefulFirewall(new FirewallOptions { MaxDropEventsPerSecond = 10 }, _time, _sink);
        for (ushort port = 1; port <= 100; port++)
        {
            Assert.False(firewall.AllowInbound(Udp(Remote, port, Local, 9)));
        }

        Assert.Equal(100, firewall.DefaultDrops);
        Assert.Equal(10, _sink.Events.Count(e => e.Type == FlowEventType.Drop));
        Assert.Equal(90, firewall.SuppressedDropEvents);
        _time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(firewall.AllowInbound(Udp(Remote, 1, Local, 9)));
        Assert.Equal(11, _sink.Events.Count(e => e.Type == FlowEventType.Drop));
    }

    [Fact]
    public void Applying_a_network_map_replaces_the_rules_and_reports_unreadable_ones()
    {
        var rules = new[]
        {
            new Modular.Control.Management.FirewallRule { RuleId = "dns", PeerIp = Remote + "/32", Direction = "in", Action = "accept", Protocol = "udp", PortRanges = { new Modular.Control.Management.PortRange { Start = 53, End = 53 } } },
            new Modular.Control.Management.FirewallRule { RuleId = "broken", PeerIp = "nonsense", Direction = "in", Action = "accept", Protocol = "all" },
        };
        var mapped = FirewallRuleMapper.Map(rules);
        _firewall.UpdateRules(mapped.Rules);
        Assert.Single(mapped.Rejected);
        Assert.True(_firewall.AllowInbound(Udp(Remote, 5000, Local, 53)));
        Assert.False(_firewall.AllowInbound(Tcp(Remote, 5000, Local, 80, TcpFlags.Syn)), "the old web rule was not replaced");
    }

    [Fact]
    public void Icmp_errors_about_tracked_connections_pass_and_others_follow_the_rules()
    {
        var syn = Tcp(Local, 45000, Remote, 443, TcpFlags.Syn);
        Assert.True(_firewall.AllowOutbound(syn));
        Assert.True(_firewall.AllowInbound(IcmpError(Remote, Local, syn)), "a 'fragmentation needed' for our connection was dropped");

        var unrelated = Tcp(Local, 45001, Remote, 443, TcpFlags.Syn);
        Assert.False(_firewall.AllowInbound(IcmpError(Remote, Local, unrelated)));

        // A quote too short to read is just an ICMP packet for the rules (here: dropped by default).
        Assert.False(_firewall.AllowInbound(Ip(Remote, Local, IpProtocol.Icmp, [3, 4, 0, 0, 0, 0, 5, 0x78, 0x45])));
    }

    [Fact]
    public void Established_and_dropped_packets_allocate_nothing()
    {
        using var firewall = new StatefulFirewall(null, _time);
        firewall.UpdateRules([Rule("allow-web", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/10", "80")]);
        var data = Tcp(Remote, 46000, Local, 80, TcpFlags.Ack | TcpFlags.Psh, payload: 500);
        var reply = Tcp(Local, 80, Remote, 46000, TcpFlags.Ack, payload: 1000);
        var blocked = Udp(Remote, 1, Local, 9);
        Assert.True(firewall.AllowInbound(Tcp(Remote, 46000, Local, 80, TcpFlags.Syn)));
        Assert.True(firewall.AllowOutbound(Tcp(Local, 80, Remote, 46000, TcpFlags.Syn | TcpFlags.Ack)));
        for (var warm = 0; warm < 100; warm++)
        {
            firewall.AllowInbound(data);
            firewall.AllowOutbound(reply);
            firewall.AllowInbound(blocked);
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        var passed = 0;
        for (var i = 0; i < 10_000; i++)
        {
            passed += firewall.AllowInbound(data) ? 1 : 0;
            passed += firewall.AllowOutbound(reply) ? 1 : 0;
            passed += firewall.AllowInbound(blocked) ? 1 : 0;
        }

        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - before);
        Assert.Equal(20_000, passed);
    }

    [Fact]
    public void Random_and_mutated_packets_never_throw_and_never_leak_flows_past_the_bound()
    {
        using var firewall = new StatefulFirewall(new FirewallOptions { MaxFlows = 256 }, _time, _sink);
        firewall.UpdateRules([Rule("any", RuleAction.Accept, RuleProtocol.All, "::/0"), Rule("v4", RuleAction.Accept, RuleProtocol.All, "0.0.0.0/0")]);
        var random = new Random(99);
        var seeds = new[] { Tcp(Remote, 1, Local, 80, TcpFlags.Syn), Udp("fd00::1", 1, "fd00::2", 53), Echo(Remote, Local, 5, reply: false) };
        var buffer = new byte[96];
        for (var i = 0; i < 50_000; i++)
        {
            var seed = seeds[i % seeds.Length];
            var length = Math.Min(buffer.Length, seed.Length);
            seed.AsSpan(0, length).CopyTo(buffer);
            for (var flips = random.Next(1, 6); flips > 0; flips--)
            {
                buffer[random.Next(length)] = (byte)random.Next(256);
            }

            var cut = random.Next(length + 1);
            _ = random.Next(2) == 0 ? firewall.AllowInbound(buffer.AsSpan(0, cut)) : firewall.AllowOutbound(buffer.AsSpan(0, cut));
        }

        Assert.InRange(firewall.ActiveFlows, 0, 256);
        Assert.True(firewall.MalformedDrops > 0);
        Assert.Equal(0, firewall.SinkFailures);
    }

    [Theory]
    [InlineData(Local, Remote, IpProtocol.Icmp, 8, 20)]
    [InlineData("fd00::2", "fd00::1", IpProtocol.IcmpV6, 128, 40)]
    public void Icmp_flow_events_carry_the_type_and_code_of_the_packet(string source, string destination, byte protocol, byte type, int icmpOffset)
    {
        // An echo request with an unusual code: the events must report what the packet said, not a fixed echo.
        var request = Echo(source, destination, 21, reply: false);
        request[icmpOffset + 1] = 3;
        Assert.True(_firewall.AllowOutbound(request));
        Assert.True(_firewall.AllowInbound(Echo(destination, source, 21, reply: true)));
        _time.Advance(TimeSpan.FromMinutes(5));
        _firewall.SweepExpired();

        var start = Assert.Single(_sink.Events, e => e.Type == FlowEventType.Start);
        var end = Assert.Single(_sink.Events, e => e.Type == FlowEventType.End);
        foreach (var e in new[] { start, end })
        {
            Assert.Equal(protocol, e.Protocol);
            Assert.Equal(type, e.IcmpType);
            Assert.Equal(3, e.IcmpCode);
            Assert.Equal(0, e.SourcePort);
            Assert.Equal(0, e.DestinationPort);
        }

        Assert.Equal(1UL, end.TxPackets);
        Assert.Equal(1UL, end.RxPackets);
    }

    [Fact]
    public void A_refused_icmp_message_gives_a_drop_event_with_its_own_type_and_code()
    {
        // Destination unreachable (3), host unreachable (1), about nothing tracked: no rule allows it inbound.
        Assert.False(_firewall.AllowInbound(Ip(Remote, Local, IpProtocol.Icmp, [3, 1, 0, 0, 0, 0, 0, 0])));

        var drop = Assert.Single(_sink.Events);
        Assert.Equal(FlowEventType.Drop, drop.Type);
        Assert.Equal(3, drop.IcmpType);
        Assert.Equal(1, drop.IcmpCode);
        Assert.Null(drop.RuleId);
    }

    [Fact]
    public void A_throwing_sink_never_breaks_the_packet_path()
    {
        using var firewall = new StatefulFirewall(null, _time, new ThrowingSink());
        Assert.True(firewall.AllowOutbound(Udp(Local, 1, Remote, 53)));
        Assert.False(firewall.AllowInbound(Udp(Remote, 1, Local, 99)));
        Assert.Equal(2, firewall.SinkFailures);
    }

    [Fact]
    public void Concurrent_packets_of_many_flows_keep_exact_counters()
    {
        using var firewall = new StatefulFirewall(null, _time);
        Parallel.For(0, 4, worker =>
        {
            for (var i = 0; i < 2_000; i++)
            {
                var port = (ushort)(1000 + (worker * 100) + (i % 100));
                Assert.True(firewall.AllowOutbound(Udp(Local, port, Remote, 53)));
            }
        });
        var flows = firewall.SnapshotFlows();
        Assert.Equal(400, flows.Count);
        Assert.All(flows, f => Assert.Equal(20UL, f.OriginalPackets));
    }

    private void OpenWebConnection(ushort port)
    {
        Assert.True(_firewall.AllowInbound(Tcp(Remote, port, Local, 80, TcpFlags.Syn)));
        Assert.True(_firewall.AllowOutbound(Tcp(Local, 80, Remote, port, TcpFlags.Syn | TcpFlags.Ack)));
        Assert.True(_firewall.AllowInbound(Tcp(Remote, port, Local, 80, TcpFlags.Ack)));
        Assert.Equal(ConnectionState.Established, _firewall.SnapshotFlows().Single(f => f.Key.SourcePort == port).State);
    }

    /// <summary>ICMPv4 "fragmentation needed" quoting the first 28 bytes of <paramref name="offending"/>.</summary>
    private static byte[] IcmpError(string source, string destination, byte[] offending)
    {
        var icmp = new byte[8 + 28];
        icmp[0] = 3;
        icmp[1] = 4;
        icmp[7] = 0x78; // next-hop MTU 1400 (low byte)
        icmp[6] = 0x05;
        offending.AsSpan(0, 28).CopyTo(icmp.AsSpan(8));
        return Ip(source, destination, IpProtocol.Icmp, icmp);
    }

    private FlowSnapshot Single() => Assert.Single(_firewall.SnapshotFlows());

    private sealed class ThrowingSink : IFlowSink
    {
        public void Emit(FlowEvent flowEvent) => throw new InvalidOperationException("sink broken");

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
