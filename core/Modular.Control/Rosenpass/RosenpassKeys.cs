using Org.BouncyCastle.Crypto.Digests;

namespace Modular.Control.Rosenpass;

/// <summary>
/// Rosenpass public keys as management and agents handle them: named by their fingerprint (BLAKE2s-256 of the key),
/// which both sides check, so neither has to trust the other's copy.
/// </summary>
public static class RosenpassKeys
{
    /// <summary>A fingerprint's length: BLAKE2s-256.</summary>
    public const int FingerprintSize = 32;

    /// <summary>A Classic McEliece-460896 public key, the one Rosenpass uses for static keys.</summary>
    public const int McEliece460896PublicKeySize = 524_160;

    /// <summary>The largest public key accepted (a McEliece-460896 key with room for another parameter set's).</summary>
    public const int MaxPublicKeySize = 1_100_000;

    /// <summary>
    /// The largest gRPC message the two key calls may carry (key, fingerprint, envelope and framing); every other call
    /// keeps the server's ordinary limit.
    /// </summary>
    public const int MaxMessageSize = MaxPublicKeySize + (64 * 1024);

    /// <summary>BLAKE2s-256 of <paramref name="publicKey"/>.</summary>
    public static byte[] Fingerprint(ReadOnlySpan<byte> publicKey)
    {
        var digest = new Blake2sDigest(256);
        digest.BlockUpdate(publicKey);
        var output = new byte[FingerprintSize];
        digest.DoFinal(output);
        return output;
    }

    /// <summary>Whether <paramref name="fingerprint"/> is the fingerprint of <paramref name="publicKey"/> (constant time).</summary>
    public static bool Matches(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> fingerprint)
        => fingerprint.Length == FingerprintSize
           && System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(Fingerprint(publicKey), fingerprint);
}
