using Org.BouncyCastle.Crypto.Digests;
using Org.BouncyCastle.Crypto.Macs;
using Org.BouncyCastle.Crypto.Parameters;

namespace Modular.WireGuard.Crypto;

/// <summary>
/// WireGuard's symmetric helpers over BLAKE2s (BouncyCastle): HASH, MAC (keyed, 16 bytes),
/// HMAC and the HKDF-style KDF1..3 of the Noise protocol. Used on handshake paths only.
/// </summary>
internal static class Blake2s
{
    public const int HashSize = 32;
    public const int MacSize = 16;

    /// <summary>HASH(a || b || c): unkeyed BLAKE2s-256.</summary>
    public static void Hash(Span<byte> output, ReadOnlySpan<byte> a, ReadOnlySpan<byte> b = default, ReadOnlySpan<byte> c = default)
    {
        var digest = new Blake2sDigest(256);
        digest.BlockUpdate(a);
        digest.BlockUpdate(b);
        digest.BlockUpdate(c);
        digest.DoFinal(output);
    }

    /// <summary>MAC(key, data): keyed BLAKE2s with a 16-byte output.</summary>
    public static void Mac(Span<byte> output, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data)
    {
        var digest = new Blake2sDigest(key.ToArray(), MacSize, null, null);
        digest.BlockUpdate(data);
        digest.DoFinal(output);
    }

    /// <summary>HMAC-BLAKE2s-256 (RFC 2104 over a 64-byte block).</summary>
    public static void Hmac(Span<byte> output, ReadOnlySpan<byte> key, ReadOnlySpan<byte> data)
    {
        var hmac = new HMac(new Blake2sDigest(256));
        hmac.Init(new KeyParameter(key));
        hmac.BlockUpdate(data);
        hmac.DoFinal(output);
    }

    /// <summary>KDF_n(key, input): writes n 32-byte outputs (1..3) to <paramref name="t1"/>.. in order.</summary>
    public static void Kdf(ReadOnlySpan<byte> key, ReadOnlySpan<byte> input, Span<byte> t1, Span<byte> t2 = default, Span<byte> t3 = default)
    {
        Span<byte> prk = stackalloc byte[HashSize];
        Span<byte> block = stackalloc byte[HashSize + 1];
        Span<byte> previous = stackalloc byte[HashSize];
        try
        {
            Hmac(prk, key, input);
            block[0] = 1;
            Hmac(previous, prk, block[..1]);
            previous.CopyTo(t1);
            if (t2.IsEmpty)
            {
                return;
            }

            previous.CopyTo(block);
            block[HashSize] = 2;
            Hmac(previous, prk, block);
            previous.CopyTo(t2);
            if (t3.IsEmpty)
            {
                return;
            }

            previous.CopyTo(block);
            block[HashSize] = 3;
            Hmac(previous, prk, block);
            previous.CopyTo(t3);
        }
        finally
        {
            prk.Clear();
            block.Clear();
            previous.Clear();
        }
    }
}
