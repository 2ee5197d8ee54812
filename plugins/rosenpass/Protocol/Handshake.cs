namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>How the responder seals one biscuit: the key and its slot, a fresh nonce, and the biscuit number.</summary>
internal sealed record BiscuitSeal(byte[] Key, int KeyIndex, byte[] Nonce, byte[] Number);

/// <summary>What the responder knows about the peer a handshake message names.</summary>
internal sealed record KnownPeer(int Handle, byte[] StaticPublicKey, byte[] Psk);

/// <summary>
/// The four handshake steps of upstream's protocol.rs, as pure functions of their inputs (keys,
/// KEMs, and the random values drawn by the caller), so the official vectors can drive them with
/// recorded KEM outputs and <see cref="CryptoServer"/> only keeps state. Step names follow upstream
/// (IHI = InitHello built by the initiator, IHR = processed by the responder, and so on).
/// Every failure throws <see cref="RosenpassProtocolException"/> before anything is returned, and no
/// input is changed, so a rejected message leaves the caller's state as it was.
/// </summary>
internal static class Handshake
{
    /// <summary>IHI1-IHI8: the initiator's InitHello and its chaining key afterwards.</summary>
    public static (InitHelloMessage Message, ChainingKey Ck) CreateInitHello(
        ProtocolVersion version, IKem staticKem, byte[] pidi, byte[] spki, byte[] spkr, byte[] psk, byte[] sidi, byte[] epki)
    {
        var ck = ChainingKey.Init(version, spkr);                 // IHI1
        ck.Mix(sidi).Mix(epki);                                   // IHI2-IHI4
        var (shk, sctr) = staticKem.Encapsulate(spkr);            // IHI5
        ck.MixKem(spkr, shk, sctr);
        Array.Clear(shk);
        var pidiCt = ck.EncryptAndMix(pidi);                      // IHI6
        ck.Mix(spki).Mix(psk);                                    // IHI7
        var auth = ck.EncryptAndMix([]);                          // IHI8
        return (new InitHelloMessage(sidi, epki, sctr, pidiCt, auth), ck);
    }

