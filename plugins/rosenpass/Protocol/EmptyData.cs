using System.Buffers.Binary;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// EmptyData's auth field, the responder's proof that it entered the live session:
/// ChaCha20-Poly1305(own transmit key, nonce = ctr (u64 little-endian) || 0^4, empty AD, empty plaintext),
/// i.e. a bare 16-byte tag. The counter must grow with every message sent under the key.
/// </summary>
internal static class EmptyData
{
    public static byte[] Auth(ReadOnlySpan<byte> transmitKey, ulong counter)
    {
        var tag = new byte[Aead.TagLength];
        Aead.Encrypt(transmitKey, Nonce(counter), [], [], tag);
        return tag;
    }

    public static bool VerifyAuth(ReadOnlySpan<byte> peerTransmitKey, ulong counter, ReadOnlySpan<byte> auth) =>
        auth.Length == Aead.TagLength && Aead.TryDecrypt(peerTransmitKey, Nonce(counter), [], auth, []);

    private static byte[] Nonce(ulong counter)
    {
        var nonce = new byte[Aead.NonceLength];
        BinaryPrimitives.WriteUInt64LittleEndian(nonce, counter);
        return nonce;
    }
}
