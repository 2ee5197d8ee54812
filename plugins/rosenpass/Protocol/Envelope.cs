using System.Security.Cryptography;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The envelope around every handshake message: type(1) | reserved(3) = 0 | payload | mac(16) | cookie(16).
/// mac = H(H(mac, spk of the recipient), bytes before mac)[0..16]: only someone who knows the
/// recipient's public key can make the recipient spend work on the message.
/// cookie = H_shake(H_shake(cookie, cookie_value), bytes before cookie)[0..16]: proof of a
/// recent CookieReply when the responder is under load; always the SHAKE256 chain.
/// </summary>
internal static class Envelope
{
    public const int HeaderLength = 4;
    public const int MacLength = 16;
    public const int CookieLength = 16;
    public const int Overhead = HeaderLength + MacLength + CookieLength;
    public const int CookieValueLength = 16;

    /// <summary>The mac key for messages to the owner of <paramref name="recipientStaticPublicKey"/>: H(mac, spkt).</summary>
    public static byte[] MacKey(ProtocolVersion version, ReadOnlySpan<byte> recipientStaticPublicKey) =>
        Labels.For(version).Mac.Mix(recipientStaticPublicKey).ToArray();

    /// <summary>Writes the mac of <paramref name="message"/> (a whole envelope) with a precomputed mac key.</summary>
    public static void WriteMac(ProtocolVersion version, ReadOnlySpan<byte> macKey, Span<byte> message)
    {
        CheckLength(message);
        var macOffset = message.Length - MacLength - CookieLength;
        Span<byte> full = stackalloc byte[KeyedHash.HashLength];
        KeyedHash.Hash(version, macKey, message[..macOffset], full);
        full[..MacLength].CopyTo(message[macOffset..]);
    }

    /// <summary>Checks the mac of a received envelope against our own mac key, in constant time.</summary>
    public static bool VerifyMac(ProtocolVersion version, ReadOnlySpan<byte> ownMacKey, ReadOnlySpan<byte> message)
    {
        if (message.Length < Overhead)
        {
            return false;
        }

        var macOffset = message.Length - MacLength - CookieLength;
        Span<byte> full = stackalloc byte[KeyedHash.HashLength];
        KeyedHash.Hash(version, ownMacKey, message[..macOffset], full);
        return CryptographicOperations.FixedTimeEquals(full[..MacLength], message.Slice(macOffset, MacLength));
    }

    /// <summary>Writes the cookie field from a cookie value (16 bytes): always SHAKE256.</summary>
    public static void WriteCookie(ReadOnlySpan<byte> cookieValue, Span<byte> message)
    {
        CheckLength(message);
        var cookieOffset = message.Length - CookieLength;
        ComputeCookie(cookieValue, message[..cookieOffset], message[cookieOffset..]);
    }

    /// <summary>Checks the cookie field against the cookie value the sender should hold, in constant time.</summary>
    public static bool VerifyCookie(ReadOnlySpan<byte> cookieValue, ReadOnlySpan<byte> message)
    {
        if (message.Length < Overhead)
        {
            return false;
        }

        var cookieOffset = message.Length - CookieLength;
        Span<byte> expected = stackalloc byte[CookieLength];
        ComputeCookie(cookieValue, message[..cookieOffset], expected);
        return CryptographicOperations.FixedTimeEquals(expected, message[cookieOffset..]);
    }

    private static void ComputeCookie(ReadOnlySpan<byte> cookieValue, ReadOnlySpan<byte> bytesBeforeCookie, Span<byte> cookie)
    {
        if (cookieValue.Length != CookieValueLength)
        {
            throw new ArgumentException($"A cookie value is {CookieValueLength} bytes.", nameof(cookieValue));
        }

        var key = Labels.CookieLabels.Cookie.Mix(cookieValue);
        Span<byte> full = stackalloc byte[KeyedHash.HashLength];
        KeyedHash.Hash(ProtocolVersion.V03, key.Value, bytesBeforeCookie, full);
        full[..CookieLength].CopyTo(cookie);
    }

    private static void CheckLength(ReadOnlySpan<byte> message)
    {
        if (message.Length < Overhead)
        {
            throw new ArgumentException($"An envelope is at least {Overhead} bytes.", nameof(message));
        }
    }
}
