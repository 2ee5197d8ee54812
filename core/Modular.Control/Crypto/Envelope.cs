using System.Security.Cryptography;
using Modular.Abstractions.WireGuard;
using NSec.Cryptography;
using Org.BouncyCastle.Crypto.Digests;

namespace Modular.Control.Crypto;

/// <summary>
/// Authenticated encryption between two Curve25519 keys (the agents' WireGuard keys and the server key).
/// key = BLAKE2s-256 keyed with X25519(sender, recipient) over (purpose || sender public || recipient public);
/// box = 24-byte random nonce || XChaCha20-Poly1305(key, nonce, plaintext, ad = purpose || sender || recipient || extra).
/// Binding both public keys and a purpose label into key and associated data means a box can be
/// opened only by the named recipient, proves the named sender held its private key, and cannot
/// be replayed into another direction or protocol. A third party (the server, for signal) can neither read nor forge one.
/// </summary>
public static class Envelope
{
    public const int NonceSize = 24;
    public const int TagSize = 16;
    public const int Overhead = NonceSize + TagSize;

    /// <summary>Purpose labels; each protocol uses its own so boxes never cross over.</summary>
    public static class Purposes
    {
        public static ReadOnlySpan<byte> Management => "modular/management/v1"u8;

        /// <summary>A refusal the server seals to the agent beside a gRPC status (see ManagementRefusal).</summary>
        public static ReadOnlySpan<byte> ManagementError => "modular/management-error/v1"u8;

        public static ReadOnlySpan<byte> Signal => "modular/signal/v1"u8;

        public static ReadOnlySpan<byte> SignalAuth => "modular/signal-auth/v1"u8;

        /// <summary>A flow batch, agent to server (Flow API).</summary>
        public static ReadOnlySpan<byte> Flow => "modular/flow/v1"u8;

        /// <summary>The server's answer to one flow batch, bound to that batch's nonce.</summary>
        public static ReadOnlySpan<byte> FlowAck => "modular/flow-ack/v1"u8;
    }

    private static readonly AeadAlgorithm Aead = AeadAlgorithm.XChaCha20Poly1305;

    /// <summary>Seals <paramref name="plaintext"/> from <paramref name="sender"/> to <paramref name="recipient"/>.</summary>
    /// <exception cref="CryptographicException">The recipient key is not a usable Curve25519 point.</exception>
    public static byte[] Seal(X25519KeyPair sender, WgKey recipient, ReadOnlySpan<byte> purpose, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> extraAssociatedData = default)
    {
        using var key = DeriveKey(sender, sender.PublicKey, recipient, recipient, purpose)
            ?? throw new CryptographicException("The recipient's public key is not a valid Curve25519 key.");
        var box = new byte[NonceSize + plaintext.Length + TagSize];
        RandomNumberGenerator.Fill(box.AsSpan(0, NonceSize));
        var ad = AssociatedData(purpose, sender.PublicKey, recipient, extraAssociatedData);
        Aead.Encrypt(key, box.AsSpan(0, NonceSize), ad, plaintext, box.AsSpan(NonceSize));
        return box;
    }

    /// <summary>
    /// Opens a box that <paramref name="sender"/> sealed to <paramref name="recipient"/>. Returns false
    /// (never throws) for a box that is truncated, tampered with, sealed by another key or for another purpose.
    /// </summary>
    public static bool TryOpen(X25519KeyPair recipient, WgKey sender, ReadOnlySpan<byte> purpose, ReadOnlySpan<byte> box, out byte[] plaintext, ReadOnlySpan<byte> extraAssociatedData = default)
    {
        plaintext = [];
        if (box.Length < Overhead)
        {
            return false;
        }

        using var key = DeriveKey(recipient, sender, recipient.PublicKey, sender, purpose);
        if (key is null)
        {
            return false;
        }

        var ad = AssociatedData(purpose, sender, recipient.PublicKey, extraAssociatedData);
        var output = new byte[box.Length - Overhead];
        if (!Aead.Decrypt(key, box[..NonceSize], ad, box[NonceSize..], output))
        {
            return false;
        }

        plaintext = output;
        return true;
    }

    private static Key? DeriveKey(X25519KeyPair own, WgKey senderPublic, WgKey recipientPublic, WgKey other, ReadOnlySpan<byte> purpose)
    {
        PublicKey otherKey;
        Span<byte> otherRaw = stackalloc byte[WgKey.Size];
        other.CopyTo(otherRaw);
        if (!PublicKey.TryImport(KeyAgreementAlgorithm.X25519, otherRaw, KeyBlobFormat.RawPublicKey, out var imported) || imported is null)
        {
            return null;
        }

        otherKey = imported;
        using var shared = KeyAgreementAlgorithm.X25519.Agree(own.Key, otherKey, new SharedSecretCreationParameters { ExportPolicy = KeyExportPolicies.AllowPlaintextExport });
        if (shared is null)
        {
            // Low-order point: the agreement would be all zeros.
            return null;
        }

        var secret = shared.Export(SharedSecretBlobFormat.RawSharedSecret);
        var derived = new byte[32];
        try
        {
            var blake = new Blake2sDigest(secret, 32, null, null);
            blake.BlockUpdate(purpose);
            Span<byte> keyBytes = stackalloc byte[WgKey.Size];
            senderPublic.CopyTo(keyBytes);
            blake.BlockUpdate(keyBytes);
            recipientPublic.CopyTo(keyBytes);
            blake.BlockUpdate(keyBytes);
            blake.DoFinal(derived, 0);
            return Key.Import(Aead, derived, KeyBlobFormat.RawSymmetricKey);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
            CryptographicOperations.ZeroMemory(derived);
        }
    }

    private static byte[] AssociatedData(ReadOnlySpan<byte> purpose, WgKey sender, WgKey recipient, ReadOnlySpan<byte> extra)
    {
        var ad = new byte[purpose.Length + (2 * WgKey.Size) + extra.Length];
        purpose.CopyTo(ad);
        sender.CopyTo(ad.AsSpan(purpose.Length));
        recipient.CopyTo(ad.AsSpan(purpose.Length + WgKey.Size));
        extra.CopyTo(ad.AsSpan(purpose.Length + (2 * WgKey.Size)));
        return ad;
    }
}
