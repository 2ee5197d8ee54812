using System.Buffers.Binary;
using System.Security.Cryptography;
using Modular.WireGuard.Crypto;

namespace Modular.WireGuard.Noise;

/// <summary>The local static key pair with the values derived from it once (mac1 and cookie keys, the responder's initial hash).</summary>
internal sealed class StaticIdentity
{
    public StaticIdentity(ReadOnlySpan<byte> privateKey)
    {
        // The secret lives only inside NSec's protected key memory; the clamped copy is wiped.
        Span<byte> clamped = stackalloc byte[32];
        privateKey[..32].CopyTo(clamped);
        Curve25519.Clamp(clamped);
        Key = Curve25519.ImportPrivateKey(clamped);
        clamped.Clear();
        Curve25519.ExportPublicKey(Key, PublicKey);
        NoiseProtocol.InitialHashFor(PublicKey, InitialHash);
    }

    /// <summary>The private key imported once into NSec; safe to share between threads (it is never disposed while the identity is reachable).</summary>
    public NSec.Cryptography.Key Key { get; }

    public byte[] PublicKey { get; } = new byte[32];

    /// <summary>HASH(HASH(ck0 || identifier) || our public key): where a received initiation starts.</summary>
    public byte[] InitialHash { get; } = new byte[32];
}

/// <summary>Where a peer's handshake stands.</summary>
internal enum HandshakeStage
{
    None,
    InitiationCreated,
    InitiationConsumed,
    ResponseCreated,
    ResponseConsumed,
}

/// <summary>
/// One peer's Noise IKpsk2 handshake state. All members are guarded by <see cref="Lock"/>.
/// </summary>
internal sealed class HandshakeState
{
    public HandshakeState(ReadOnlySpan<byte> remoteStatic)
    {
        remoteStatic.CopyTo(RemoteStatic);
        NoiseProtocol.InitialHashFor(RemoteStatic, InitiatorInitialHash);
    }

    public object Lock { get; } = new();

    public HandshakeStage Stage { get; set; }

    public byte[] Hash { get; } = new byte[32];

    public byte[] ChainingKey { get; } = new byte[32];

    public byte[] LocalEphemeral { get; } = new byte[32];

    public byte[] RemoteEphemeral { get; } = new byte[32];

    public byte[] RemoteStatic { get; } = new byte[32];

    /// <summary>DH(our static, their static); all zero when unusable (no private key, or a low-order peer key).</summary>
    public byte[] StaticStatic { get; } = new byte[32];

    public byte[] PresharedKey { get; } = new byte[32];

    /// <summary>HASH(HASH(ck0 || identifier) || their public key): where an initiation we send starts.</summary>
    public byte[] InitiatorInitialHash { get; } = new byte[32];

    /// <summary>The greatest TAI64N accepted from this peer (replay protection of initiations).</summary>
    public byte[] LastTimestamp { get; } = new byte[Tai64N.Size];

    /// <summary>TimeProvider timestamp of the last consumed initiation (flood guard); null before any.</summary>
    public long? LastInitiationConsumed { get; set; }

    public uint LocalIndex { get; set; }

    public uint RemoteIndex { get; set; }

    public void ComputeStaticStatic(StaticIdentity? local)
    {
        if (local is null || !Curve25519.SharedSecret(local.Key, RemoteStatic, StaticStatic))
        {
            StaticStatic.AsSpan().Clear();
        }
    }

    /// <summary>Forgets the ephemeral secrets and chaining state.</summary>
    public void Clear()
    {
        Stage = HandshakeStage.None;
        Hash.AsSpan().Clear();
        ChainingKey.AsSpan().Clear();
        LocalEphemeral.AsSpan().Clear();
        RemoteEphemeral.AsSpan().Clear();
        LocalIndex = 0;
        RemoteIndex = 0;
    }
}

/// <summary>Transport keys derived at the end of a handshake.</summary>
internal readonly record struct SessionKeys(byte[] Send, byte[] Receive, bool IsInitiator, uint LocalIndex, uint RemoteIndex);

/// <summary>
/// Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it: builds and consumes initiations
/// and responses (without mac1/mac2, which <see cref="CookieGenerator"/> and <see cref="CookieChecker"/> handle)
/// and derives the transport keys.
/// </summary>
internal static class NoiseProtocol
{
    public static ReadOnlySpan<byte> Construction => "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"u8;

    public static ReadOnlySpan<byte> Identifier => "WireGuard v1 zx2c4 Jason@zx2c4.com"u8;

    public static readonly byte[] InitialChainingKey = ComputeInitialChainingKey();

    public static readonly byte[] InitialHash = ComputeInitialHash();

