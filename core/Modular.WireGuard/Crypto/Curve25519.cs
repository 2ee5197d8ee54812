using System.Security.Cryptography;
using NSec.Cryptography;

namespace Modular.WireGuard.Crypto;

/// <summary>X25519 through NSec: key generation, public-key derivation and the raw Diffie-Hellman output.</summary>
internal static class Curve25519
{
    public const int KeySize = 32;

    private static readonly KeyAgreementAlgorithm X25519 = KeyAgreementAlgorithm.X25519;

    /// <summary>A fresh clamped private key.</summary>
    public static void GeneratePrivateKey(Span<byte> privateKey)
    {
        RandomNumberGenerator.Fill(privateKey[..KeySize]);
        Clamp(privateKey);
    }

    public static void Clamp(Span<byte> privateKey)
    {
        privateKey[0] &= 248;
        privateKey[31] = (byte)((privateKey[31] & 127) | 64);
    }

    public static void DerivePublicKey(ReadOnlySpan<byte> privateKey, Span<byte> publicKey)
    {
        using var key = Key.Import(X25519, privateKey, KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        key.PublicKey.Export(KeyBlobFormat.RawPublicKey).CopyTo(publicKey);
    }

    /// <summary>Imports a private key once for repeated Diffie-Hellman (importing derives the public key, a scalar multiplication).</summary>
    public static Key ImportPrivateKey(ReadOnlySpan<byte> privateKey)
        => Key.Import(X25519, privateKey, KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });

    /// <summary>Writes the public key of an imported private key.</summary>
    public static void ExportPublicKey(Key key, Span<byte> publicKey) => key.PublicKey.Export(KeyBlobFormat.RawPublicKey).CopyTo(publicKey);

    /// <summary>DH(private, public); false when the result is all zero (a low-order public key).</summary>
    public static bool SharedSecret(ReadOnlySpan<byte> privateKey, ReadOnlySpan<byte> publicKey, Span<byte> shared)
    {
        using var key = ImportPrivateKey(privateKey);
        return SharedSecret(key, publicKey, shared);
    }

    /// <summary>DH with an already imported private key; false when the result is all zero.</summary>
    public static bool SharedSecret(Key privateKey, ReadOnlySpan<byte> publicKey, Span<byte> shared)
    {
        if (!PublicKey.TryImport(X25519, publicKey, KeyBlobFormat.RawPublicKey, out var peer) || peer is null)
        {
            return false;
        }

        using var secret = X25519.Agree(privateKey, peer, new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        if (secret is null)
        {
            return false;
        }

        if (!secret.TryExport(SharedSecretBlobFormat.RawSharedSecret, shared, out var written) || written != KeySize)
        {
            return false;
        }

        return shared[..KeySize].IndexOfAnyExcept((byte)0) >= 0;
    }
}
