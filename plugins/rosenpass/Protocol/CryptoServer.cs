using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Modular.Plugins.Rosenpass.Protocol;

/// <summary>
/// One Rosenpass endpoint (upstream's CryptoServer): our static McEliece key pair and our peers,
/// the initiator and responder sides of the handshake, and the timers (rekey, retransmission,
/// key expiry). It does no I/O: the caller sends what it returns and feeds it what arrives, and
/// calls <see cref="Poll"/> to learn what is due. The responder keeps no per-handshake state (its
/// state rides in the biscuit); the initiator keeps one handshake per peer.
/// A rejected message throws <see cref="RosenpassProtocolException"/> before any state changes.
/// All members are serialised by one lock; KEM work runs under it (McEliece decapsulation takes
/// milliseconds), so the caller should not call from a latency-critical thread.
/// Secrets (keys, PSKs, chaining keys) never leave except through <see cref="OutputKey"/>.
/// </summary>
public sealed class CryptoServer
{
    /// <summary>The largest datagram this protocol sends or accepts (upstream's MAX_MESSAGE_LEN); receive buffers need this much.</summary>
    public const int MaxMessageSize = 2500;

    /// <summary>The length of an output key (the WireGuard PSK).</summary>
    public const int OutputKeyLength = KeyedHash.HashLength;

    private const double EventGrace = 0.0025;

    /// <summary>The longest <see cref="PollAction.Sleep"/> <see cref="Poll"/> asks for; poll again then at the latest.</summary>
    private static readonly TimeSpan MaxSleep = TimeSpan.FromHours(1);

    private readonly Lock _gate = new();
    private readonly byte[] _sskm;
    private readonly byte[] _spkm;
    private readonly IKem _staticKem;
    private readonly IKem _ephemeralKem;
    private readonly TimeProvider _time;
    private readonly long _start;
    private readonly CryptoServerTimings _timings;
    private readonly Dictionary<ProtocolVersion, byte[]> _pidm = [];
    private readonly Dictionary<ProtocolVersion, byte[]> _ownMacKey = [];
    private readonly byte[] _ownCookieKey;
    private readonly SortedDictionary<int, Peer> _peers = [];
    private readonly Dictionary<string, int> _peerByPid = [];
    private readonly Dictionary<uint, int> _peerBySessionId = [];
    private readonly TimedSecret[] _biscuitKeys = [new(), new()];
    private readonly TimedSecret[] _cookieSecrets = [new(), new()];
    private readonly byte[] _biscuitCounter = new byte[Biscuit.NumberLength];
    private int _nextHandle;
    private int _pollOffset;

    /// <summary>A server with our static key pair (from <see cref="GenerateStaticKeyPair"/>) and a clock.</summary>
    public CryptoServer(byte[] staticSecretKey, byte[] staticPublicKey, TimeProvider time, CryptoServerTimings? timings = null)
        : this(staticSecretKey, staticPublicKey, time, timings, McElieceKem.Instance, MlKem512.Instance)
    {
        if (staticSecretKey.Length != McElieceKem.SecretKeySize || staticPublicKey.Length != McElieceKem.PublicKeySize)
        {
            throw new ArgumentException(
                $"A Rosenpass static key pair is a McEliece-460896 secret key ({McElieceKem.SecretKeySize} bytes) and public key ({McElieceKem.PublicKeySize} bytes).");
        }
    }

    /// <summary>For tests: any KEMs (e.g. ones replaying recorded outputs).</summary>
    internal CryptoServer(byte[] staticSecretKey, byte[] staticPublicKey, TimeProvider time, CryptoServerTimings? timings, IKem staticKem, IKem ephemeralKem)
    {
        ArgumentNullException.ThrowIfNull(staticSecretKey);
        ArgumentNullException.ThrowIfNull(staticPublicKey);
        ArgumentNullException.ThrowIfNull(time);
        _sskm = (byte[])staticSecretKey.Clone();
        _spkm = (byte[])staticPublicKey.Clone();
        _time = time;
        _start = time.GetTimestamp();
        _timings = timings ?? CryptoServerTimings.Default;
        _staticKem = staticKem;
        _ephemeralKem = ephemeralKem;
        foreach (var version in new[] { ProtocolVersion.V02, ProtocolVersion.V03 })
        {
            _pidm[version] = PeerId.Of(version, _spkm);
            _ownMacKey[version] = Envelope.MacKey(version, _spkm);
        }

        _ownCookieKey = CookieReply.CookieKey(_spkm);
        _biscuitCounter[0] = 1;
    }

