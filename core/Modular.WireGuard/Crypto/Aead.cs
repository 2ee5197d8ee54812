using NSec.Cryptography;

namespace Modular.WireGuard.Crypto;

/// <summary>ChaCha20-Poly1305 (WireGuard's 96-bit nonce: 4 zero bytes then a little-endian counter) and XChaCha20-Poly1305 via NSec.</summary>
internal static class Aead
{
    public const int TagSize = 16;
    public const int KeySize = 32;

    public static readonly AeadAlgorithm ChaCha = AeadAlgorithm.ChaCha20Poly1305;
    public static readonly AeadAlgorithm XChaCha = AeadAlgorithm.XChaCha20Poly1305;

    /// <summary>Imports a 32-byte symmetric key for repeated use on the transport path.</summary>
    public static Key ImportChaCha(ReadOnlySpan<byte> key) => Key.Import(ChaCha, key, KeyBlobFormat.RawSymmetricKey);

    public static void Seal(ReadOnlySpan<byte> key, ulong counter, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> ad, Span<byte> ciphertext)
    {
        using var k = ImportChaCha(key);
        Seal(k, counter, plaintext, ad, ciphertext);
    }

    public static bool Open(ReadOnlySpan<byte> key, ulong counter, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> ad, Span<byte> plaintext)
    {
        using var k = ImportChaCha(key);
        return Open(k, counter, ciphertext, ad, plaintext);
    }

    public static void Seal(Key key, ulong counter, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> ad, Span<byte> ciphertext)
    {
        Span<byte> nonce = stackalloc byte[12];
        WriteNonce(nonce, counter);
        ChaCha.Encrypt(key, nonce, ad, plaintext, ciphertext[..(plaintext.Length + TagSize)]);
    }

    public static bool Open(Key key, ulong counter, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> ad, Span<byte> plaintext)
    {
        if (ciphertext.Length < TagSize)
        {
            return false;
        }

        Span<byte> nonce = stackalloc byte[12];
        WriteNonce(nonce, counter);
        return ChaCha.Decrypt(key, nonce, ad, ciphertext, plaintext[..(ciphertext.Length - TagSize)]);
    }

    public static void XSeal(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce24, ReadOnlySpan<byte> plaintext, ReadOnlySpan<byte> ad, Span<byte> ciphertext)
    {
        using var k = Key.Import(XChaCha, key, KeyBlobFormat.RawSymmetricKey);
        XChaCha.Encrypt(k, nonce24, ad, plaintext, ciphertext[..(plaintext.Length + TagSize)]);
    }

    public static bool XOpen(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce24, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> ad, Span<byte> plaintext)
    {
        if (ciphertext.Length < TagSize)
        {
            return false;
        }

        using var k = Key.Import(XChaCha, key, KeyBlobFormat.RawSymmetricKey);
        return XChaCha.Decrypt(k, nonce24, ad, ciphertext, plaintext[..(ciphertext.Length - TagSize)]);
    }

    private static void WriteNonce(Span<byte> nonce, ulong counter)
    {
        nonce[..4].Clear();
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }
}
