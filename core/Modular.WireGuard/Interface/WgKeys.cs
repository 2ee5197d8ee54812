using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Crypto;

namespace Modular.WireGuard.Interface;

/// <summary>Key helpers for callers outside the protocol engine (interfaces, hosts, tests).</summary>
public static class WgKeys
{
    /// <summary>The Curve25519 public key of <paramref name="privateKey"/>.</summary>
    public static WgKey PublicKeyOf(WgKey privateKey)
    {
        Span<byte> raw = stackalloc byte[WgKey.Size];
        Span<byte> publicKey = stackalloc byte[WgKey.Size];
        privateKey.CopyTo(raw);
        try
        {
            Curve25519.DerivePublicKey(raw, publicKey);
            return new WgKey(publicKey);
        }
        finally
        {
            raw.Clear();
        }
    }

    /// <summary>A fresh, clamped private key.</summary>
    public static WgKey GeneratePrivateKey()
    {
        Span<byte> raw = stackalloc byte[WgKey.Size];
        try
        {
            Curve25519.GeneratePrivateKey(raw);
            return new WgKey(raw);
        }
        finally
        {
            raw.Clear();
        }
    }
}
