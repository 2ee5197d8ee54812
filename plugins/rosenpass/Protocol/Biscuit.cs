namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The responder's biscuit: its handshake state (pidi, biscuit number, chaining key) sealed under
/// its own biscuit key and handed to the initiator, so the responder keeps no state between
/// RespHello and InitConf. Wire form: nonce(24) || XChaCha20-Poly1305(ct(76) || tag(16)) = 116 bytes,
/// AD = H(H(H(biscuit_ad, spkr), sidi), sidr), binding it to the responder and both session ids.
/// The top bit of nonce[0] says which of the two biscuit keys sealed it.
/// </summary>
internal static class Biscuit
{
    public const int NumberLength = 12;
    public const int PlaintextLength = PeerId.Length + NumberLength + KeyedHash.HashLength;
    public const int SealedLength = Aead.XNonceLength + PlaintextLength + Aead.TagLength;
    public const int SessionIdLength = 4;

    /// <summary>
    /// Seals a biscuit. <paramref name="nonce"/> is 24 fresh random bytes; its top bit is replaced by
    /// <paramref name="keyIndex"/> (0 or 1).
    /// </summary>
    public static byte[] Seal(
        ProtocolVersion version, ReadOnlySpan<byte> biscuitKey, int keyIndex, ReadOnlySpan<byte> nonce,
        BiscuitContents contents, ReadOnlySpan<byte> responderStaticPublicKey, ReadOnlySpan<byte> sidi, ReadOnlySpan<byte> sidr)
    {
        if (keyIndex is not (0 or 1))
        {
            throw new ArgumentOutOfRangeException(nameof(keyIndex), keyIndex, "A biscuit key index is 0 or 1.");
        }

        if (nonce.Length != Aead.XNonceLength)
        {
            throw new ArgumentException($"A biscuit nonce is {Aead.XNonceLength} bytes.", nameof(nonce));
        }

        Span<byte> n = stackalloc byte[Aead.XNonceLength];
        nonce.CopyTo(n);
        n[0] = (byte)((n[0] & 0x7f) | (keyIndex << 7));

        Span<byte> plaintext = stackalloc byte[PlaintextLength];
        contents.WriteTo(plaintext);
        var sealedBiscuit = new byte[SealedLength];
        try
        {
            Aead.XEncrypt(biscuitKey, n, AdditionalData(version, responderStaticPublicKey, sidi, sidr), plaintext, sealedBiscuit);
        }
        finally
        {
            plaintext.Clear();
        }

        return sealedBiscuit;
    }

    /// <summary>Which biscuit key (0 or 1) sealed <paramref name="sealedBiscuit"/>.</summary>
    public static int KeyIndex(ReadOnlySpan<byte> sealedBiscuit) => sealedBiscuit[0] >> 7;

    /// <summary>Opens a biscuit; false on a wrong length, wrong key, or any changed byte of it or its AD inputs.</summary>
    public static bool TryOpen(
        ProtocolVersion version, ReadOnlySpan<byte> biscuitKey, ReadOnlySpan<byte> sealedBiscuit,
        ReadOnlySpan<byte> responderStaticPublicKey, ReadOnlySpan<byte> sidi, ReadOnlySpan<byte> sidr,
        out BiscuitContents? contents)
    {
        contents = null;
        if (sealedBiscuit.Length != SealedLength)
        {
            return false;
        }

        Span<byte> plaintext = stackalloc byte[PlaintextLength];
        try
        {
            if (!Aead.TryXDecrypt(biscuitKey, AdditionalData(version, responderStaticPublicKey, sidi, sidr), sealedBiscuit, plaintext))
            {
                return false;
            }

            contents = BiscuitContents.ReadFrom(plaintext);
            return true;
        }
        finally
        {
            plaintext.Clear();
        }
    }

    /// <summary>The biscuit's AD: H(H(H(biscuit_ad, spkr), sidi), sidr).</summary>
    public static byte[] AdditionalData(ProtocolVersion version, ReadOnlySpan<byte> responderStaticPublicKey, ReadOnlySpan<byte> sidi, ReadOnlySpan<byte> sidr)
    {
        if (sidi.Length != SessionIdLength || sidr.Length != SessionIdLength)
        {
            throw new ArgumentException($"A session id is {SessionIdLength} bytes.");
        }

        return Labels.For(version).BiscuitAd.Mix(responderStaticPublicKey).Mix(sidi).Mix(sidr).ToArray();
    }
}

/// <summary>
/// What a biscuit carries: the initiator's peer id, the biscuit number (a 12-byte little-endian
/// counter the responder uses to reject replayed biscuits) and the chaining key after RHR5.
/// Holds a chaining key, so it is never printed.
/// </summary>
internal sealed class BiscuitContents
{
    public BiscuitContents(ReadOnlySpan<byte> pidi, ReadOnlySpan<byte> biscuitNumber, ReadOnlySpan<byte> chainingKey)
    {
        if (pidi.Length != PeerId.Length || biscuitNumber.Length != Biscuit.NumberLength || chainingKey.Length != KeyedHash.HashLength)
        {
            throw new ArgumentException("A biscuit holds pidi(32), biscuit_no(12) and ck(32).");
        }

        Pidi = pidi.ToArray();
        BiscuitNumber = biscuitNumber.ToArray();
        ChainingKey = chainingKey.ToArray();
    }

    public byte[] Pidi { get; }

    public byte[] BiscuitNumber { get; }

    public byte[] ChainingKey { get; }

    internal static BiscuitContents ReadFrom(ReadOnlySpan<byte> plaintext) => new(
        plaintext[..PeerId.Length],
        plaintext.Slice(PeerId.Length, Biscuit.NumberLength),
        plaintext[(PeerId.Length + Biscuit.NumberLength)..]);

    internal void WriteTo(Span<byte> plaintext)
    {
        Pidi.CopyTo(plaintext);
        BiscuitNumber.CopyTo(plaintext[PeerId.Length..]);
        ChainingKey.CopyTo(plaintext[(PeerId.Length + Biscuit.NumberLength)..]);
    }

    public override string ToString() => "BiscuitContents";
}