    public static void InitialHashFor(ReadOnlySpan<byte> responderStatic, Span<byte> hash) => Blake2s.Hash(hash, InitialHash, responderStatic);

    /// <summary>
    /// Writes the initiation (fields up to mac1) into <paramref name="message"/>; mac1/mac2 are added afterwards.
    /// <paramref name="ephemeralPrivate"/> is for deterministic tests; empty: a fresh key.
    /// </summary>
    public static bool CreateInitiation(HandshakeState handshake, StaticIdentity local, uint senderIndex, ReadOnlySpan<byte> timestamp, Span<byte> message, ReadOnlySpan<byte> ephemeralPrivate = default)
    {
        if (message.Length < MessageLayout.InitiationSize || handshake.StaticStatic.AsSpan().IndexOfAnyExcept((byte)0) < 0)
        {
            return false;
        }

        Span<byte> hash = stackalloc byte[32];
        Span<byte> chainingKey = stackalloc byte[32];
        Span<byte> key = stackalloc byte[32];
        Span<byte> shared = stackalloc byte[32];
        Span<byte> ephemeral = stackalloc byte[32];
        try
        {
            InitialChainingKey.CopyTo(chainingKey);
            handshake.InitiatorInitialHash.CopyTo(hash);
            message[..MessageLayout.InitiationSize].Clear();
            message[0] = MessageLayout.TypeInitiation;
            BinaryPrimitives.WriteUInt32LittleEndian(message[MessageLayout.InitiationSender..], senderIndex);
            using var ephemeralKey = MixEphemeral(ephemeralPrivate, ephemeral, message.Slice(MessageLayout.InitiationEphemeral, 32), hash, chainingKey);

            if (!Curve25519.SharedSecret(ephemeralKey, handshake.RemoteStatic, shared))
            {
                return false;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey, key);
            var encryptedStatic = message.Slice(MessageLayout.InitiationStatic, 32 + Aead.TagSize);
            Aead.Seal(key, 0, local.PublicKey, hash, encryptedStatic);
            MixHash(hash, encryptedStatic);

            Blake2s.Kdf(chainingKey, handshake.StaticStatic, chainingKey, key);
            var encryptedTimestamp = message.Slice(MessageLayout.InitiationTimestamp, Tai64N.Size + Aead.TagSize);
            Aead.Seal(key, 0, timestamp[..Tai64N.Size], hash, encryptedTimestamp);
            MixHash(hash, encryptedTimestamp);

            hash.CopyTo(handshake.Hash);
            chainingKey.CopyTo(handshake.ChainingKey);
            ephemeral.CopyTo(handshake.LocalEphemeral);
            handshake.LocalIndex = senderIndex;
            handshake.Stage = HandshakeStage.InitiationCreated;
            return true;
        }
        finally
        {
            key.Clear();
            shared.Clear();
            ephemeral.Clear();
            chainingKey.Clear();
        }
    }

    /// <summary>
    /// Verifies and decrypts an initiation. <paramref name="findPeer"/> maps the decrypted static key to
    /// that peer's handshake state (null: unknown peer). On success the state holds the consumed
    /// initiation; replayed timestamps and initiations arriving faster than <paramref name="minimumInterval"/> are refused.
    /// </summary>
    public static HandshakeState? ConsumeInitiation(
        ReadOnlySpan<byte> message,
        StaticIdentity local,
        Func<ReadOnlyMemory<byte>, HandshakeState?> findPeer,
        TimeProvider time,
        TimeSpan minimumInterval)
    {
        if (message.Length != MessageLayout.InitiationSize || MessageLayout.ReadType(message) != MessageLayout.TypeInitiation)
        {
            return null;
        }

        Span<byte> hash = stackalloc byte[32];
        Span<byte> chainingKey = stackalloc byte[32];
        Span<byte> key = stackalloc byte[32];
        Span<byte> shared = stackalloc byte[32];
        Span<byte> timestamp = stackalloc byte[Tai64N.Size];
        var remoteStatic = new byte[32];
        try
        {
            InitialChainingKey.CopyTo(chainingKey);
            local.InitialHash.CopyTo(hash);
            var ephemeralPublic = message.Slice(MessageLayout.InitiationEphemeral, 32);
            MixHash(hash, ephemeralPublic);
            Blake2s.Kdf(chainingKey, ephemeralPublic, chainingKey);
            if (!Curve25519.SharedSecret(local.Key, ephemeralPublic, shared))
            {
                return null;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey, key);
            var encryptedStatic = message.Slice(MessageLayout.InitiationStatic, 32 + Aead.TagSize);
            if (!Aead.Open(key, 0, encryptedStatic, hash, remoteStatic))
            {
                return null;
            }

            MixHash(hash, encryptedStatic);
            var handshake = findPeer(remoteStatic);
            if (handshake is null)
            {
                return null;
            }

            lock (handshake.Lock)
            {
                if (handshake.StaticStatic.AsSpan().IndexOfAnyExcept((byte)0) < 0)
                {
                    return null;
                }

                Blake2s.Kdf(chainingKey, handshake.StaticStatic, chainingKey, key);
                var encryptedTimestamp = message.Slice(MessageLayout.InitiationTimestamp, Tai64N.Size + Aead.TagSize);
                if (!Aead.Open(key, 0, encryptedTimestamp, hash, timestamp))
                {
                    return null;
                }

                MixHash(hash, encryptedTimestamp);
                if (!Tai64N.IsAfter(timestamp, handshake.LastTimestamp))
                {
                    return null;
                }

                if (handshake.LastInitiationConsumed is { } last && time.GetElapsedTime(last) < minimumInterval)
                {
                    return null;
                }

                timestamp.CopyTo(handshake.LastTimestamp);
                handshake.LastInitiationConsumed = time.GetTimestamp();
                hash.CopyTo(handshake.Hash);
                chainingKey.CopyTo(handshake.ChainingKey);
                ephemeralPublic.CopyTo(handshake.RemoteEphemeral);
                handshake.RemoteIndex = BinaryPrimitives.ReadUInt32LittleEndian(message[MessageLayout.InitiationSender..]);
                handshake.Stage = HandshakeStage.InitiationConsumed;
                return handshake;
            }
        }
        finally
        {
            key.Clear();
            shared.Clear();
            chainingKey.Clear();
        }
    }

