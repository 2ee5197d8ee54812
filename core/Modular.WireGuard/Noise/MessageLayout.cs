namespace Modular.WireGuard.Noise;

/// <summary>WireGuard message types and the byte offsets of their fields (all little-endian integers).</summary>
internal static class MessageLayout
{
    public const byte TypeInitiation = 1;
    public const byte TypeResponse = 2;
    public const byte TypeCookieReply = 3;
    public const byte TypeTransport = 4;

    public const int InitiationSize = 148;
    public const int ResponseSize = 92;
    public const int CookieReplySize = 64;

    /// <summary>type(4) receiver(4) counter(8).</summary>
    public const int TransportHeaderSize = 16;

    /// <summary>The smallest transport message: header plus the Poly1305 tag of an empty (keepalive) payload.</summary>
    public const int TransportMinSize = TransportHeaderSize + 16;

    // Initiation: type(4) sender(4) ephemeral(32) static(32+16) timestamp(12+16) mac1(16) mac2(16)
    public const int InitiationSender = 4;
    public const int InitiationEphemeral = 8;
    public const int InitiationStatic = 40;
    public const int InitiationTimestamp = 88;

    // Response: type(4) sender(4) receiver(4) ephemeral(32) empty(0+16) mac1(16) mac2(16)
    public const int ResponseSender = 4;
    public const int ResponseReceiver = 8;
    public const int ResponseEphemeral = 12;
    public const int ResponseEmpty = 44;

    // Cookie reply: type(4) receiver(4) nonce(24) cookie(16+16)
    public const int CookieReceiver = 4;
    public const int CookieNonce = 8;
    public const int CookieEncrypted = 32;

    // Transport: type(4) receiver(4) counter(8) payload
    public const int TransportReceiver = 4;
    public const int TransportCounter = 8;

    /// <summary>
    /// Reads the message type: the first byte, with the three reserved bytes zero; 0 when the
    /// datagram is too short or the reserved bytes are set (not a WireGuard message).
    /// </summary>
    public static byte ReadType(ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length < 4 || datagram[1] != 0 || datagram[2] != 0 || datagram[3] != 0)
        {
            return 0;
        }

        return datagram[0];
    }
}
