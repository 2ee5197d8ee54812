using System.Buffers.Binary;
using System.Security.Cryptography;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Crypto;

namespace Modular.WireGuard.Noise;

/// <summary>Labels and lifetimes shared by both cookie roles.</summary>
internal static class CookieConstants
{
    public static ReadOnlySpan<byte> LabelMac1 => "mac1----"u8;

    public static ReadOnlySpan<byte> LabelCookie => "cookie--"u8;

    /// <summary>The responder's cookie secret changes, and a received cookie expires, after two minutes.</summary>
    public static readonly TimeSpan CookieRefreshTime = TimeSpan.FromSeconds(120);

    public static void Mac1Key(ReadOnlySpan<byte> publicKey, Span<byte> key) => Blake2s.Hash(key, LabelMac1, publicKey);

    public static void CookieKey(ReadOnlySpan<byte> publicKey, Span<byte> key) => Blake2s.Hash(key, LabelCookie, publicKey);

    /// <summary>The bytes a cookie is bound to: the source address (4 or 16 bytes) then the port, little-endian.</summary>
    public static int SourceBytes(WgEndpoint source, Span<byte> destination)
    {
        var length = source.WriteAddress(destination);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[length..], source.Port);
        return length + 2;
    }
}

/// <summary>
/// The receiving side of mac1/mac2 for our own static key: checks macs on incoming handshake
/// messages and, under load, answers with an encrypted cookie reply bound to the sender's address.
/// Thread-safe.
/// </summary>
internal sealed class CookieChecker
{
    private readonly TimeProvider _time;
    private readonly byte[] _mac1Key = new byte[32];
    private readonly byte[] _cookieKey = new byte[32];
    private readonly byte[] _secret = new byte[32];
    private readonly Lock _lock = new();
    private long _secretBorn;
    private bool _hasSecret;

    public CookieChecker(ReadOnlySpan<byte> localPublicKey, TimeProvider time)
    {
        _time = time;
        CookieConstants.Mac1Key(localPublicKey, _mac1Key);
        CookieConstants.CookieKey(localPublicKey, _cookieKey);
    }

    /// <summary>mac1 = MAC(HASH("mac1----" || our public key), message up to mac1).</summary>
    public bool CheckMac1(ReadOnlySpan<byte> message)
    {
        if (message.Length < 32)
        {
            return false;
        }

        Span<byte> mac = stackalloc byte[Blake2s.MacSize];
        var macOffset = message.Length - 32;
        Blake2s.Mac(mac, _mac1Key, message[..macOffset]);
        return CryptographicOperations.FixedTimeEquals(mac, message.Slice(macOffset, 16));
    }

    /// <summary>mac2 = MAC(cookie for the sender's address, message up to mac2).</summary>
    public bool CheckMac2(ReadOnlySpan<byte> message, WgEndpoint source)
    {
        if (message.Length < 32)
        {
            return false;
        }

        Span<byte> cookie = stackalloc byte[Blake2s.MacSize];
        Span<byte> mac = stackalloc byte[Blake2s.MacSize];
        ComputeCookie(source, cookie);
        var macOffset = message.Length - 16;
        Blake2s.Mac(mac, cookie, message[..macOffset]);
        return CryptographicOperations.FixedTimeEquals(mac, message.Slice(macOffset, 16));
    }

    /// <summary>
    /// Writes a 64-byte cookie reply to <paramref name="message"/> (an initiation or response).
    /// <paramref name="nonce"/> is for deterministic tests; empty: random.
    /// </summary>
    public void CreateReply(ReadOnlySpan<byte> message, WgEndpoint source, Span<byte> reply, ReadOnlySpan<byte> nonce = default)
    {
        Span<byte> cookie = stackalloc byte[Blake2s.MacSize];
        ComputeCookie(source, cookie);
        reply[..MessageLayout.CookieReplySize].Clear();
        reply[0] = MessageLayout.TypeCookieReply;
        message.Slice(MessageLayout.InitiationSender, 4).CopyTo(reply[MessageLayout.CookieReceiver..]);
        var nonceField = reply.Slice(MessageLayout.CookieNonce, 24);
        if (nonce.IsEmpty)
        {
            RandomNumberGenerator.Fill(nonceField);
        }
        else
        {
            nonce.CopyTo(nonceField);
        }

        var mac1 = message.Slice(message.Length - 32, 16);
        Aead.XSeal(_cookieKey, nonceField, cookie, mac1, reply.Slice(MessageLayout.CookieEncrypted, 32));
    }