    /// <summary>The hash version new peers get from <see cref="AddPeer(byte[], byte[])"/>: V02 (keyed BLAKE2b), upstream's default.</summary>
    public ProtocolVersion DefaultVersion { get; init; } = ProtocolVersion.V02;

    /// <summary>Where session ids, nonces, biscuit keys, cookie secrets and values come from; tests replace it to replay the vectors.</summary>
    internal Func<int, byte[]> RandomSource { get; set; } = RandomNumberGenerator.GetBytes;

    /// <summary>Our static public key.</summary>
    public ReadOnlySpan<byte> StaticPublicKey => _spkm;

    private double Now => _time.GetElapsedTime(_start).TotalSeconds;

    /// <summary>A fresh Classic McEliece-460896 key pair (takes seconds: make it once and keep it, the secret in a 0600 file).</summary>
    public static (byte[] Secret, byte[] Public) GenerateStaticKeyPair()
    {
        var (secret, pub) = McElieceKem.Instance.GenerateKeyPair();
        return (secret, pub);
    }

    /// <summary>Adds a peer by its static public key, with an optional 32-byte pre-shared key mixed into every exchange; returns its handle.</summary>
    public int AddPeer(byte[] peerPublicKey, byte[]? presharedKey) => AddPeer(peerPublicKey, presharedKey, DefaultVersion);

    /// <summary>Adds a peer that uses hash version <paramref name="version"/> (both sides must agree).</summary>
    public int AddPeer(byte[] peerPublicKey, byte[]? presharedKey, ProtocolVersion version)
    {
        ArgumentNullException.ThrowIfNull(peerPublicKey);
        if (peerPublicKey.Length != _staticKem.PublicKeyLength)
        {
            throw new ArgumentException($"A peer's static public key is {_staticKem.PublicKeyLength} bytes.", nameof(peerPublicKey));
        }

        if (presharedKey is not null && presharedKey.Length != KeyedHash.KeyLength)
        {
            throw new ArgumentException($"A Rosenpass pre-shared key is {KeyedHash.KeyLength} bytes.", nameof(presharedKey));
        }

        var pid = PeerId.Of(version, peerPublicKey);
        var peer = new Peer
        {
            StaticPublicKey = (byte[])peerPublicKey.Clone(),
            Psk = presharedKey is null ? new byte[KeyedHash.KeyLength] : (byte[])presharedKey.Clone(),
            Version = version,
            Pid = pid,
            MacKey = Envelope.MacKey(version, peerPublicKey),
            CookieKey = CookieReply.CookieKey(peerPublicKey),
        };
        lock (_gate)
        {
            if (_peerByPid.ContainsKey(Convert.ToHexString(pid)))
            {
                throw new ArgumentException("This peer is already added.", nameof(peerPublicKey));
            }

            peer.Handle = _nextHandle++;
            _peers.Add(peer.Handle, peer);
            _peerByPid.Add(Convert.ToHexString(pid), peer.Handle);
            return peer.Handle;
        }
    }

    /// <summary>Forgets a peer, its handshake and its keys.</summary>
    public void RemovePeer(int peer)
    {
        lock (_gate)
        {
            if (!_peers.Remove(peer, out var p))
            {
                return;
            }

            _peerByPid.Remove(Convert.ToHexString(p.Pid));
            foreach (var sid in _peerBySessionId.Where(e => e.Value == peer).Select(e => e.Key).ToList())
            {
                _peerBySessionId.Remove(sid);
            }

            p.Handshake?.Erase();
            p.Session?.Erase();
            Array.Clear(p.Psk);
        }
    }

