using System.Buffers.Binary;
using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;

namespace Modular.Control.Relay;

/// <summary>
/// A short-lived relay credential issued by management: expiry (8 bytes, big-endian Unix seconds) ||
/// HMAC-SHA256(server secret, "modular/relay/v1" || peer public key || expiry). The relay checks it
/// with the same secret without asking management, so relay instances scale independently.
/// </summary>
public static class RelayToken
{
    public const int Size = 8 + MacSize;
    private const int MacSize = 32;

    private static ReadOnlySpan<byte> Label => "modular/relay/v1"u8;

    public static byte[] Issue(ReadOnlySpan<byte> secret, WgKey peer, DateTimeOffset expires)
    {
        var token = new byte[Size];
        BinaryPrimitives.WriteInt64BigEndian(token, expires.ToUnixTimeSeconds());
        Mac(secret, peer, token.AsSpan(0, 8), token.AsSpan(8));
        return token;
    }

    /// <summary>True when <paramref name="token"/> was issued for <paramref name="peer"/> with this secret and has not expired.</summary>
    public static bool Verify(ReadOnlySpan<byte> secret, WgKey peer, ReadOnlySpan<byte> token, DateTimeOffset now)
    {
        if (token.Length != Size)
        {
            return false;
        }

        var expires = BinaryPrimitives.ReadInt64BigEndian(token);
        if (expires < now.ToUnixTimeSeconds())
        {
            return false;
        }

        Span<byte> expected = stackalloc byte[MacSize];
        Mac(secret, peer, token[..8], expected);
        return CryptographicOperations.FixedTimeEquals(expected, token[8..]);
    }

    private static void Mac(ReadOnlySpan<byte> secret, WgKey peer, ReadOnlySpan<byte> expiry, Span<byte> destination)
    {
        Span<byte> message = stackalloc byte[16 + WgKey.Size + 8];
        Label.CopyTo(message);
        peer.CopyTo(message[16..]);
        expiry.CopyTo(message[(16 + WgKey.Size)..]);
        HMACSHA256.HashData(secret, message, destination);
    }
}
