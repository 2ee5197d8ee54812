using System.Buffers.Binary;
using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;

namespace Modular.Control.Relay;

/// <summary>
/// Relay credentials issued by management, checked by the relay with the same server secret without asking
/// management (so relay instances scale independently).
/// <para>
/// v1 token (the old Bind form, accepted for one release): expiry (8 bytes, big-endian Unix seconds) ||
/// HMAC-SHA256(server secret, "modular/relay/v1" || peer public key || expiry). It travels in clear in every
/// Bind, so anyone who sees one can replay it.
/// </para>
/// <para>
/// v2 per-token secret: HMAC-SHA256(server secret, "modular/relay/v2/k" || peer public key || expiry), handed to
/// the agent only inside the sealed Login/Sync reply and never sent to the relay. A signed Bind carries
/// (own key, remote key, expiry, counter) and an HMAC under that secret over all of them, so a Bind is tied to
/// the pair and the expiry, cannot be forged without the secret, and a replay is refused by its counter.
/// </para>
/// </summary>
public static class RelayToken
{
    public const int Size = 8 + MacSize;
    public const int MacSize = 32;
    public const int SecretSize = 32;

    private static ReadOnlySpan<byte> Label => "modular/relay/v1"u8;

    private static ReadOnlySpan<byte> SecretLabel => "modular/relay/v2/k"u8;

    private static ReadOnlySpan<byte> BindLabel => "modular/relay/v2/bind"u8;

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

    /// <summary>The expiry (Unix seconds) a v1 token carries; 0 when it is not a token.</summary>
    public static long ExpiresOf(ReadOnlySpan<byte> token) => token.Length == Size ? BinaryPrimitives.ReadInt64BigEndian(token) : 0;

    /// <summary>The v2 per-token secret of <paramref name="peer"/> for tokens expiring at <paramref name="expiresUnix"/>.</summary>
    public static byte[] DeriveSecret(ReadOnlySpan<byte> serverSecret, WgKey peer, long expiresUnix)
    {
        var secret = new byte[SecretSize];
        DeriveSecret(serverSecret, peer, expiresUnix, secret);
        return secret;
    }

    private static void DeriveSecret(ReadOnlySpan<byte> serverSecret, WgKey peer, long expiresUnix, Span<byte> destination)
    {
        Span<byte> message = stackalloc byte[18 + WgKey.Size + 8];
        SecretLabel.CopyTo(message);
        peer.CopyTo(message[18..]);
        BinaryPrimitives.WriteInt64BigEndian(message[(18 + WgKey.Size)..], expiresUnix);
        HMACSHA256.HashData(serverSecret, message, destination);
    }

    /// <summary>
    /// The MAC of a signed Bind: HMAC-SHA256(per-token secret, "modular/relay/v2/bind" || <paramref name="signed"/>),
    /// where <paramref name="signed"/> is the Bind up to the MAC (type, own key, remote key, expiry, counter).
    /// </summary>
    public static void SignBind(ReadOnlySpan<byte> tokenSecret, ReadOnlySpan<byte> signed, Span<byte> destination)
    {
        Span<byte> message = stackalloc byte[21 + RelayProtocol.SignedBindSize - MacSize];
        BindLabel.CopyTo(message);
        signed.CopyTo(message[21..]);
        HMACSHA256.HashData(tokenSecret, message[..(21 + signed.Length)], destination);
    }

    /// <summary>
    /// True when a signed Bind (<see cref="RelayProtocol.SignedBindSize"/> bytes) carries a MAC under the per-token
    /// secret that <paramref name="serverSecret"/> derives for its own key and expiry, and that expiry has not passed.
    /// </summary>
    public static bool VerifySignedBind(ReadOnlySpan<byte> serverSecret, ReadOnlySpan<byte> bind, DateTimeOffset now)
    {
        if (bind.Length != RelayProtocol.SignedBindSize || bind[0] != RelayProtocol.SignedBind)
        {
            return false;
        }

        var fields = RelayProtocol.ReadSignedBind(bind);
        if (fields.ExpiresUnix < now.ToUnixTimeSeconds())
        {
            return false;
        }

        Span<byte> secret = stackalloc byte[SecretSize];
        Span<byte> expected = stackalloc byte[MacSize];
        try
        {
            DeriveSecret(serverSecret, fields.Own, fields.ExpiresUnix, secret);
            SignBind(secret, bind[..^MacSize], expected);
            return CryptographicOperations.FixedTimeEquals(expected, bind[^MacSize..]);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
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
