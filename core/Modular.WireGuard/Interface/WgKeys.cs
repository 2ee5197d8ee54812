using NSec.Cryptography;
using Modular.Abstractions.WireGuard;

namespace Modular.WireGuard.Interface;

/// <summary>Key helpers the interface layer needs.</summary>
public static class WgKeys
{
    /// <summary>The Curve25519 public key of <paramref name="privateKey"/>.</summary>
    public static WgKey PublicKeyOf(WgKey privateKey)
    {
        Span<byte> raw = stackalloc byte[WgKey.Size];
        privateKey.CopyTo(raw);
        try
        {
            using var key = Key.Import(KeyAgreementAlgorithm.X25519, raw, KeyBlobFormat.RawPrivateKey);
            return new WgKey(key.PublicKey.Export(KeyBlobFormat.RawPublicKey));
        }
        finally
        {
            raw.Clear();
        }
    }

    /// <summary>A fresh private key.</summary>
    public static WgKey GeneratePrivateKey()
    {
        using var key = Key.Create(KeyAgreementAlgorithm.X25519, new KeyCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        return new WgKey(key.Export(KeyBlobFormat.RawPrivateKey));
    }
}
