using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Flows;
using Modular.Plugins.Netflow.Ipfix;

namespace Modular.Composition.Tests.Plugins;

/// <summary>The IPFIX messages (RFC 7011) the netflow plugin exports, byte by byte.</summary>
public sealed class IpfixEncoderTests
{
    private static readonly DateTimeOffset Start = DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_000);

    private static FlowEvent Flow(
        FlowEventType type, FlowDirection direction, byte protocol, string source, ushort sourcePort, string destination, ushort destinationPort,
        ulong rxPackets, ulong rxBytes, ulong txPackets, ulong txBytes, byte icmpType = 0, byte icmpCode = 0, Guid? flowId = null, DateTimeOffset? at = null)
        => new(Guid.NewGuid(), flowId ?? Guid.NewGuid(), at ?? Start.AddSeconds(5), type, direction, protocol, IPAddress.Parse(source), sourcePort,
            IPAddress.Parse(destination), destinationPort, icmpType, icmpCode, rxPackets, rxBytes, txPackets, txBytes, "rule-1", null, null);

    private static byte[] Message(FlowEvent flowEvent, long? start, uint sequence = 9)
    {
        var records = new IpfixRecord[2];
        var count = IpfixRecord.FromEvent(flowEvent, start, records);
        var builder = new IpfixMessageBuilder();
        Assert.True(builder.TryAdd(records.AsSpan(0, count)));
        var buffer = new byte[IpfixEncoder.MaxMessageLength];
        var length = builder.Build(buffer, 0x6553F100, sequence, 1);
        return buffer[..length];
    }

    [Fact]
    public void The_template_message_declares_the_ipv4_and_ipv6_templates_with_iana_elements()
    {
        var buffer = new byte[IpfixEncoder.MaxMessageLength];
        var length = IpfixEncoder.WriteTemplates(buffer, exportTimeSeconds: 0x6553F100, sequence: 7, observationDomainId: 1);

        Assert.Equal(
            "000a008c" + "6553f100" + "00000007" + "00000001" // version 10, length 140, export time, sequence, domain
            + "0002007c" // template set, 124 bytes
            + "0100000e" // template 256 (IPv4), 14 fields:
            + "00080004" + "000c0004" + "00070002" + "000b0002" + "00040001" // sourceIPv4Address, destinationIPv4Address, ports, protocol
            + "00200002" + "00b00001" + "00b10001" // icmpTypeCodeIPv4, icmpTypeIPv4, icmpCodeIPv4
            + "00020008" + "00010008" + "00980008" + "00990008" // packetDeltaCount, octetDeltaCount, flowStart/EndMilliseconds
            + "003d0001" + "00590001" // flowDirection, forwardingStatus
            + "0101000e" // template 257 (IPv6)
            + "001b0010" + "001c0010" + "00070002" + "000b0002" + "00040001"
            + "008b0002" + "00b20001" + "00b30001" // icmpTypeCodeIPv6, icmpTypeIPv6, icmpCodeIPv6
            + "00020008" + "00010008" + "00980008" + "00990008" + "003d0001" + "00590001",
            Convert.ToHexStringLower(buffer, 0, length));
    }

    [Fact]
    public void A_tcp_flow_over_ipv4_ends_as_one_record_per_direction_with_its_totals()
    {
        // We opened it (egress): our packets are Tx, the answers Rx.
        var end = Flow(FlowEventType.End, FlowDirection.Egress, 6, "100.64.0.1", 40000, "100.64.0.2", 443, rxPackets: 8, rxBytes: 5000, txPackets: 10, txBytes: 1000);

        var message = Message(end, start: Start.ToUnixTimeMilliseconds());

        Assert.Equal(
            "000a007a" + "6553f100" + "00000009" + "00000001" // length 16 + 4 + 2 * 51 = 122
            + "0100006a" // data set of template 256, 106 bytes
            + "64400001" + "64400002" + "9c40" + "01bb" + "06" + "0000" + "00" + "00"
            + "000000000000000a" + "00000000000003e8" + "0000018bcfe56800" + "0000018bcfe57b88" + "01" + "40" // 10 packets, 1000 bytes out (egress), forwarded
            + "64400002" + "64400001" + "01bb" + "9c40" + "06" + "0000" + "00" + "00"
            + "0000000000000008" + "0000000000001388" + "0000018bcfe56800" + "0000018bcfe57b88" + "00" + "40", // the answers: 8 packets, 5000 bytes in
            Convert.ToHexStringLower(message));
    }

    [Fact]
    public void A_udp_flow_over_ipv6_uses_template_257_and_a_direction_without_packets_gives_no_record()
    {
        var end = Flow(FlowEventType.End, FlowDirection.Ingress, 17, "fd00::2", 5353, "fd00::1", 53, rxPackets: 3, rxBytes: 300, txPackets: 0, txBytes: 0);

        var message = Message(end, start: null);

        Assert.Equal(16 + 4 + 75, message.Length);
        Assert.Equal("0101004f", Convert.ToHexStringLower(message, 16, 4));
        var record = message.AsSpan(20);
        Assert.Equal(IPAddress.Parse("fd00::2"), new IPAddress(record[..16]));
        Assert.Equal(IPAddress.Parse("fd00::1"), new IPAddress(record[16..32]));
        Assert.Equal("14e9" + "0035" + "11" + "0000" + "00" + "00", Convert.ToHexStringLower(record[32..41]));
        Assert.Equal(3UL, BinaryPrimitives.ReadUInt64BigEndian(record[41..]));
        Assert.Equal(300UL, BinaryPrimitives.ReadUInt64BigEndian(record[49..]));
        var endMs = (ulong)Start.AddSeconds(5).ToUnixTimeMilliseconds();
        Assert.Equal(endMs, BinaryPrimitives.ReadUInt64BigEndian(record[57..])); // no Start seen: it started when it ended
        Assert.Equal(endMs, BinaryPrimitives.ReadUInt64BigEndian(record[65..]));
        Assert.Equal("0040", Convert.ToHexStringLower(record[73..75])); // ingress, forwarded
    }

    [Fact]
    public void Icmp_records_carry_type_and_code_and_the_reply_direction_the_reply_type()
    {
        var v4 = Message(Flow(FlowEventType.End, FlowDirection.Egress, 1, "100.64.0.1", 0, "100.64.0.2", 0, 4, 336, 4, 336, icmpType: 8), null);
        Assert.Equal("0000" + "0000" + "01" + "0800" + "08" + "00", Convert.ToHexStringLower(v4, 20 + 8, 9));
        Assert.Equal("0000" + "0000" + "01" + "0000" + "00" + "00", Convert.ToHexStringLower(v4, 20 + 51 + 8, 9)); // echo reply

        var unreachable = Message(Flow(FlowEventType.End, FlowDirection.Ingress, 1, "100.64.0.2", 0, "100.64.0.1", 0, 1, 56, 0, 0, icmpType: 3, icmpCode: 1), null);
        Assert.Equal("01" + "0301" + "03" + "01", Convert.ToHexStringLower(unreachable, 20 + 12, 5));

        var v6 = Message(Flow(FlowEventType.End, FlowDirection.Egress, 58, "fd00::1", 0, "fd00::2", 0, 2, 208, 2, 208, icmpType: 128), null);
        Assert.Equal("0101", Convert.ToHexStringLower(v6, 16, 2));
        Assert.Equal("0000" + "0000" + "3a" + "8000" + "80" + "00", Convert.ToHexStringLower(v6, 20 + 32, 9));
        Assert.Equal("0000" + "0000" + "3a" + "8100" + "81" + "00", Convert.ToHexStringLower(v6, 20 + 75 + 32, 9)); // echo reply (129)
    }

    [Fact]
    public void A_drop_is_one_record_marked_dropped_and_a_start_is_none()
    {
        var drop = Message(Flow(FlowEventType.Drop, FlowDirection.Ingress, 6, "100.64.0.9", 5555, "100.64.0.1", 22, 1, 60, 0, 0), null);
        Assert.Equal(16 + 4 + 51, drop.Length);
        Assert.Equal("64400009" + "64400001" + "15b3" + "0016" + "06", Convert.ToHexStringLower(drop, 20, 13));
        Assert.Equal("0000000000000001" + "000000000000003c", Convert.ToHexStringLower(drop, 20 + 17, 16));
        Assert.Equal("00" + "81", Convert.ToHexStringLower(drop, 20 + 49, 2)); // ingress, dropped by a rule (ACL deny)

        var records = new IpfixRecord[2];
        Assert.Equal(0, IpfixRecord.FromEvent(Flow(FlowEventType.Start, FlowDirection.Egress, 6, "100.64.0.1", 1, "100.64.0.2", 2, 0, 0, 1, 60), null, records));
    }

    [Fact]
    public void A_message_holds_what_fits_in_1400_bytes_and_an_events_records_stay_together()
    {
        var builder = new IpfixMessageBuilder();
        var record = new IpfixRecord(IPAddress.Parse("100.64.0.1"), IPAddress.Parse("100.64.0.2"), 1, 2, 17, 0, 0, 1, 60, 0, 0, 1, 64);
        for (var i = 0; i < 27; i++)
        {
            Assert.True(builder.TryAdd([record]), $"record {i + 1} should fit (16 + 4 + 27 * 51 = 1397)");
        }

        Assert.False(builder.TryAdd([record]));
        Assert.Equal(27, builder.EventCount);

        var pair = new IpfixMessageBuilder();
        for (var i = 0; i < 13; i++)
        {
            Assert.True(pair.TryAdd([record, record]));
        }

        Assert.False(pair.TryAdd([record, record])); // 28 records would not fit: neither goes in alone
        Assert.Equal(26, pair.RecordCount);
    }

    [Fact]
    public async Task The_exporter_sends_templates_first_counts_sequences_and_refreshes_templates_on_its_timer()
    {
        using var collector = new UdpClient(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)collector.Client.LocalEndPoint!).Port;
        var time = new CountingTime();
        await using var exporter = new IpfixExporter($"127.0.0.1:{port}", TimeSpan.FromMinutes(10), 100, time, NullLogger.Instance);
        exporter.Start();

        var templates = await ReceiveAsync(collector);
        Assert.Equal("0002", Convert.ToHexStringLower(templates, 16, 2));
        Assert.Equal(0u, Sequence(templates));

        var flowId = Guid.NewGuid();
        exporter.Enqueue(Flow(FlowEventType.End, FlowDirection.Egress, 6, "100.64.0.1", 40000, "100.64.0.2", 443, 8, 5000, 10, 1000));
        var first = await ReceiveAsync(collector);
        Assert.Equal("0100", Convert.ToHexStringLower(first, 16, 2));
        Assert.Equal(0u, Sequence(first));

        // A Start gives no record but its time becomes the flow's start in the End's records.
        exporter.Enqueue(Flow(FlowEventType.Start, FlowDirection.Egress, 17, "100.64.0.1", 5000, "100.64.0.3", 53, 0, 0, 1, 60, flowId: flowId, at: Start));
        exporter.Enqueue(Flow(FlowEventType.End, FlowDirection.Egress, 17, "100.64.0.1", 5000, "100.64.0.3", 53, 1, 90, 1, 60, flowId: flowId, at: Start.AddSeconds(30)));
        var second = await ReceiveAsync(collector);
        Assert.Equal(2u, Sequence(second)); // two data records went before it
        Assert.Equal((ulong)Start.ToUnixTimeMilliseconds(), BinaryPrimitives.ReadUInt64BigEndian(second.AsSpan(20 + 33)));
        Assert.Equal((ulong)Start.AddSeconds(30).ToUnixTimeMilliseconds(), BinaryPrimitives.ReadUInt64BigEndian(second.AsSpan(20 + 41)));
        await Bounded.UntilAsync(() => exporter.Exported == 2, "the two End events to count as exported");

        time.Advance(TimeSpan.FromMinutes(10));
        var refreshed = await ReceiveAsync(collector);
        Assert.Equal("0002", Convert.ToHexStringLower(refreshed, 16, 2));
        Assert.Equal(4u, Sequence(refreshed));
        await Bounded.UntilAsync(() => exporter.Messages == 4, "the refreshed templates to count as sent");
        Assert.Equal(2, exporter.Exported);
        Assert.Null(exporter.LastError);
    }

    private static uint Sequence(byte[] message) => BinaryPrimitives.ReadUInt32BigEndian(message.AsSpan(8));

    private static async Task<byte[]> ReceiveAsync(UdpClient collector) => (await collector.ReceiveAsync(Bounded.Wait)).Buffer;
}
