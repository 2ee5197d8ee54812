using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

/// <summary>Builds raw IPv4/IPv6 packets for firewall tests (checksums are left zero: the firewall does not verify them).</summary>
internal static class TestPackets
{
    public static byte[] Tcp(string source, ushort sourcePort, string destination, ushort destinationPort, TcpFlags flags, int payload = 0) =>
        Ip(source, destination, IpProtocol.Tcp, Transport(20 + payload, t =>
        {
            BinaryPrimitives.WriteUInt16BigEndian(t, sourcePort);
            BinaryPrimitives.WriteUInt16BigEndian(t[2..], destinationPort);
            t[12] = 5 << 4;
            t[13] = (byte)flags;
        }));

    public static byte[] Udp(string source, ushort sourcePort, string destination, ushort destinationPort, int payload = 0) =>
        Ip(source, destination, IpProtocol.Udp, Transport(8 + payload, t =>
        {
            BinaryPrimitives.WriteUInt16BigEndian(t, sourcePort);
            BinaryPrimitives.WriteUInt16BigEndian(t[2..], destinationPort);
            BinaryPrimitives.WriteUInt16BigEndian(t[4..], (ushort)(8 + payload));
        }));

    public static byte[] Echo(string source, string destination, ushort identifier, bool reply)
    {
        var v6 = IPAddress.Parse(source).AddressFamily == AddressFamily.InterNetworkV6;
        return Ip(source, destination, v6 ? IpProtocol.IcmpV6 : IpProtocol.Icmp, Transport(16, t =>
        {
            t[0] = v6 ? (byte)(reply ? 129 : 128) : (byte)(reply ? 0 : 8);
            BinaryPrimitives.WriteUInt16BigEndian(t[4..], identifier);
            BinaryPrimitives.WriteUInt16BigEndian(t[6..], 1);
        }));
    }

    public static byte[] Ip(string source, string destination, byte protocol, byte[] transport)
    {
        var src = IPAddress.Parse(source);
        var dst = IPAddress.Parse(destination);
        if (src.AddressFamily == AddressFamily.InterNetwork)
        {
            var packet = new byte[20 + transport.Length];
            packet[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
            packet[8] = 64;
            packet[9] = protocol;
            src.TryWriteBytes(packet.AsSpan(12), out _);
            dst.TryWriteBytes(packet.AsSpan(16), out _);
            transport.CopyTo(packet, 20);
            return packet;
        }

        var v6 = new byte[40 + transport.Length];
        v6[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(v6.AsSpan(4), (ushort)transport.Length);
        v6[6] = protocol;
        v6[7] = 64;
        src.TryWriteBytes(v6.AsSpan(8), out _);
        dst.TryWriteBytes(v6.AsSpan(24), out _);
        transport.CopyTo(v6, 40);
        return v6;
    }

    public static FirewallRule Rule(string id, RuleAction action, RuleProtocol protocol, string remote, string ports = "", RuleDirection direction = RuleDirection.Inbound)
    {
        Assert.True(IpPrefix128.TryParse(remote, out var prefix));
        var ranges = ports.Length == 0
            ? []
            : ports.Split(',').Select(p => p.Split('-') is [var a, var b] ? new PortRange(ushort.Parse(a, System.Globalization.CultureInfo.InvariantCulture), ushort.Parse(b, System.Globalization.CultureInfo.InvariantCulture)) : new PortRange(ushort.Parse(p, System.Globalization.CultureInfo.InvariantCulture), ushort.Parse(p, System.Globalization.CultureInfo.InvariantCulture))).ToList();
        return new FirewallRule(id, direction, action, protocol, prefix, ranges);
    }

    private static byte[] Transport(int length, SpanAction fill)
    {
        var bytes = new byte[length];
        fill(bytes);
        return bytes;
    }

    private delegate void SpanAction(Span<byte> span);
}