    /// <summary>Starts a handshake with <paramref name="peer"/> (replacing any unfinished one): writes an InitHello; returns its length.</summary>
    public int InitiateHandshake(int peer, Span<byte> output)
    {
        lock (_gate)
        {
            var p = GetPeer(peer);
            if (output.Length < Wire.InitHelloLength)
            {
                throw new ArgumentException($"An InitHello needs a {Wire.InitHelloLength}-byte buffer.", nameof(output));
            }

            var sidi = NewSessionId();
            var (eski, epki) = _ephemeralKem.GenerateKeyPair();
            var (ih, ck) = Handshake.CreateInitHello(p.Version, _staticKem, _pidm[p.Version], _spkm, p.StaticPublicKey, p.Psk, sidi, epki);
            TakeHandshake(p);
            var hs = new InitiatorHandshake
            {
                CreatedAt = Now,
                Sidi = sidi,
                Eski = eski,
                Epki = epki,
                Ck = ck.Value.ToArray(),
                CookieValue = RandomSource(Envelope.CookieValueLength),
            };
            p.Handshake = hs;
            p.InitiationRequested = false;
            _peerBySessionId[SessionKey(sidi)] = p.Handle;
            var length = ih.WriteTo(output);
            Seal(p, output[..length]);
            StoreForRetransmission(hs, output[..length]);
            return length;
        }
    }

    /// <summary>Writes the peer's last handshake message again (with a fresh cookie); returns its length.</summary>
    public int RetransmitHandshake(int peer, Span<byte> output)
    {
        lock (_gate)
        {
            var hs = GetPeer(peer).Handshake;
            if (hs?.TxBuffer is null)
            {
                throw new InvalidOperationException("No handshake in progress with this peer.");
            }

            hs.TxBuffer.CopyTo(output);
            var message = output[..hs.TxBuffer.Length];
            Envelope.WriteCookie(hs.CookieValue, message);
            return message.Length;
        }
    }

    /// <summary>
    /// Processes one received datagram; writes the response (if any) into <paramref name="output"/>
    /// (<see cref="MaxMessageSize"/> bytes suffice). Throws <see cref="RosenpassProtocolException"/>
    /// for anything malformed, forged, replayed or unexpected, leaving every state as it was.
    /// </summary>
    public HandleResult HandleMessage(ReadOnlySpan<byte> input, Span<byte> output)
    {
        lock (_gate)
        {
            return Wire.ReadType(input) switch
            {
                MessageType.InitHello => HandleInitHello(input, output),
                MessageType.RespHello => HandleRespHello(input, output),
                MessageType.InitConf => HandleInitConf(input, output),
                MessageType.EmptyData => HandleEmptyData(input),
                MessageType.CookieReply => HandleCookieReply(input),
                _ => throw new RosenpassProtocolException(RosenpassError.UnknownMessageType, "Unknown Rosenpass message type."),
            };
        }
    }

    /// <summary>
    /// <see cref="HandleMessage"/> for a responder under load (upstream's cookie DoS mitigation):
    /// an InitHello is processed only with a valid cookie for <paramref name="hostId"/> (the sender's
    /// address bytes); without one the answer is a CookieReply, which costs us no KEM work. InitConf
    /// is processed as usual (the biscuit already proves a round trip); other types are refused.
    /// </summary>
    public HandleResult HandleMessageUnderLoad(ReadOnlySpan<byte> input, Span<byte> output, ReadOnlySpan<byte> hostId)
    {
        lock (_gate)
        {
            var type = Wire.ReadType(input);
            if (type == MessageType.InitConf)
            {
                return HandleInitConf(input, output);
            }

            if (type != MessageType.InitHello)
            {
                throw new RosenpassProtocolException(RosenpassError.NotProcessedUnderLoad, $"A {type} is not processed under load.");
            }

            _ = MacVersion(input);
            var active = ActiveSecret(_cookieSecrets, _timings.CookieSecretEpoch.TotalSeconds, Envelope.MacLength, out _);
            foreach (var secret in LiveSecrets(_cookieSecrets, _timings.CookieSecretEpoch.TotalSeconds))
            {
                if (Envelope.VerifyCookie(CookieReply.CookieValue(secret, hostId), input))
                {
                    return HandleInitHello(input, output);
                }
            }

            var ih = InitHelloMessage.Parse(input);
            var encrypted = CookieReply.Seal(
                _ownCookieKey, RandomSource(Aead.XNonceLength), Wire.MacOf(input), CookieReply.CookieValue(active, hostId));
            return new HandleResult(null, new CookieReplyMessage(ih.Sidi, encrypted).WriteTo(output));
        }
    }

