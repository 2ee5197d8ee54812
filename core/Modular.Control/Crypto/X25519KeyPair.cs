using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;
using NSec.Cryptography;

namespace Modular.Control.Crypto;

/// <summary>
/// A WireGuard (Curve25519) key pair usable for X25519 agreement. The private key stays inside
/// NSec's protected memory; <see cref="ExportPrivateKey"/> exists only to persist it to a 0600 file.
/// </summary>
public sealed class X25519KeyPair : IDisposable
{
    private X25519KeyPair(Key key)
    {
        Key = key;
        PublicKey = new WgKey(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
    }

    public WgKey PublicKey { get; }

    internal Key Key { get; }

    public static X25519KeyPair Generate() => new(Key.Create(KeyAgreementAlgorithm.X25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));

    /// <summary>Wraps an existing WireGuard private key (the agent's own interface key).</summary>
    public static X25519KeyPair FromPrivateKey(WgKey privateKey)
    {
        Span<byte> raw = stackalloc byte[WgKey.Size];
        privateKey.CopyTo(raw);
        try
        {
            return new X25519KeyPair(Key.Import(KeyAgreementAlgorithm.X25519, raw, KeyBlobFormat.RawPrivateKey, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport }));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(raw);
        }
    }

    /// <summary>The raw private key, for writing to a 0600 key file. Never log it.</summary>
    public WgKey ExportPrivateKey()
    {
        var raw = Key.Export(KeyBlobFormat.RawPrivateKey);
        try
        {
            return new WgKey(raw);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(raw);
        }
    }

    public void Dispose() => Key.Dispose();
}
