namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The DoS-cookie derivations a responder under load uses (upstream's experimental cookie path),
/// always on the SHAKE256 chain:
/// cookie_value = H(H(cookie-value, cookie_secret), host id)[0..16] (host id = the sender's address),
/// cookie_key = H(cookie-key, spkm), and the CookieReply's
/// cookie_encrypted = nonce(24) || XChaCha20-Poly1305(cookie_key, nonce, AD = mac field of the message answered, cookie_value) || tag.
/// </summary>
internal static class CookieReply
{
    public const int EncryptedLength = Aead.XNonceLength + Envelope.CookieValueLength + Aead.TagLength;

    /// <summary>The cookie value a responder hands to the host identified by <paramref name="hostId"/>.</summary>
    public static byte[] CookieValue(ReadOnlySpan<byte> cookieSecret, ReadOnlySpan<byte> hostId) =>
        Labels.CookieLabels.CookieValue.Mix(cookieSecret).Mix(hostId).Value[..Envelope.CookieValueLength].ToArray();

    /// <summary>The key that seals the cookie value for the owner of <paramref name="staticPublicKey"/> (the responder's).</summary>
    public static byte[] CookieKey(ReadOnlySpan<byte> staticPublicKey) =>
        Labels.CookieLabels.CookieKey.Mix(staticPublicKey).ToArray();

    /// <summary>Seals a cookie value (56 bytes out) bound to the mac of the message it answers.</summary>
    public static byte[] Seal(ReadOnlySpan<byte> cookieKey, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> macOfAnsweredMessage, ReadOnlySpan<byte> cookieValue)
    {
        var output = new byte[EncryptedLength];
        Aead.XEncrypt(cookieKey, nonce, macOfAnsweredMessage, cookieValue, output);
        return output;
    }

    /// <summary>Opens a cookie_encrypted field; false if forged, or bound to another message's mac.</summary>
    public static bool TryOpen(ReadOnlySpan<byte> cookieKey, ReadOnlySpan<byte> macOfSentMessage, ReadOnlySpan<byte> cookieEncrypted, Span<byte> cookieValue) =>
        cookieEncrypted.Length == EncryptedLength && cookieValue.Length == Envelope.CookieValueLength &&
        Aead.TryXDecrypt(cookieKey, macOfSentMessage, cookieEncrypted, cookieValue);
}