    /// <summary>
    /// The sender's ephemeral step of both handshake messages: a fresh key (or the given one, for deterministic
    /// tests) written as its public half into <paramref name="ephemeralPublic"/>, mixed into hash and chaining key.
    /// </summary>
    private static NSec.Cryptography.Key MixEphemeral(ReadOnlySpan<byte> given, Span<byte> ephemeral, Span<byte> ephemeralPublic, Span<byte> hash, Span<byte> chainingKey)
    {
        if (given.IsEmpty)
        {
            Curve25519.GeneratePrivateKey(ephemeral);
        }
        else
        {
            given.CopyTo(ephemeral);
        }

        var ephemeralKey = Curve25519.ImportPrivateKey(ephemeral);
        Curve25519.ExportPublicKey(ephemeralKey, ephemeralPublic);
        MixHash(hash, ephemeralPublic);
        Blake2s.Kdf(chainingKey, ephemeralPublic, chainingKey);
        return ephemeralKey;
    }

    /// <summary>Writes the response (fields up to mac1) to a consumed initiation. Caller holds the handshake lock.</summary>
    public static bool CreateResponse(HandshakeState handshake, uint senderIndex, Span<byte> message, ReadOnlySpan<byte> ephemeralPrivate = default)
    {
        if (handshake.Stage != HandshakeStage.InitiationConsumed || message.Length < MessageLayout.ResponseSize)
        {
            return false;
        }

        Span<byte> hash = stackalloc byte[32];
        Span<byte> chainingKey = stackalloc byte[32];
        Span<byte> key = stackalloc byte[32];
        Span<byte> tau = stackalloc byte[32];
        Span<byte> shared = stackalloc byte[32];
        Span<byte> ephemeral = stackalloc byte[32];
        try
        {
            handshake.Hash.CopyTo(hash);
            handshake.ChainingKey.CopyTo(chainingKey);
            message[..MessageLayout.ResponseSize].Clear();
            message[0] = MessageLayout.TypeResponse;
            BinaryPrimitives.WriteUInt32LittleEndian(message[MessageLayout.ResponseSender..], senderIndex);
            BinaryPrimitives.WriteUInt32LittleEndian(message[MessageLayout.ResponseReceiver..], handshake.RemoteIndex);
            using var ephemeralKey = MixEphemeral(ephemeralPrivate, ephemeral, message.Slice(MessageLayout.ResponseEphemeral, 32), hash, chainingKey);

            if (!Curve25519.SharedSecret(ephemeralKey, handshake.RemoteEphemeral, shared))
            {
                return false;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey);
            if (!Curve25519.SharedSecret(ephemeralKey, handshake.RemoteStatic, shared))
            {
                return false;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey);
            Blake2s.Kdf(chainingKey, handshake.PresharedKey, chainingKey, tau, key);
            MixHash(hash, tau);
            var encryptedEmpty = message.Slice(MessageLayout.ResponseEmpty, Aead.TagSize);
            Aead.Seal(key, 0, ReadOnlySpan<byte>.Empty, hash, encryptedEmpty);
            MixHash(hash, encryptedEmpty);

            hash.CopyTo(handshake.Hash);
            chainingKey.CopyTo(handshake.ChainingKey);
            handshake.LocalIndex = senderIndex;
            handshake.Stage = HandshakeStage.ResponseCreated;
            return true;
        }
        finally
        {
            key.Clear();
            tau.Clear();
            shared.Clear();
            ephemeral.Clear();
            chainingKey.Clear();
        }
    }