    /// <summary>The output key (the WireGuard PSK) of the last completed exchange with <paramref name="peer"/>.</summary>
    public byte[] OutputKey(int peer)
    {
        lock (_gate)
        {
            var session = GetPeer(peer).Session ?? throw new InvalidOperationException("No completed exchange with this peer (or its key expired).");
            return (byte[])session.Osk.Clone();
        }
    }

    /// <summary>Whether an exchange with <paramref name="peer"/> completed and its key has not expired.</summary>
    public bool HasOutputKey(int peer)
    {
        lock (_gate)
        {
            return GetPeer(peer).Session is not null;
        }
    }

    /// <summary>
    /// What is due now, one action per call (call again until it says Sleep): a new exchange
    /// (rekey), a retransmission, or a key to delete; old handshakes, biscuit keys and cookie
    /// secrets are dropped silently on the way. Peers are served round-robin.
    /// </summary>
    public PollResult Poll()
    {
        lock (_gate)
        {
            var now = Now;
            var wait = double.PositiveInfinity;
            foreach (var slots in new[] { (_biscuitKeys, _timings.BiscuitEpoch.TotalSeconds), (_cookieSecrets, _timings.CookieSecretEpoch.TotalSeconds) })
            {
                foreach (var slot in slots.Item1.Where(s => s.Value is not null))
                {
                    var left = slot.CreatedAt + (2 * slots.Item2) - now;
                    if (left <= EventGrace)
                    {
                        slot.Erase();
                    }
                    else
                    {
                        wait = Math.Min(wait, left);
                    }
                }
            }

            var ordered = _peers.Values.Where(p => p.Handle >= _pollOffset).Concat(_peers.Values.Where(p => p.Handle < _pollOffset)).ToList();
            foreach (var p in ordered)
            {
                var result = PollPeer(p, now, ref wait);
                if (result is { } due)
                {
                    _pollOffset = p.Handle + 1;
                    return due;
                }
            }

            _pollOffset = 0;

            // Nothing scheduled (no peers): still a finite sleep, so callers can pass it to Task.Delay.
            var delay = TimeSpan.FromSeconds(Math.Clamp(wait, 0, MaxSleep.TotalSeconds));
            return PollResult.Sleep(_time.GetUtcNow() + delay) with { Wait = delay };
        }
    }

    private PollResult? PollPeer(Peer p, double now, ref double wait)
    {
        var reject = _timings.RejectAfterTime.TotalSeconds;
        if (p.Handshake is { } old && old.CreatedAt + reject - now <= EventGrace)
        {
            TakeHandshake(p);
        }

        if (p.Session is { } dying && dying.CreatedAt + reject - now <= EventGrace)
        {
            TakeSession(p);
            return PollResult.DeleteKey(p.Handle);
        }

        var initiation = Math.Max(
            p.InitiationRequested ? double.PositiveInfinity : 0,
            Math.Max(
                p.Session is { } s ? s.CreatedAt + (s.Initiator ? _timings.RekeyAfterTimeInitiator : _timings.RekeyAfterTimeResponder).TotalSeconds - now : 0,
                p.Handshake is { } h ? h.CreatedAt + reject - now : 0));
        if (initiation <= EventGrace)
        {
            p.InitiationRequested = true;
            return PollResult.SendInitiation(p.Handle);
        }

        wait = Math.Min(wait, initiation);
        if (p.Session is { } live)
        {
            wait = Math.Min(wait, live.CreatedAt + reject - now);
        }

        if (p.Handshake is { } hs)
        {
            wait = Math.Min(wait, hs.CreatedAt + reject - now);
            if (hs.RetryAt - now <= EventGrace)
            {
                RegisterRetransmission(hs);
                return PollResult.SendRetransmission(p.Handle);
            }

            wait = Math.Min(wait, hs.RetryAt - now);
        }

        if (p.InitConfResponse is { } known)
        {
            var left = known.ReceivedAt + _timings.RekeyAfterTimeResponder.TotalSeconds - now;
            if (left <= EventGrace)
            {
                p.InitConfResponse = null;
            }
            else
            {
                wait = Math.Min(wait, left);
            }
        }

        return null;
    }

