using Modular.Abstractions.WireGuard;
using Org.BouncyCastle.Crypto.Digests;

namespace Modular.Plugins.Rosenpass;

/// <summary>
/// The PSKs the provider derives itself: the seed both sides of a Rosenpass pair use until their first exchange, and
/// the ratchet that replaces an expired key (never reused, never guessable without the old one).
/// </summary>
internal static class SeedKeys
{
    private static readonly byte[] SeedLabel = "modular rosenpass seed psk v1"u8.ToArray();
    private static readonly byte[] RatchetLabel = "modular rosenpass ratchet v1"u8.ToArray();

    /// <summary>
    /// BLAKE2s-256 keyed with the account PSK (unkeyed without one) over a label and both WireGuard public keys in
    /// ascending order: both sides compute the same seed, and only agents of the account know it when it has a PSK.
    /// </summary>
    public static WgKey Seed(WgKey a, WgKey b, WgKey? accountPsk)
    {
        var (low, high) = Compare(a, b) <= 0 ? (a, b) : (b, a);
        Span<byte> data = stackalloc byte[SeedLabel.Length + (2 * WgKey.Size)];
        SeedLabel.CopyTo(data);
        low.CopyTo(data[SeedLabel.Length..]);
        high.CopyTo(data[(SeedLabel.Length + WgKey.Size)..]);
        return Hash(accountPsk is { } psk ? psk.ToArray() : null, data);
    }

    /// <summary>The key after <paramref name="key"/> when it expired with no fresh exchange: a one-way step.</summary>
    public static WgKey Ratchet(WgKey key) => Hash(key.ToArray(), RatchetLabel);

    /// <summary>Lexicographic order of the raw keys: the larger one initiates the exchange.</summary>
    public static int Compare(WgKey a, WgKey b) => a.ToArray().AsSpan().SequenceCompareTo(b.ToArray());

    private static WgKey Hash(byte[]? key, ReadOnlySpan<byte> data)
    {
        var output = new byte[WgKey.Size];
        if (key is null)
        {
            var digest = new Blake2sDigest(256);
            digest.BlockUpdate(data);
            digest.DoFinal(output);
        }
        else
        {
            var digest = new Blake2sDigest(key, WgKey.Size, null, null);
            digest.BlockUpdate(data);
            digest.DoFinal(output);
        }

        return new WgKey(output);
    }
}