    /// <summary>IHR1-IHR8: the responder opens an InitHello; returns the peer it names and the chain.</summary>
    public static (KnownPeer Peer, byte[] Pidi, ChainingKey Ck) OpenInitHello(
        ProtocolVersion version, IKem staticKem, byte[] sskr, byte[] spkr, InitHelloMessage ih, Func<byte[], KnownPeer?> findPeer)
    {
        var ck = ChainingKey.Init(version, spkr);                 // IHR1
        ck.Mix(ih.Sidi).Mix(ih.Epki);                             // IHR4
        var shk = Decapsulate(staticKem, sskr, ih.Sctr);           // IHR5
        ck.MixKem(spkr, shk, ih.Sctr);
        Array.Clear(shk);
        var pidi = new byte[PeerId.Length];
        if (!ck.TryDecryptAndMix(ih.PidiCt, pidi))                // IHR6
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "InitHello: the initiator's peer id does not open.");
        }

        var peer = findPeer(pidi)
            ?? throw new RosenpassProtocolException(RosenpassError.UnknownPeer, "InitHello from a peer that is not configured.");
        ck.Mix(peer.StaticPublicKey).Mix(peer.Psk);               // IHR7
        if (!ck.TryDecryptAndMix(ih.Auth, []))                    // IHR8
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "InitHello: auth does not verify (wrong key or psk).");
        }

        return (peer, pidi, ck);
    }

    /// <summary>RHR1-RHR7: the responder's RespHello, carrying its state in a biscuit. <paramref name="ck"/> moves on.</summary>
    public static RespHelloMessage CreateRespHello(
        ProtocolVersion version, IKem staticKem, IKem ephemeralKem, ChainingKey ck, InitHelloMessage ih, byte[] pidi, byte[] spki,
        byte[] spkr, byte[] sidr, BiscuitSeal seal)
    {
        ck.Mix(sidr).Mix(ih.Sidi);                                // RHR3
        var (eshk, ecti) = ephemeralKem.Encapsulate(ih.Epki);     // RHR4
        ck.MixKem(ih.Epki, eshk, ecti);
        Array.Clear(eshk);
        var (sshk, scti) = staticKem.Encapsulate(spki);           // RHR5
        ck.MixKem(spki, sshk, scti);
        Array.Clear(sshk);
        var biscuit = Biscuit.Seal(                               // RHR6
            version, seal.Key, seal.KeyIndex, seal.Nonce, new BiscuitContents(pidi, seal.Number, ck.Value), spkr, ih.Sidi, sidr);
        ck.Mix(biscuit);
        var auth = ck.EncryptAndMix([]);                          // RHR7
        return new RespHelloMessage(sidr, ih.Sidi, ecti, scti, auth, biscuit);
    }

    /// <summary>
    /// RHI3-RHI7 and ICI3-ICI4: the initiator opens a RespHello with its handshake state and answers
    /// with InitConf; the returned chain is the final one (live keys, output key).
    /// </summary>
    public static (InitConfMessage Message, ChainingKey Ck) HandleRespHello(
        ProtocolVersion version, IKem staticKem, IKem ephemeralKem, ReadOnlySpan<byte> ckAfterInitHello, byte[] sidi,
        byte[] eski, byte[] epki, byte[] sski, byte[] spki, RespHelloMessage rh)
    {
        var ck = ChainingKey.Restore(version, ckAfterInitHello);
        ck.Mix(rh.Sidr).Mix(rh.Sidi);                             // RHI3
        var eshk = Decapsulate(ephemeralKem, eski, rh.Ecti);       // RHI4
        ck.MixKem(epki, eshk, rh.Ecti);
        Array.Clear(eshk);
        var sshk = Decapsulate(staticKem, sski, rh.Scti);          // RHI5
        ck.MixKem(spki, sshk, rh.Scti);
        Array.Clear(sshk);
        ck.Mix(rh.Biscuit);                                       // RHI6
        if (!ck.TryDecryptAndMix(rh.Auth, []))                    // RHI7
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "RespHello: auth does not verify.");
        }

        ck.Mix(sidi).Mix(rh.Sidr);                                // ICI3
        var auth = ck.EncryptAndMix([]);                          // ICI4
        return (new InitConfMessage(sidi, rh.Sidr, rh.Biscuit, auth), ck);
    }

    /// <summary>
    /// ICR1-ICR4: the responder restores its state from the biscuit and checks InitConf's auth.
    /// <paramref name="biscuitKeys"/> are the two key slots (null when a slot is empty). The caller
    /// still has to check the biscuit number against replays (ICR5) before using the result.
    /// </summary>
    public static (KnownPeer Peer, byte[] BiscuitNumber, ChainingKey Ck) OpenInitConf(
        ProtocolVersion version, byte[] spkr, byte[]?[] biscuitKeys, InitConfMessage ic, Func<byte[], KnownPeer?> findPeer)
    {
        var key = biscuitKeys[Biscuit.KeyIndex(ic.Biscuit)];
        if (key is null || !Biscuit.TryOpen(version, key, ic.Biscuit, spkr, ic.Sidi, ic.Sidr, out var contents))
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "InitConf: the biscuit does not open.");
        }

        var peer = findPeer(contents!.Pidi)
            ?? throw new RosenpassProtocolException(RosenpassError.UnknownPeer, "InitConf: the biscuit names no configured peer.");
        var ck = ChainingKey.Restore(version, contents.ChainingKey).Mix(ic.Biscuit); // ICR1
        _ = ck.EncryptAndMix([]);                                 // ICR2: RespHello's auth, re-derived
        ck.Mix(ic.Sidi).Mix(ic.Sidr);                             // ICR3
        if (!ck.TryDecryptAndMix(ic.Auth, []))                    // ICR4
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "InitConf: auth does not verify.");
        }

        return (peer, contents.BiscuitNumber, ck);
    }

    // Both KEMs reject implicitly, but a library error on a hostile ciphertext must still be a typed rejection.
    private static byte[] Decapsulate(IKem kem, byte[] secretKey, byte[] ciphertext)
    {
        try
        {
            return kem.Decapsulate(secretKey, ciphertext);
        }
        catch (Exception e) when (e is not RosenpassProtocolException)
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "A KEM ciphertext does not decapsulate.", e);
        }
    }
}
