using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace Modular.Core.Ice;

/// <summary>
/// Connectivity checks in the STUN format (RFC 5389): a Binding Request or Success Response with
/// USERNAME ("recipient ufrag:sender ufrag") and MESSAGE-INTEGRITY (20 bytes of HMAC-SHA256 keyed with
/// the password of the side that answers; only Modular agents read these checks, so SHA-1 is not needed). Requests and responses are checked against the password before
/// anything acts on them, so a forged or replayed-into-another-session check is dropped.
/// Works on spans; no allocation per check beyond the caller's buffer.
/// </summary>
public static class IceCheckMessage
{
    public const ushort BindingRequest = 0x0001;
    public const ushort BindingSuccess = 0x0101;
    public const int TransactionIdSize = 12;
    public const int MaxSize = 160;

    private const ushort UsernameAttribute = 0x0006;
    private const ushort IntegrityAttribute = 0x0008;
    private const int IntegritySize = 20;
    private const int MaxUsername = 80;

    /// <summary>Writes a check; returns its length (at most <see cref="MaxSize"/>).</summary>
    public static int Write(Span<byte> destination, ushort type, ReadOnlySpan<byte> transactionId, string username, string password)
    {
        var usernameLength = Encoding.ASCII.GetByteCount(username);
        if (usernameLength > MaxUsername || transactionId.Length != TransactionIdSize)
        {
            throw new ArgumentException("username too long or bad transaction id");
        }

        var paddedUsername = (usernameLength + 3) & ~3;
        var integrityOffset = PacketClassifier.StunHeaderSize + 4 + paddedUsername;
        var total = integrityOffset + 4 + IntegritySize;
        destination[..total].Clear();
        BinaryPrimitives.WriteUInt16BigEndian(destination, type);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)(total - PacketClassifier.StunHeaderSize));
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], PacketClassifier.StunMagicCookie);
        transactionId.CopyTo(destination[8..]);
        BinaryPrimitives.WriteUInt16BigEndian(destination[20..], UsernameAttribute);
        BinaryPrimitives.WriteUInt16BigEndian(destination[22..], (ushort)usernameLength);
        Encoding.ASCII.GetBytes(username, destination[24..]);
        BinaryPrimitives.WriteUInt16BigEndian(destination[integrityOffset..], IntegrityAttribute);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(integrityOffset + 2)..], IntegritySize);
        Mac(password, destination[..integrityOffset], destination.Slice(integrityOffset + 4, IntegritySize));
        return total;
    }

    /// <summary>
    /// Reads a check's type, transaction id and username without verifying it (the username says
    /// which password verifies it). False for anything that is not a check of ours.
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> datagram, out ushort type, out ReadOnlySpan<byte> transactionId, out ReadOnlySpan<byte> username)
    {
        type = 0;
        transactionId = default;
        username = default;
        if (datagram.Length < PacketClassifier.StunHeaderSize + 4 + 4 + IntegritySize || datagram.Length > MaxSize
            || BinaryPrimitives.ReadUInt32BigEndian(datagram[4..]) != PacketClassifier.StunMagicCookie
            || BinaryPrimitives.ReadUInt16BigEndian(datagram[2..]) != datagram.Length - PacketClassifier.StunHeaderSize)
        {
            return false;
        }

        type = BinaryPrimitives.ReadUInt16BigEndian(datagram);
        if (type is not (BindingRequest or BindingSuccess) || BinaryPrimitives.ReadUInt16BigEndian(datagram[20..]) != UsernameAttribute)
        {
            return false;
        }

        int usernameLength = BinaryPrimitives.ReadUInt16BigEndian(datagram[22..]);
        var integrityOffset = PacketClassifier.StunHeaderSize + 4 + ((usernameLength + 3) & ~3);
        if (usernameLength > MaxUsername || integrityOffset + 4 + IntegritySize != datagram.Length
            || BinaryPrimitives.ReadUInt16BigEndian(datagram[integrityOffset..]) != IntegrityAttribute
            || BinaryPrimitives.ReadUInt16BigEndian(datagram[(integrityOffset + 2)..]) != IntegritySize)
        {
            return false;
        }

        transactionId = datagram.Slice(8, TransactionIdSize);
        username = datagram.Slice(24, usernameLength);
        return true;
    }

    /// <summary>True when the check's MESSAGE-INTEGRITY matches <paramref name="password"/> (constant time).</summary>
    public static bool Verify(ReadOnlySpan<byte> datagram, string password)
    {
        var integrityOffset = datagram.Length - 4 - IntegritySize;
        Span<byte> expected = stackalloc byte[IntegritySize];
        Mac(password, datagram[..integrityOffset], expected);
        return CryptographicOperations.FixedTimeEquals(expected, datagram.Slice(integrityOffset + 4, IntegritySize));
    }

    /// <summary>Splits "recipient:sender" into its two ufrags.</summary>
    public static bool TrySplitUsername(ReadOnlySpan<byte> username, out ReadOnlySpan<byte> recipient, out ReadOnlySpan<byte> sender)
    {
        var colon = username.IndexOf((byte)':');
        recipient = colon > 0 ? username[..colon] : default;
        sender = colon > 0 ? username[(colon + 1)..] : default;
        return colon > 0 && sender.Length > 0;
    }

    private static void Mac(string password, ReadOnlySpan<byte> message, Span<byte> destination)
    {
        Span<byte> key = stackalloc byte[64];
        var keyLength = Encoding.ASCII.GetBytes(password, key);
        Span<byte> mac = stackalloc byte[32];
        HMACSHA256.HashData(key[..keyLength], message, mac);
        mac[..IntegritySize].CopyTo(destination);
        CryptographicOperations.ZeroMemory(key);
    }
}
