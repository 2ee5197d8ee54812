using System.Buffers.Binary;
using System.Net;

namespace Modular.Testing.WireGuard;

/// <summary>IP packets for tests that push traffic through a device: protocol 253 (experimental) and a recognisable payload.</summary>
public static class TestPackets
{
    /// <summary>An IPv4 packet (protocol 253, experimental) with a recognisable payload.</summary>
    public static byte[] IPv4(string source, string destination, int payloadLength = 64, byte marker = 0x5A)
    {
        var packet = new byte[20 + payloadLength];
        packet[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
        packet[8] = 64;
        packet[9] = 253;
        IPAddress.Parse(source).TryWriteBytes(packet.AsSpan(12, 4), out _);
        IPAddress.Parse(destination).TryWriteBytes(packet.AsSpan(16, 4), out _);
        packet.AsSpan(20).Fill(marker);
        return packet;
    }

    public static byte[] IPv6(string source, string destination, int payloadLength = 64, byte marker = 0x6B)
    {
        var packet = new byte[40 + payloadLength];
        packet[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)payloadLength);
        packet[6] = 253;
        packet[7] = 64;
        IPAddress.Parse(source).TryWriteBytes(packet.AsSpan(8, 16), out _);
        IPAddress.Parse(destination).TryWriteBytes(packet.AsSpan(24, 16), out _);
        packet.AsSpan(40).Fill(marker);
        return packet;
    }
}
