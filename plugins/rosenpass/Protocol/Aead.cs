using System.Buffers.Binary;
using System.Numerics;
using System.Security.Cryptography;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The two AEADs Rosenpass uses, laid out as upstream writes them: ChaCha20-Poly1305 (RFC 8439)
/// as ct || tag, and XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) as nonce || ct || tag.
/// .NET has no XChaCha20, so it is built the standard way: HChaCha20 derives a subkey from the
/// first 16 nonce bytes, and ChaCha20-Poly1305 runs with nonce 0^4 || the last 8 bytes.
/// Decryption reports a failed tag as false and leaves no plaintext behind.
/// </summary>
internal static class Aead
{
    public const int KeyLength = 32;
    public const int NonceLength = 12;
    public const int XNonceLength = 24;
    public const int TagLength = 16;

    /// <summary>ChaCha20-Poly1305: writes ct || tag (plaintext length + 16) into <paramref name="output"/>.</summary>
    public static void Encrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> plaintext, Span<byte> output)
    {
        CheckLengths(key, nonce, NonceLength, output.Length, plaintext.Length + TagLength);
        using var aead = new ChaCha20Poly1305(key);
        aead.Encrypt(nonce, plaintext, output[..plaintext.Length], output[plaintext.Length..], ad);
    }

    /// <summary>ChaCha20-Poly1305: opens ct || tag into <paramref name="plaintext"/>; false (and a cleared output) on a bad tag.</summary>
    public static bool TryDecrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        if (ciphertext.Length < TagLength)
        {
            return false;
        }

        CheckLengths(key, nonce, NonceLength, plaintext.Length, ciphertext.Length - TagLength);
        using var aead = new ChaCha20Poly1305(key);
        try
        {
            aead.Decrypt(nonce, ciphertext[..plaintext.Length], ciphertext[plaintext.Length..], plaintext, ad);
            return true;
        }
        catch (AuthenticationTagMismatchException)
        {
            plaintext.Clear();
            return false;
        }
    }

    /// <summary>XChaCha20-Poly1305: writes nonce || ct || tag (plaintext length + 40) into <paramref name="output"/>.</summary>
    public static void XEncrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> plaintext, Span<byte> output)
    {
        CheckLengths(key, nonce, XNonceLength, output.Length, XNonceLength + plaintext.Length + TagLength);
        Span<byte> subkey = stackalloc byte[KeyLength];
        Span<byte> innerNonce = stackalloc byte[NonceLength];
        try
        {
            HChaCha20(key, nonce[..16], subkey);
            innerNonce.Clear();
            nonce[16..].CopyTo(innerNonce[4..]);
            nonce.CopyTo(output);
            Encrypt(subkey, innerNonce, ad, plaintext, output[XNonceLength..]);
        }
        finally
        {
            subkey.Clear();
        }
    }

    /// <summary>XChaCha20-Poly1305: opens nonce || ct || tag; false (and a cleared output) on a bad tag.</summary>
    public static bool TryXDecrypt(ReadOnlySpan<byte> key, ReadOnlySpan<byte> ad, ReadOnlySpan<byte> sealedBox, Span<byte> plaintext)
    {
        if (sealedBox.Length < XNonceLength + TagLength || plaintext.Length != sealedBox.Length - XNonceLength - TagLength)
        {
            return false;
        }

        Span<byte> subkey = stackalloc byte[KeyLength];
        Span<byte> innerNonce = stackalloc byte[NonceLength];
        try
        {
            HChaCha20(key, sealedBox[..16], subkey);
            innerNonce.Clear();
            sealedBox[16..XNonceLength].CopyTo(innerNonce[4..]);
            return TryDecrypt(subkey, innerNonce, ad, sealedBox[XNonceLength..], plaintext);
        }
        finally
        {
            subkey.Clear();
        }
    }

    /// <summary>HChaCha20 (draft-irtf-cfrg-xchacha §2.2): 20 ChaCha rounds, no feed-forward, words 0-3 and 12-15 out.</summary>
    internal static void HChaCha20(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce16, Span<byte> subkey)
    {
        if (key.Length != KeyLength || nonce16.Length != 16 || subkey.Length != KeyLength)
        {
            throw new ArgumentException("HChaCha20 takes a 32-byte key and a 16-byte nonce and gives 32 bytes.");
        }

        Span<uint> s = stackalloc uint[16];
        s[0] = 0x61707865;
        s[1] = 0x3320646e;
        s[2] = 0x79622d32;
        s[3] = 0x6b206574;
        for (var i = 0; i < 8; i++)
        {
            s[4 + i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(4 * i)..]);
        }

        for (var i = 0; i < 4; i++)
        {
            s[12 + i] = BinaryPrimitives.ReadUInt32LittleEndian(nonce16[(4 * i)..]);
        }

        for (var round = 0; round < 10; round++)
        {
            QuarterRound(s, 0, 4, 8, 12);
            QuarterRound(s, 1, 5, 9, 13);
            QuarterRound(s, 2, 6, 10, 14);
            QuarterRound(s, 3, 7, 11, 15);
            QuarterRound(s, 0, 5, 10, 15);
            QuarterRound(s, 1, 6, 11, 12);
            QuarterRound(s, 2, 7, 8, 13);
            QuarterRound(s, 3, 4, 9, 14);
        }

        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(subkey[(4 * i)..], s[i]);
            BinaryPrimitives.WriteUInt32LittleEndian(subkey[(16 + (4 * i))..], s[12 + i]);
        }

        s.Clear();
    }

    private static void QuarterRound(Span<uint> s, int a, int b, int c, int d)
    {
        s[a] += s[b]; s[d] = BitOperations.RotateLeft(s[d] ^ s[a], 16);
        s[c] += s[d]; s[b] = BitOperations.RotateLeft(s[b] ^ s[c], 12);
        s[a] += s[b]; s[d] = BitOperations.RotateLeft(s[d] ^ s[a], 8);
        s[c] += s[d]; s[b] = BitOperations.RotateLeft(s[b] ^ s[c], 7);
    }

    private static void CheckLengths(ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, int nonceLength, int outputLength, int expectedOutput)
    {
        if (key.Length != KeyLength)
        {
            throw new ArgumentException($"An AEAD key is {KeyLength} bytes.", nameof(key));
        }

        if (nonce.Length != nonceLength)
        {
            throw new ArgumentException($"This AEAD's nonce is {nonceLength} bytes.", nameof(nonce));
        }

        if (outputLength != expectedOutput)
        {
            throw new ArgumentException($"The output must be {expectedOutput} bytes.");
        }
    }
}
