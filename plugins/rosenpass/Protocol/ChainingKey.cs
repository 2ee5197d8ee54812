namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// The handshake's chaining key and the operations upstream's HandshakeState performs on it:
/// init(spkr), mix(d) = H(H(ck, mix), d), extract(label) = H(ck, label), encrypt_and_mix,
/// decrypt_and_mix and encaps_and_mix (here fed with a KEM's outputs, so the KEM stays outside).
/// Handshake AEADs use key H(ck, hs_enc), nonce 0^12 and empty AD: each key encrypts once,
/// because the ck changes with every mix. Not thread-safe: one handshake, one owner.
/// </summary>
internal sealed class ChainingKey
{
    private static readonly byte[] ZeroNonce = new byte[Aead.NonceLength];

    private readonly Labels _labels;
    private HashDomain _ck;

    private ChainingKey(Labels labels, HashDomain ck)
    {
        _labels = labels;
        _ck = ck;
    }

    /// <summary>The protocol version this chain hashes with.</summary>
    public ProtocolVersion Version => _labels.Version;

    /// <summary>The current chaining key (secret: used for the biscuit and the vectors' checks only).</summary>
    public ReadOnlySpan<byte> Value => _ck.Value;

    /// <summary>IHI1/IHR1: ck = H(ckinit, spkr), spkr being the responder's static public key.</summary>
    public static ChainingKey Init(ProtocolVersion version, ReadOnlySpan<byte> responderStaticPublicKey)
    {
        var labels = Labels.For(version);
        return new ChainingKey(labels, labels.CkInit.Mix(responderStaticPublicKey));
    }

    /// <summary>A chain restored from a biscuit (ICR1).</summary>
    public static ChainingKey Restore(ProtocolVersion version, ReadOnlySpan<byte> ck) =>
        new(Labels.For(version), HashDomain.FromValue(version, ck));

    /// <summary>mix(d): ck = H(H(ck, mix), d).</summary>
    public ChainingKey Mix(ReadOnlySpan<byte> data)
    {
        _ck = _ck.Mix(_labels.Mix.Value).Mix(data);
        return this;
    }

    /// <summary>extract(label): H(ck, label); the caller owns (and clears) the key.</summary>
    public byte[] Extract(HashDomain label) => _ck.Mix(label.Value).ToArray();

    /// <summary>encaps_and_mix with the KEM's outputs: mix(pk), mix(shared key), mix(ciphertext), in this order.</summary>
    public ChainingKey MixKem(ReadOnlySpan<byte> publicKey, ReadOnlySpan<byte> sharedKey, ReadOnlySpan<byte> ciphertext) =>
        Mix(publicKey).Mix(sharedKey).Mix(ciphertext);

    /// <summary>encrypt_and_mix(pt): ct||tag = AEAD(H(ck, hs_enc), 0^12, empty, pt); mix(ct||tag). Returns ct||tag.</summary>
    public byte[] EncryptAndMix(ReadOnlySpan<byte> plaintext)
    {
        var key = Extract(_labels.HandshakeEncryption);
        var ciphertext = new byte[plaintext.Length + Aead.TagLength];
        try
        {
            Aead.Encrypt(key, ZeroNonce, [], plaintext, ciphertext);
        }
        finally
        {
            Array.Clear(key);
        }

        Mix(ciphertext);
        return ciphertext;
    }

    /// <summary>
    /// decrypt_and_mix(ct||tag): opens it with H(ck, hs_enc) and mixes the ciphertext. On a bad tag
    /// returns false and leaves the chain unchanged, so a forged message cannot move it.
    /// </summary>
    public bool TryDecryptAndMix(ReadOnlySpan<byte> ciphertext, Span<byte> plaintext)
    {
        var key = Extract(_labels.HandshakeEncryption);
        try
        {
            if (!Aead.TryDecrypt(key, ZeroNonce, [], ciphertext, plaintext))
            {
                return false;
            }
        }
        finally
        {
            Array.Clear(key);
        }

        Mix(ciphertext);
        return true;
    }

    /// <summary>enter_live: the initiator's transmit key, H(ck, "initiator handshake encryption").</summary>
    public byte[] InitiatorTransmitKey() => Extract(_labels.InitiatorEncryption);

    /// <summary>enter_live: the responder's transmit key, H(ck, "responder handshake encryption").</summary>
    public byte[] ResponderTransmitKey() => Extract(_labels.ResponderEncryption);

    /// <summary>The output key: H(ck, separator); by default the WireGuard PSK separator.</summary>
    public byte[] OutputKey(HashDomain? separator = null) => Extract(separator ?? _labels.WireGuardPsk);

    /// <summary>Never shows the key.</summary>
    public override string ToString() => $"ChainingKey({Version})";
}