    /// <summary>Verifies a response to our initiation. Caller holds the handshake lock.</summary>
    public static bool ConsumeResponse(HandshakeState handshake, StaticIdentity local, ReadOnlySpan<byte> message)
    {
        if (message.Length != MessageLayout.ResponseSize || MessageLayout.ReadType(message) != MessageLayout.TypeResponse
            || handshake.Stage != HandshakeStage.InitiationCreated
            || BinaryPrimitives.ReadUInt32LittleEndian(message[MessageLayout.ResponseReceiver..]) != handshake.LocalIndex)
        {
            return false;
        }

        Span<byte> hash = stackalloc byte[32];
        Span<byte> chainingKey = stackalloc byte[32];
        Span<byte> key = stackalloc byte[32];
        Span<byte> tau = stackalloc byte[32];
        Span<byte> shared = stackalloc byte[32];
        try
        {
            handshake.Hash.CopyTo(hash);
            handshake.ChainingKey.CopyTo(chainingKey);
            var ephemeralPublic = message.Slice(MessageLayout.ResponseEphemeral, 32);
            MixHash(hash, ephemeralPublic);
            Blake2s.Kdf(chainingKey, ephemeralPublic, chainingKey);
            if (!Curve25519.SharedSecret(handshake.LocalEphemeral, ephemeralPublic, shared))
            {
                return false;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey);
            if (!Curve25519.SharedSecret(local.Key, ephemeralPublic, shared))
            {
                return false;
            }

            Blake2s.Kdf(chainingKey, shared, chainingKey);
            Blake2s.Kdf(chainingKey, handshake.PresharedKey, chainingKey, tau, key);
            MixHash(hash, tau);
            var encryptedEmpty = message.Slice(MessageLayout.ResponseEmpty, Aead.TagSize);
            if (!Aead.Open(key, 0, encryptedEmpty, hash, Span<byte>.Empty))
            {
                return false;
            }

            MixHash(hash, encryptedEmpty);
            hash.CopyTo(handshake.Hash);
            chainingKey.CopyTo(handshake.ChainingKey);
            ephemeralPublic.CopyTo(handshake.RemoteEphemeral);
            handshake.RemoteIndex = BinaryPrimitives.ReadUInt32LittleEndian(message[MessageLayout.ResponseSender..]);
            handshake.Stage = HandshakeStage.ResponseConsumed;
            return true;
        }
        finally
        {
            key.Clear();
            tau.Clear();
            shared.Clear();
            chainingKey.Clear();
        }
    }

    /// <summary>
    /// Derives the transport keys after <see cref="HandshakeStage.ResponseCreated"/> (responder) or
    /// <see cref="HandshakeStage.ResponseConsumed"/> (initiator), then clears the handshake. Caller holds the lock.
    /// </summary>
    public static SessionKeys? DeriveSessionKeys(HandshakeState handshake)
    {
        bool isInitiator;
        switch (handshake.Stage)
        {
            case HandshakeStage.ResponseConsumed:
                isInitiator = true;
                break;
            case HandshakeStage.ResponseCreated:
                isInitiator = false;
                break;
            default:
                return null;
        }

        var first = new byte[32];
        var second = new byte[32];
        Blake2s.Kdf(handshake.ChainingKey, ReadOnlySpan<byte>.Empty, first, second);
        var keys = isInitiator
            ? new SessionKeys(first, second, true, handshake.LocalIndex, handshake.RemoteIndex)
            : new SessionKeys(second, first, false, handshake.LocalIndex, handshake.RemoteIndex);
        handshake.Clear();
        return keys;
    }

    public static uint NewIndex()
    {
        Span<byte> bytes = stackalloc byte[4];
        RandomNumberGenerator.Fill(bytes);
        return BinaryPrimitives.ReadUInt32LittleEndian(bytes);
    }

    private static void MixHash(Span<byte> hash, ReadOnlySpan<byte> data) => Blake2s.Hash(hash, hash, data); // the digest reads its input before writing the output

    private static byte[] ComputeInitialChainingKey()
    {
        var ck = new byte[32];
        Blake2s.Hash(ck, Construction);
        return ck;
    }

    private static byte[] ComputeInitialHash()
    {
        var h = new byte[32];
        Blake2s.Hash(h, ComputeInitialChainingKey(), Identifier);
        return h;
    }
}
