using System.Buffers.Binary;

namespace Modular.Core.Ice;

/// <summary>
/// Tells the datagrams that share WireGuard's UDP port apart by their first bytes: a WireGuard
/// message starts with its type (1–4) and three zero bytes; a STUN message (connectivity checks,
/// STUN server replies) has two zero top bits and the magic cookie 0x2112A442 at offset 4. The two
/// never collide: a STUN type's second byte is never zero for the methods we send and receive.
/// </summary>
public static class PacketClassifier
{
    public const uint StunMagicCookie = 0x2112A442;
    public const int StunHeaderSize = 20;

    public static bool IsStun(ReadOnlySpan<byte> datagram)
        => datagram.Length >= StunHeaderSize
           && (datagram[0] & 0xC0) == 0
           && BinaryPrimitives.ReadUInt32BigEndian(datagram[4..]) == StunMagicCookie
           && !IsWireGuard(datagram);

    public static bool IsWireGuard(ReadOnlySpan<byte> datagram)
        => datagram.Length >= 4 && datagram[0] is >= 1 and <= 4 && datagram[1] == 0 && datagram[2] == 0 && datagram[3] == 0;
}
