using System.Net;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using Modular.Core.Firewall.Nftables;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// Kernel mode's flow events from what the kernel really sends: ctnetlink and NFLOG messages captured in a namespace
/// (<see cref="CapturedNetlink"/>), decoded and turned into <see cref="FlowEvent"/>s with the rule IDs of the table
/// that marked them; and the table's flow-logging lines.
/// </summary>
public sealed class KernelFlowMessagesTests
{
    private static readonly IPAddress Client = IPAddress.Parse("100.64.0.5");
    private static readonly IPAddress Host = IPAddress.Parse("100.64.0.1");

    [Fact]
    public void A_new_tcp_connection_is_read_with_its_tuple_and_mark()
    {
        var entry = Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.TcpNew)));

        Assert.False(entry.Destroyed);
        Assert.Equal(IpProtocol.Tcp, entry.Protocol);
        Assert.Equal(Client, entry.Source);
        Assert.Equal(Host, entry.Destination);
        Assert.Equal(53828, entry.SourcePort);
        Assert.Equal(8000, entry.DestinationPort);
        Assert.Equal(0x0180_0001u, entry.Mark); // generation 1, flow bit, ingress, accept rule 1
        Assert.NotEqual(0u, entry.Id);
    }

    [Fact]
    public void Destroyed_connections_carry_their_counters_each_way()
    {
        var udp = Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.UdpDestroy)));
        var tcp = Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.TcpDestroy)));

        // Three 10-byte datagrams (38 bytes each on the wire) and three 20-byte answers (48 bytes each), as conntrack -L showed.
        Assert.True(udp.Destroyed);
        Assert.Equal((IpProtocol.Udp, (ushort)40000, (ushort)7000), (udp.Protocol, udp.SourcePort, udp.DestinationPort));
        Assert.Equal((3UL, 114UL, 3UL, 144UL), (udp.OriginalPackets, udp.OriginalBytes, udp.ReplyPackets, udp.ReplyBytes));
        Assert.Equal((5UL, 1268UL, 5UL, 768UL), (tcp.OriginalPackets, tcp.OriginalBytes, tcp.ReplyPackets, tcp.ReplyBytes));
    }

    [Fact]
    public void Icmp_entries_carry_type_and_code_and_an_egress_mark()
    {
        var entry = Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.IcmpEgressDestroy)));

        Assert.Equal(IpProtocol.Icmp, entry.Protocol);
        Assert.Equal(Host, entry.Source);
        Assert.Equal(Client, entry.Destination);
        Assert.Equal((8, 0), (entry.IcmpType, entry.IcmpCode));
        Assert.Equal(0x01C0_0002u, entry.Mark);
        Assert.Equal((1UL, 84UL, 1UL, 84UL), (entry.OriginalPackets, entry.OriginalBytes, entry.ReplyPackets, entry.ReplyBytes));
    }

    [Fact]
    public void A_logged_drop_is_read_with_its_prefix_direction_and_packet()
    {
        var packet = Assert.Single(KernelFlowMessages.ParseNflog(Convert.FromHexString(CapturedNetlink.DropLog)));

        Assert.Equal("modular 1 drop_0", packet.Prefix);
        Assert.True(packet.Inbound);
        Assert.Equal(IpProtocol.Tcp, packet.Header.Protocol);
        Assert.Equal(9999, packet.Header.DestinationPort);
        Assert.Equal(60, packet.Header.Length);
        Assert.Equal(Client, IpPrefix128.ToAddress(packet.Header.Source).MapToIPv4());
    }

    [Fact]
    public void Other_messages_and_truncated_buffers_give_nothing()
    {
        var tcp = Convert.FromHexString(CapturedNetlink.TcpNew);

        Assert.Empty(KernelFlowMessages.ParseNflog(tcp));
        Assert.Empty(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.DropLog)));
        Assert.Empty(KernelFlowMessages.ParseConntrack(tcp.AsSpan(0, tcp.Length - 8)));
    }

    [Fact]
    public void The_nflog_bind_request_names_the_group_and_asks_for_the_packet()
    {
        var request = KernelFlowMessages.NflogBind(7423, 9);

        Assert.Equal(request.Length, BitConverter.ToInt32(request, 0));
        Assert.Equal(0x0401, BitConverter.ToUInt16(request, 4)); // NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG
        Assert.Equal([0x1C, 0xFF], request[18..20]); // res_id: group 7423, big-endian
        Assert.Equal("0500010001000000", Convert.ToHexStringLower(request[20..28])); // NFULA_CFG_CMD bind
        Assert.Equal("0a00020000000100020000000800050000000001", Convert.ToHexStringLower(request[28..48])); // copy 256 bytes of the packet; queue threshold 1
    }

    [Fact]
    public void Start_and_end_become_flow_events_with_rule_direction_counters_and_one_flow_id()
    {
        var rules = new KernelFlowRules();
        rules.Record(1, Policy(generation: 1));
        var events = new KernelFlowEvents(rules, new FakeTimeProvider(DateTimeOffset.UnixEpoch));

        var start = events.ToFlowEvent(Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.UdpNew))));
        var end = events.ToFlowEvent(Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.UdpDestroy))));

        Assert.NotNull(start);
        Assert.NotNull(end);
        Assert.Equal(FlowEventType.Start, start.Type);
        Assert.Equal(FlowEventType.End, end.Type);
        Assert.Equal(start.FlowId, end.FlowId);
        Assert.NotEqual(start.Id, end.Id);
        Assert.Equal(FlowDirection.Ingress, end.Direction);
        Assert.Equal("echo", end.RuleId); // accept rule 1 of generation 1
        Assert.Equal((Client, (ushort)40000, Host, (ushort)7000), (end.SourceAddress, end.SourcePort, end.DestinationAddress, end.DestinationPort));
        // Ingress: rx is what the client sent.
        Assert.Equal((3UL, 114UL, 3UL, 144UL), (end.RxPackets, end.RxBytes, end.TxPackets, end.TxBytes));
        Assert.Equal(0, events.OpenFlows);
    }

    [Fact]
    public void An_egress_ping_counts_the_request_as_sent_and_names_no_rule_under_the_default_accept()
    {
        var rules = new KernelFlowRules();
        rules.Record(1, Policy(generation: 1));
        var events = new KernelFlowEvents(rules, TimeProvider.System);

        var end = events.ToFlowEvent(Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.IcmpEgressDestroy))));

        Assert.NotNull(end);
        Assert.Equal(FlowDirection.Egress, end.Direction);
        Assert.Equal((IpProtocol.Icmp, (byte)8, (byte)0, (ushort)0, (ushort)0), (end.Protocol, end.IcmpType, end.IcmpCode, end.SourcePort, end.DestinationPort));
        Assert.Equal((1UL, 84UL), (end.TxPackets, end.TxBytes));
        Assert.Equal("echo-out", end.RuleId); // the capture's mesh_out accept stamped index 2
    }

    [Fact]
    public void Connections_without_the_flow_bit_are_not_reported()
    {
        var events = new KernelFlowEvents(new KernelFlowRules(), TimeProvider.System);
        var entry = Assert.Single(KernelFlowMessages.ParseConntrack(Convert.FromHexString(CapturedNetlink.TcpNew)));

        Assert.Null(events.ToFlowEvent(entry with { Mark = entry.Mark & ~ConntrackMarks.FlowBit }));
        Assert.NotNull(events.ToFlowEvent(entry));
    }

    [Fact]
    public void A_logged_drop_becomes_a_drop_event_with_the_rule_of_its_table()
    {
        var rules = new KernelFlowRules();
        rules.Record(1, Policy(generation: 1));
        var events = new KernelFlowEvents(rules, TimeProvider.System);
        var packet = Assert.Single(KernelFlowMessages.ParseNflog(Convert.FromHexString(CapturedNetlink.DropLog)));

        var drop = events.ToFlowEvent(packet);

        Assert.NotNull(drop);
        Assert.Equal(FlowEventType.Drop, drop.Type);
        Assert.Equal(FlowDirection.Ingress, drop.Direction);
        Assert.Equal("no-9999", drop.RuleId);
        Assert.Equal((Client, (ushort)9999), (drop.SourceAddress, drop.DestinationPort));
        Assert.Equal((1UL, 60UL), (drop.RxPackets, drop.RxBytes));
        Assert.Null(events.ToFlowEvent(packet with { Prefix = "someone else" }));
        Assert.Null(Assert.IsType<FlowEvent>(events.ToFlowEvent(packet with { Prefix = "modular 1 default_drop" })).RuleId);
    }

    [Fact]
    public void Rule_ids_are_kept_per_generation_and_replaced_when_it_comes_round()
    {
        var rules = new KernelFlowRules();
        rules.Record(1, Policy(generation: 1));
        rules.Record(2, NftablesRenderer.Render("nfkb", [Rule("other", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.5")], Host, generation: 2, flowLog: FlowLog));

        Assert.Equal("echo", rules.AcceptRuleId(0x0180_0001));
        Assert.Equal("other", rules.AcceptRuleId(0x0280_0001));
        Assert.Null(rules.AcceptRuleId(0x0380_0001)); // no such table
        Assert.Null(rules.AcceptRuleId(0x0180_0000)); // no rule (default accept)
        Assert.Null(rules.AcceptRuleId(0x8180_0001)); // the forward table's stamp
        rules.Record(1, NftablesRenderer.Render("nfkb", [Rule("again", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.5")], Host, generation: 1, flowLog: FlowLog));
        Assert.Equal("again", rules.AcceptRuleId(0x0180_0001));
    }

    [Fact]
    public void A_routed_connection_names_the_forward_tables_rule_and_the_policy_tables_stamp_stays_apart()
    {
        var rules = new KernelFlowRules();
        rules.Record(1, Policy(generation: 1));
        rules.RecordForwarded(1, ["lan-web", "lan-all"]);

        Assert.Equal("lan-web", rules.AcceptRuleId(0x8180_0001));
        Assert.Equal("lan-all", rules.AcceptRuleId(0x8180_0002));
        Assert.Equal("echo", rules.AcceptRuleId(0x0180_0001)); // the policy table's generation 1 is another table
        Assert.Null(rules.AcceptRuleId(0x8180_0003)); // beyond the forward table's rules
        Assert.Null(rules.AcceptRuleId(0x8280_0001)); // no such forward table
        rules.RecordForwarded(1, ["again"]);
        Assert.Equal("again", rules.AcceptRuleId(0x8180_0001));
    }

    [Fact]
    public void With_flow_logging_the_table_marks_mesh_flows_stamps_rule_indexes_and_logs_drops()
    {
        var script = Policy(generation: 3).Script;

        Assert.Contains("iifname \"nfkb\" ct state new ct mark set ct mark & 0xffbfffff | 0x00800000\n", script, StringComparison.Ordinal);
        Assert.Contains("oifname \"nfkb\" ct state new ct mark set ct mark | 0x00c00000\n", script, StringComparison.Ordinal);
        Assert.Contains("ip saddr 100.64.0.5/32 udp dport 7000 counter ct mark set ct mark & 0x80c00000 | 0x03000001 accept comment \"echo\"", script, StringComparison.Ordinal);
        Assert.Contains("ip saddr 100.64.0.5/32 tcp dport 9999 limit rate 10/second log prefix \"modular 3 drop_0\" group 7423\n\t\tip saddr 100.64.0.5/32 tcp dport 9999 counter name \"drop_0\" drop", script, StringComparison.Ordinal);
        Assert.Contains("limit rate 10/second log prefix \"modular 3 default_drop\" group 7423\n\t\tcounter name \"default_drop\" drop", script, StringComparison.Ordinal);
        Assert.DoesNotContain("log ", NftablesRenderer.Render("nfkb", [Rule("no-9999", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.5", "9999")], Host).Script, StringComparison.Ordinal);
    }

    private static readonly NftablesFlowLog FlowLog = new(NftablesFlowLog.DefaultGroup);

    /// <summary>The rules of the capture's table: accept 1 "echo" (inbound), accept 2 "echo-out" (outbound), drop "no-9999" as drop_0.</summary>
    private static NftablesPolicy Policy(int generation) => NftablesRenderer.Render(
        "nfkb",
        [
            Rule("echo", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.5", "7000"),
            Rule("no-9999", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.5", "9999"),
            Rule("echo-out", RuleAction.Accept, RuleProtocol.Icmp, "100.64.0.5", direction: RuleDirection.Outbound),
        ],
        Host,
        generation: generation,
        flowLog: FlowLog);
}

/// <summary>
/// Netlink buffers as the kernel (6.x) sent them, captured in a namespace whose table stamped inbound accepts with
/// mark 0x01800001 and outbound ones with 0x01c00002, and logged TCP to port 9999 with prefix "modular 1 drop_0":
/// a TCP session (1000 bytes up, 500 down), three UDP echoes (10 bytes up, 20 down), two pings in and one out, and
/// one refused TCP connection; the destroy events came from `conntrack -F`.
/// </summary>
internal static class CapturedNetlink
{
    public const string TcpNew =
        "cc000000000100060000000000000000020000003400018014000180080001006440000508000200644000011c000280"
        + "050001000600000006000200d2440000060003001f400000340002801400018008000100644000010800020064400005"
        + "1c0002800500010006000000060002001f40000006000300d244000008000c00dea133ef080003000000000808000700"
        + "00000078300004802c0001800500010001000000050002000a0000000500030000000000060004000300000006000500"
        + "000000000800080001800001";

    public const string UdpNew =
        "9c000000000100060000000000000000020000003400018014000180080001006440000508000200644000011c000280"
        + "0500010011000000060002009c400000060003001b580000340002801400018008000100644000010800020064400005"
        + "1c0002800500010011000000060002001b580000060003009c40000008000c00037427ce080003000000000808000700"
        + "0000001e0800080001800001";

    public const string DropLog =
        "c40000000004000000000000000000000200004d080001000800010015000a006d6f64756c617220312064726f705f30"
        + "00000000080004000000000210000800000600008a97a10a6946000006000f000001000006001100000e000012001000"
        + "560bccd2fb878a97a10a69460800000014000300000000006b15d5970000000000057700400009004500003c8e124000"
        + "4006e4236440000564400001b960270f9b04c15e00000000a002faf0c8b40000020405b40402080a8198307300000000"
        + "0103030a";

    public const string DropLogAgain =
        "c40000000004000000000000000000000200004d080001000800010015000a006d6f64756c617220312064726f705f30"
        + "00000000080004000000000210000800000600008a97a10a6946000006000f000001000006001100000e000012001000"
        + "560bccd2fb878a97a10a69460800000014000300000000006b15d598000000000005876e400009004500003c8e134000"
        + "4006e4226440000564400001b960270f9b04c15e00000000a002faf0c8b40000020405b40402080a8198345f00000000"
        + "0103030a";

    public const string IcmpNew =
        "ac000000000100060000000000000000020000003c000180140001800800010064400005080002006440000124000280"
        + "05000100010000000600040078e50000050005000800000005000600000000003c000280140001800800010064400001"
        + "08000200644000052400028005000100010000000600040078e500000500050000000000050006000000000008000c00"
        + "84ff02a10800030000000008080007000000001e0800080001800001";

    public const string IcmpEgressNew =
        "ac000000000100060000000000000000020000003c000180140001800800010064400001080002006440000524000280"
        + "05000100010000000600040078e90000050005000800000005000600000000003c000280140001800800010064400005"
        + "08000200644000012400028005000100010000000600040078e900000500050000000000050006000000000008000c00"
        + "5865ca980800030000000008080007000000001e0800080001c00002";

    public const string IcmpEgressDestroy =
        "e40000000201000000000000eb780000020000003c000180140001800800010064400001080002006440000524000280"
        + "05000100010000000600040078e90000050005000800000005000600000000003c000280140001800800010064400005"
        + "08000200644000012400028005000100010000000600040078e900000500050000000000050006000000000008000c00"
        + "5865ca98080003000000020a080007000000001d1c0009800c00010000000000000000010c0002000000000000000054"
        + "1c000a800c00010000000000000000010c00020000000000000000540800080001c00002";

    public const string UdpDestroy =
        "d40000000201000000000000eb780000020000003400018014000180080001006440000508000200644000011c000280"
        + "0500010011000000060002009c400000060003001b580000340002801400018008000100644000010800020064400005"
        + "1c0002800500010011000000060002001b580000060003009c40000008000c00037427ce080003000000020a08000700"
        + "0000001c1c0009800c00010000000000000000030c00020000000000000000721c000a800c0001000000000000000003"
        + "0c00020000000000000000900800080001800001";

    public const string TcpDestroy =
        "e40000000201000000000000eb780000020000003400018014000180080001006440000508000200644000011c000280"
        + "050001000600000006000200d2440000060003001f400000340002801400018008000100644000010800020064400005"
        + "1c0002800500010006000000060002001f40000006000300d244000008000c00dea133ef080003000000020e08000700"
        + "000000761c0009800c00010000000000000000050c00020000000000000004f41c000a800c0001000000000000000005"
        + "0c0002000000000000000300100004800c00018005000100070000000800080001800001";

    public const string IcmpDestroy =
        "e40000000201000000000000eb780000020000003c000180140001800800010064400005080002006440000124000280"
        + "05000100010000000600040078e50000050005000800000005000600000000003c000280140001800800010064400001"
        + "08000200644000052400028005000100010000000600040078e500000500050000000000050006000000000008000c00"
        + "84ff02a1080003000000020a080007000000001d1c0009800c00010000000000000000020c00020000000000000000a8"
        + "1c000a800c00010000000000000000020c00020000000000000000a80800080001800001";
}
