using System.Buffers.Binary;
using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

public class PacketParserTests
{
    [Fact]
    public void Parses_ipv4_tcp_ports_flags_and_addresses()
    {
        var packet = TestPackets.Tcp("100.64.0.1", 40000, "100.64.0.2", 80, TcpFlags.Syn, payload: 10);
        Assert.True(PacketParser.TryParse(packet, out var header));
        Assert.Equal(4, header.IpVersion);
        Assert.Equal(IpProtocol.Tcp, header.Protocol);
        Assert.Equal(40000, header.SourcePort);
        Assert.Equal(80, header.DestinationPort);
        Assert.Equal(TcpFlags.Syn, header.TcpFlags);
        Assert.Equal(packet.Length, header.Length);
        Assert.Equal("100.64.0.1", IpPrefix128.ToAddress(header.Source).ToString());
        Assert.Equal("100.64.0.2", IpPrefix128.ToAddress(header.Destination).ToString());
    }

    [Fact]
    public void Parses_ipv6_udp_and_icmpv6_echo()
    {
        Assert.True(PacketParser.TryParse(TestPackets.Udp("fd00::1", 5353, "fd00::2", 53), out var udp));
        Assert.Equal(6, udp.IpVersion);
        Assert.Equal(53, udp.DestinationPort);
        Assert.Equal("fd00::2", IpPrefix128.ToAddress(udp.Destination).ToString());

        Assert.True(PacketParser.TryParse(TestPackets.Echo("fd00::1", "fd00::2", 77, reply: false), out var echo));
        Assert.True(echo.IsIcmpEchoRequest);
        Assert.Equal(77, echo.SourcePort);
        Assert.Equal(77, echo.DestinationPort);
    }

    [Fact]
    public void Skips_ipv6_extension_headers()
    {
        var udp = TestPackets.Udp("fd00::1", 1000, "fd00::2", 2000);
        // Insert an 8-byte hop-by-hop header between the fixed header and UDP.
        var packet = new byte[udp.Length + 8];
        udp.AsSpan(0, 40).CopyTo(packet);
        packet[6] = 0; // next header: hop-by-hop
        packet[40] = IpProtocol.Udp;
        packet[41] = 0; // (0 + 1) * 8 bytes
        udp.AsSpan(40).CopyTo(packet.AsSpan(48));
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)(packet.Length - 40));
        Assert.True(PacketParser.TryParse(packet, out var header));
        Assert.Equal(IpProtocol.Udp, header.Protocol);
        Assert.Equal(2000, header.DestinationPort);
    }

    [Fact]
    public void Later_fragment_is_marked_without_ports()
    {
        var packet = TestPackets.Udp("100.64.0.1", 1, "100.64.0.2", 2);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(6), 185); // offset 185 * 8
        Assert.True(PacketParser.TryParse(packet, out var header));
        Assert.True(header.IsFragment);
        Assert.Equal(0, header.DestinationPort);
    }

    [Fact]
    public void Truncated_and_malformed_packets_are_refused()
    {
        var tcp = TestPackets.Tcp("100.64.0.1", 1, "100.64.0.2", 2, TcpFlags.Syn);
        for (var length = 0; length < tcp.Length; length++)
        {
            Assert.False(PacketParser.TryParse(tcp.AsSpan(0, length), out _), $"accepted a TCP packet cut to {length} bytes");
        }

        var v6 = TestPackets.Udp("fd00::1", 1, "fd00::2", 2);
        for (var length = 0; length < v6.Length; length++)
        {
            Assert.False(PacketParser.TryParse(v6.AsSpan(0, length), out _), $"accepted an IPv6 packet cut to {length} bytes");
        }

        var badIhl = (byte[])tcp.Clone();
        badIhl[0] = 0x44; // header length 16 < 20
        Assert.False(PacketParser.TryParse(badIhl, out _));

        var badDataOffset = (byte[])tcp.Clone();
        badDataOffset[20 + 12] = 4 << 4;
        Assert.False(PacketParser.TryParse(badDataOffset, out _));

        var lyingLength = (byte[])tcp.Clone();
        BinaryPrimitives.WriteUInt16BigEndian(lyingLength.AsSpan(2), 1500);
        Assert.False(PacketParser.TryParse(lyingLength, out _));

        var badVersion = (byte[])tcp.Clone();
        badVersion[0] = 0x55;
        Assert.False(PacketParser.TryParse(badVersion, out _));
    }

    [Fact]
    public void Random_bytes_never_throw_and_any_accepted_header_fits_the_buffer()
    {
        var random = new Random(1234);
        var buffer = new byte[128];
        var accepted = 0;
        for (var i = 0; i < 200_000; i++)
        {
            var length = random.Next(buffer.Length + 1);
            random.NextBytes(buffer.AsSpan(0, length));
            if (i % 2 == 0 && length > 0)
            {
                // Half the inputs get a plausible version nibble so the deeper paths are reached.
                buffer[0] = (byte)((random.Next(2) == 0 ? 0x40 : 0x60) | (buffer[0] & 0x0F));
            }

            if (PacketParser.TryParse(buffer.AsSpan(0, length), out var header))
            {
                accepted++;
                Assert.InRange(header.Length, 20, length);
            }
        }

        Assert.True(accepted > 0, "the fuzz never reached a successful parse; it is not exercising the parser");
    }
}