    // IHR + RHR: answer an InitHello with a RespHello; nothing is stored but the biscuit counter.
    private HandleResult HandleInitHello(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var ih = InitHelloMessage.Parse(input);
        var version = MacVersion(input);
        var (known, pidi, ck) = Handshake.OpenInitHello(version, _staticKem, _sskm, _spkm, ih, FindPeer(version));
        var peer = _peers[known.Handle];
        var key = ActiveSecret(_biscuitKeys, _timings.BiscuitEpoch.TotalSeconds, Aead.KeyLength, out var keyIndex);
        var seal = new BiscuitSeal(key, keyIndex, RandomSource(Aead.XNonceLength), (byte[])_biscuitCounter.Clone());
        var rh = Handshake.CreateRespHello(version, _staticKem, _ephemeralKem, ck, ih, pidi, peer.StaticPublicKey, _spkm, RandomSource(Wire.SessionIdLength), seal);
        Increment(_biscuitCounter);
        var length = rh.WriteTo(output);
        Seal(peer, output[..length]);
        return new HandleResult(null, length);
    }

    // RHI + ICI: the initiator completes the exchange and answers with InitConf (kept for retransmission).
    private HandleResult HandleRespHello(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var rh = RespHelloMessage.Parse(input);
        var peer = PeerBySessionId(rh.Sidi);
        var hs = peer.Handshake;
        if (hs is null || !hs.Sidi.AsSpan().SequenceEqual(rh.Sidi))
        {
            throw new RosenpassProtocolException(RosenpassError.UnknownSession, "RespHello for no handshake of ours.");
        }

        if (hs.Next != MessageType.RespHello)
        {
            throw new RosenpassProtocolException(RosenpassError.UnexpectedMessage, "RespHello, but the handshake already waits for EmptyData.");
        }

        CheckMac(peer, input);
        var (ic, ck) = Handshake.HandleRespHello(peer.Version, _staticKem, _ephemeralKem, hs.Ck, hs.Sidi, hs.Eski, hs.Epki, _sskm, _spkm, rh);
        if (output.Length < Wire.InitConfLength)
        {
            throw new ArgumentException($"An InitConf needs a {Wire.InitConfLength}-byte buffer.", nameof(output));
        }

        EnterLive(peer, ck, initiator: true, sidm: hs.Sidi, sidt: rh.Sidr);
        hs.Next = MessageType.EmptyData;
        Array.Clear(hs.Ck);
        Array.Clear(hs.Eski);
        var length = ic.WriteTo(output);
        Seal(peer, output[..length]);
        StoreForRetransmission(hs, output[..length]);
        return new HandleResult(peer.Handle, length);
    }

    // ICR: the responder restores its state from the biscuit, completes, and confirms with EmptyData.
    private HandleResult HandleInitConf(ReadOnlySpan<byte> input, Span<byte> output)
    {
        var ic = InitConfMessage.Parse(input);
        foreach (var candidate in _peers.Values)
        {
            // A retransmitted InitConf (our EmptyData got lost) gets the same answer again, not a new exchange.
            if (candidate.InitConfResponse is { } known && CryptographicOperations.FixedTimeEquals(known.Request, input))
            {
                known.Response.CopyTo(output);
                return new HandleResult(null, known.Response.Length);
            }
        }

        var version = MacVersion(input);
        var (found, biscuitNumber, ck) = Handshake.OpenInitConf(version, _spkm, OpenableSecrets(_biscuitKeys, _timings.BiscuitEpoch.TotalSeconds), ic, FindPeer(version));
        var peer = _peers[found.Handle];
        if (CompareLittleEndian(biscuitNumber, peer.BiscuitUsed) <= 0)
        {
            throw new RosenpassProtocolException(RosenpassError.Replayed, "InitConf with an outdated biscuit (replayed).");
        }

        if (_peerBySessionId.TryGetValue(SessionKey(ic.Sidr), out var owner) && owner != peer.Handle)
        {
            throw new RosenpassProtocolException(RosenpassError.UnexpectedMessage, "InitConf: its session id is taken by another peer.");
        }

        if (output.Length < Wire.EmptyDataLength)
        {
            throw new ArgumentException($"An EmptyData needs a {Wire.EmptyDataLength}-byte buffer.", nameof(output));
        }

        peer.BiscuitUsed = biscuitNumber;
        var session = EnterLive(peer, ck, initiator: false, sidm: ic.Sidr, sidt: ic.Sidi);
        TakeHandshake(peer);
        var counter = session.TxNm++;
        var length = new EmptyDataMessage(ic.Sidi, counter, EmptyData.Auth(session.TxKm, counter)).WriteTo(output);
        Seal(peer, output[..length]);
        peer.InitConfResponse = new KnownResponse(Now, input.ToArray(), output[..length].ToArray());
        return new HandleResult(peer.Handle, length);
    }