    /// <summary>For tests: sets the secret as if it had just rotated.</summary>
    internal void SetSecret(ReadOnlySpan<byte> secret)
    {
        lock (_lock)
        {
            secret.CopyTo(_secret);
            _secretBorn = _time.GetTimestamp();
            _hasSecret = true;
        }
    }

    private void ComputeCookie(WgEndpoint source, Span<byte> cookie)
    {
        Span<byte> sourceBytes = stackalloc byte[18];
        var length = CookieConstants.SourceBytes(source, sourceBytes);
        lock (_lock)
        {
            if (!_hasSecret || _time.GetElapsedTime(_secretBorn) >= CookieConstants.CookieRefreshTime)
            {
                RandomNumberGenerator.Fill(_secret);
                _secretBorn = _time.GetTimestamp();
                _hasSecret = true;
            }

            Blake2s.Mac(cookie, _secret, sourceBytes[..length]);
        }
    }
}

/// <summary>
/// The sending side of mac1/mac2 toward one peer: adds the macs to our handshake messages and
/// takes the cookie from a cookie reply. Thread-safe.
/// </summary>
internal sealed class CookieGenerator
{
    private readonly TimeProvider _time;
    private readonly byte[] _mac1Key = new byte[32];
    private readonly byte[] _cookieKey = new byte[32];
    private readonly byte[] _lastMac1 = new byte[16];
    private readonly byte[] _cookie = new byte[16];
    private readonly Lock _lock = new();
    private bool _hasLastMac1;
    private long? _cookieReceived;

    public CookieGenerator(ReadOnlySpan<byte> peerPublicKey, TimeProvider time)
    {
        _time = time;
        CookieConstants.Mac1Key(peerPublicKey, _mac1Key);
        CookieConstants.CookieKey(peerPublicKey, _cookieKey);
    }

    /// <summary>Fills mac1 and (with a fresh cookie) mac2 of a complete handshake message.</summary>
    public void AddMacs(Span<byte> message)
    {
        var mac1 = message.Slice(message.Length - 32, 16);
        var mac2 = message.Slice(message.Length - 16, 16);
        Blake2s.Mac(mac1, _mac1Key, message[..^32]);
        lock (_lock)
        {
            mac1.CopyTo(_lastMac1);
            _hasLastMac1 = true;
            if (_cookieReceived is { } received && _time.GetElapsedTime(received) < CookieConstants.CookieRefreshTime)
            {
                Blake2s.Mac(mac2, _cookie, message[..^16]);
            }
            else
            {
                mac2.Clear();
            }
        }
    }

    /// <summary>Decrypts a cookie reply to our last message; false when it does not authenticate.</summary>
    public bool ConsumeReply(ReadOnlySpan<byte> reply)
    {
        if (reply.Length != MessageLayout.CookieReplySize || MessageLayout.ReadType(reply) != MessageLayout.TypeCookieReply)
        {
            return false;
        }

        Span<byte> cookie = stackalloc byte[16];
        lock (_lock)
        {
            if (!_hasLastMac1)
            {
                return false;
            }

            if (!Aead.XOpen(_cookieKey, reply.Slice(MessageLayout.CookieNonce, 24), reply.Slice(MessageLayout.CookieEncrypted, 32), _lastMac1, cookie))
            {
                return false;
            }

            cookie.CopyTo(_cookie);
            _cookieReceived = _time.GetTimestamp();
            return true;
        }
    }

    internal ReadOnlySpan<byte> LastMac1 => _lastMac1;

    /// <summary>Whether a cookie from the peer is held (fresh or not).</summary>
    internal bool HasCookie
    {
        get
        {
            lock (_lock)
            {
                return _cookieReceived is not null;
            }
        }
    }
}
