using Org.BouncyCastle.Crypto.Digests;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The keyed hash H(k, d) every Rosenpass derivation is built on: 32-byte key, 32-byte output.
/// V02 is upstream's "incorrect HMAC": B(k ^ 0x5c.., B(k ^ 0x36.., d)) with B = keyed BLAKE2b-256
/// (RFC 7693 keyed mode, no salt or personalisation). It is not RFC 2104 HMAC, and must stay
/// exactly this way to interoperate. V03 is SHAKE256(k || d) cut to 32 bytes.
/// </summary>
internal static class KeyedHash
{
    public const int KeyLength = 32;
    public const int HashLength = 32;

    /// <summary>Writes H(key, data) for <paramref name="version"/> into <paramref name="output"/> (32 bytes).</summary>
    public static void Hash(ProtocolVersion version, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output)
    {
        if (key.Length != KeyLength)
        {
            throw new ArgumentException($"A Rosenpass hash key is {KeyLength} bytes.", nameof(key));
        }

        if (output.Length != HashLength)
        {
            throw new ArgumentException($"A Rosenpass hash is {HashLength} bytes.", nameof(output));
        }

        switch (version)
        {
            case ProtocolVersion.V02:
                IncorrectHmacBlake2b(key, data, output);
                break;
            case ProtocolVersion.V03:
                Shake256(key, data, output);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(version), version, "Unknown Rosenpass protocol version.");
        }
    }

    /// <summary>H(key, data) as a new array.</summary>
    public static byte[] Hash(ProtocolVersion version, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data)
    {
        var output = new byte[HashLength];
        Hash(version, key, data, output);
        return output;
    }

    /// <summary>Keyed BLAKE2b with a 32-byte key and a 32-byte digest; the V02 building block.</summary>
    public static void Blake2b256(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output)
    {
        var keyCopy = key.ToArray();
        try
        {
            var digest = new Blake2bDigest(keyCopy, HashLength, null, null);
            digest.BlockUpdate(data);
            digest.DoFinal(output);
        }
        finally
        {
            // BouncyCastle keeps its own copy (cleared by Reset/DoFinal); clear ours.
            Array.Clear(keyCopy);
        }
    }

    private static void IncorrectHmacBlake2b(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output)
    {
        Span<byte> innerKey = stackalloc byte[KeyLength];
        Span<byte> outerKey = stackalloc byte[KeyLength];
        Span<byte> inner = stackalloc byte[HashLength];
        for (var i = 0; i < KeyLength; i++)
        {
            innerKey[i] = (byte)(key[i] ^ 0x36);
            outerKey[i] = (byte)(key[i] ^ 0x5c);
        }

        Blake2b256(innerKey, data, inner);
        Blake2b256(outerKey, inner, output);
        innerKey.Clear();
        outerKey.Clear();
        inner.Clear();
    }

    private static void Shake256(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output)
    {
        var shake = new ShakeDigest(256);
        shake.BlockUpdate(key);
        shake.BlockUpdate(data);
        shake.OutputFinal(output);
    }
}