    // The initiator's proof that the responder went live: stop retransmitting InitConf.
    private HandleResult HandleEmptyData(ReadOnlySpan<byte> input)
    {
        var ed = EmptyDataMessage.Parse(input);
        var peer = PeerBySessionId(ed.Sid);
        var hs = peer.Handshake;
        if (hs is null || !hs.Sidi.AsSpan().SequenceEqual(ed.Sid))
        {
            throw new RosenpassProtocolException(RosenpassError.UnknownSession, "EmptyData for no handshake of ours.");
        }

        CheckMac(peer, input);
        var session = peer.Session;
        if (hs.Next != MessageType.EmptyData || session is null)
        {
            throw new RosenpassProtocolException(RosenpassError.UnexpectedMessage, "EmptyData before the exchange completed.");
        }

        if (ed.Counter < session.TxNt)
        {
            throw new RosenpassProtocolException(RosenpassError.Replayed, "EmptyData with a stale counter.");
        }

        if (!EmptyData.VerifyAuth(session.TxKt, ed.Counter, ed.Auth))
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "EmptyData: auth does not verify.");
        }

        session.TxNt = ed.Counter;
        TakeHandshake(peer);
        return new HandleResult(null, 0);
    }

    // The responder is under load: keep its cookie value and retransmit at once with the cookie.
    private HandleResult HandleCookieReply(ReadOnlySpan<byte> input)
    {
        var cr = CookieReplyMessage.Parse(input);
        var peer = PeerBySessionId(cr.Sid);
        var hs = peer.Handshake;
        if (hs?.TxBuffer is null || !hs.Sidi.AsSpan().SequenceEqual(cr.Sid))
        {
            throw new RosenpassProtocolException(RosenpassError.UnknownSession, "CookieReply for no message of ours.");
        }

        var value = new byte[Envelope.CookieValueLength];
        if (!CookieReply.TryOpen(peer.CookieKey, Wire.MacOf(hs.TxBuffer), cr.CookieEncrypted, value))
        {
            throw new RosenpassProtocolException(RosenpassError.AuthenticationFailed, "CookieReply does not open for our last message.");
        }

        hs.CookieValue = value;
        hs.RetryAt = Now;
        hs.TxCount++;
        return new HandleResult(null, 0);
    }

    private Session EnterLive(Peer peer, ChainingKey ck, bool initiator, byte[] sidm, byte[] sidt)
    {
        var txki = ck.InitiatorTransmitKey();
        var txkr = ck.ResponderTransmitKey();
        var session = new Session
        {
            CreatedAt = Now,
            Initiator = initiator,
            Sidm = sidm,
            Sidt = sidt,
            TxKm = initiator ? txki : txkr,
            TxKt = initiator ? txkr : txki,
            Osk = ck.OutputKey(),
        };
        TakeSession(peer);
        peer.Session = session;
        _peerBySessionId[SessionKey(sidm)] = peer.Handle;
        return session;
    }

    private void TakeHandshake(Peer peer)
    {
        if (peer.Handshake is { } hs)
        {
            peer.Handshake = null;
            UnregisterIfVacant(peer, hs.Sidi);
            hs.Erase();
        }
    }

    private void TakeSession(Peer peer)
    {
        if (peer.Session is { } session)
        {
            peer.Session = null;
            UnregisterIfVacant(peer, session.Sidm);
            session.Erase();
        }
    }

    private void UnregisterIfVacant(Peer peer, byte[] sid)
    {
        var stillUsed = (peer.Handshake?.Sidi.AsSpan().SequenceEqual(sid) ?? false) || (peer.Session?.Sidm.AsSpan().SequenceEqual(sid) ?? false);
        var key = SessionKey(sid);
        if (!stillUsed && _peerBySessionId.TryGetValue(key, out var owner) && owner == peer.Handle)
        {
            _peerBySessionId.Remove(key);
        }
    }

    private void StoreForRetransmission(InitiatorHandshake hs, ReadOnlySpan<byte> message)
    {
        hs.TxBuffer = message.ToArray();
        hs.TxCount = 0;
        RegisterRetransmission(hs);
    }

    // Upstream's schedule: begin * 2^min(log2(end/begin), n) * 0.5 * (1 + U[0,1)).
    private void RegisterRetransmission(InitiatorHandshake hs)
    {
        var begin = _timings.RetransmitDelayBegin.TotalSeconds;
        var end = _timings.RetransmitDelayEnd.TotalSeconds;
        var delay = begin * Math.Pow(2, Math.Min(Math.Log2(end / begin), hs.TxCount)) * 0.5 * (1 + Random.Shared.NextDouble());
        hs.RetryAt = Now + delay;
        hs.TxCount++;
    }

    // mac to the recipient's static key; the cookie while we run an initiator handshake with it (upstream seals it then).
    private static void Seal(Peer peer, Span<byte> message)
    {
        Envelope.WriteMac(peer.Version, peer.MacKey, message);
        if (peer.Handshake is { } hs)
        {
            Envelope.WriteCookie(hs.CookieValue, message);
        }
    }

    private void CheckMac(Peer peer, ReadOnlySpan<byte> message)
    {
        if (!Envelope.VerifyMac(peer.Version, _ownMacKey[peer.Version], message))
        {
            throw new RosenpassProtocolException(RosenpassError.BadMac, "The message's mac does not verify.");
        }
    }

    // The responder learns the sender's hash version from the mac: SHAKE256 first, as upstream.
    private ProtocolVersion MacVersion(ReadOnlySpan<byte> message)
    {
        foreach (var version in new[] { ProtocolVersion.V03, ProtocolVersion.V02 })
        {
            if (Envelope.VerifyMac(version, _ownMacKey[version], message))
            {
                return version;
            }
        }

        throw new RosenpassProtocolException(RosenpassError.BadMac, "The message's mac does not verify.");
    }

    private Func<byte[], KnownPeer?> FindPeer(ProtocolVersion version) => pid =>
        _peerByPid.TryGetValue(Convert.ToHexString(pid), out var handle) && _peers[handle] is { } p && p.Version == version
            ? new KnownPeer(p.Handle, p.StaticPublicKey, p.Psk)
            : null;

    private Peer GetPeer(int peer) =>
        _peers.TryGetValue(peer, out var p) ? p : throw new ArgumentException($"No peer with handle {peer}.", nameof(peer));

    private Peer PeerBySessionId(byte[] sid) =>
        _peerBySessionId.TryGetValue(SessionKey(sid), out var handle) && _peers.TryGetValue(handle, out var p)
            ? p
            : throw new RosenpassProtocolException(RosenpassError.UnknownSession, "A message for an unknown session.");

    private byte[] NewSessionId()
    {
        while (true)
        {
            var sid = RandomSource(Wire.SessionIdLength);
            if (!_peerBySessionId.ContainsKey(SessionKey(sid)))
            {
                return sid;
            }
        }
    }

    private static uint SessionKey(ReadOnlySpan<byte> sid) => BinaryPrimitives.ReadUInt32LittleEndian(sid);

    // Upstream's choice: the youngest secret if it is still in its first epoch (slot 0 on a tie),
    // else a fresh one in the oldest slot (slot 1 on a tie, so a new server's first biscuit key is slot 1).
    private byte[] ActiveSecret(TimedSecret[] slots, double epoch, int length, out int index)
    {
        var now = Now;
        double Age(int i) => slots[i].Value is null ? double.NegativeInfinity : slots[i].CreatedAt;
        index = Age(0) >= Age(1) ? 0 : 1;
        if (slots[index].Value is not null && now < slots[index].CreatedAt + epoch)
        {
            return slots[index].Value!;
        }

        index = Age(0) < Age(1) ? 0 : 1;
        slots[index].Erase();
        slots[index].Value = RandomSource(length);
        slots[index].CreatedAt = now;
        return slots[index].Value!;
    }

    // Secrets still accepted (active or retired, not yet erased), newest first.
    private List<byte[]> LiveSecrets(TimedSecret[] slots, double epoch)
    {
        var now = Now;
        return slots.Where(s => s.Value is not null && now < s.CreatedAt + (2 * epoch)).OrderByDescending(s => s.CreatedAt).Select(s => s.Value!).ToList();
    }

    private byte[]?[] OpenableSecrets(TimedSecret[] slots, double epoch)
    {
        var now = Now;
        return slots.Select(s => s.Value is not null && now < s.CreatedAt + (2 * epoch) ? s.Value : null).ToArray();
    }

    private static void Increment(byte[] littleEndian)
    {
        for (var i = 0; i < littleEndian.Length && ++littleEndian[i] == 0; i++)
        {
        }
    }

    private static int CompareLittleEndian(byte[] a, byte[] b)
    {
        for (var i = a.Length - 1; i >= 0; i--)
        {
            if (a[i] != b[i])
            {
                return a[i].CompareTo(b[i]);
            }
        }

        return 0;
    }

    private sealed class Peer
    {
        public int Handle { get; set; }

        public required byte[] StaticPublicKey { get; init; }

        public required byte[] Psk { get; init; }

        public required ProtocolVersion Version { get; init; }

        public required byte[] Pid { get; init; }

        /// <summary>H(mac, spkt): the mac key of messages to this peer.</summary>
        public required byte[] MacKey { get; init; }

        /// <summary>H(cookie-key, spkt): opens this peer's CookieReplies.</summary>
        public required byte[] CookieKey { get; init; }

        /// <summary>The highest biscuit number accepted from this peer (replay protection, ICR5).</summary>
        public byte[] BiscuitUsed { get; set; } = new byte[Biscuit.NumberLength];

        public InitiatorHandshake? Handshake { get; set; }

        public Session? Session { get; set; }

        public KnownResponse? InitConfResponse { get; set; }

        public bool InitiationRequested { get; set; }
    }

    private sealed class InitiatorHandshake
    {
        public double CreatedAt { get; init; }

        public MessageType Next { get; set; } = MessageType.RespHello;

        public required byte[] Sidi { get; init; }

        public required byte[] Eski { get; init; }

        public required byte[] Epki { get; init; }

        /// <summary>The chaining key after InitHello (cleared once RespHello is processed).</summary>
        public required byte[] Ck { get; init; }

        /// <summary>Random until a CookieReply gives the responder's; written into every message to the peer.</summary>
        public required byte[] CookieValue { get; set; }

        public byte[]? TxBuffer { get; set; }

        public double RetryAt { get; set; }

        public int TxCount { get; set; }

        public void Erase()
        {
            Array.Clear(Eski);
            Array.Clear(Ck);
        }
    }

    private sealed class Session
    {
        public double CreatedAt { get; init; }

        public bool Initiator { get; init; }

        public required byte[] Sidm { get; init; }

        public required byte[] Sidt { get; init; }

        public required byte[] TxKm { get; init; }

        public required byte[] TxKt { get; init; }

        public ulong TxNm { get; set; }

        public ulong TxNt { get; set; }

        public required byte[] Osk { get; init; }

        public void Erase()
        {
            Array.Clear(TxKm);
            Array.Clear(TxKt);
            Array.Clear(Osk);
        }
    }

    private sealed record KnownResponse(double ReceivedAt, byte[] Request, byte[] Response);

    private sealed class TimedSecret
    {
        public byte[]? Value { get; set; }

        public double CreatedAt { get; set; }

        public void Erase()
        {
            if (Value is not null)
            {
                Array.Clear(Value);
            }

            Value = null;
        }
    }
}
