using System.Buffers;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// One remote peer inside <see cref="WgDevice"/>: its handshake, its current/previous/next
/// keypairs, staged packets, endpoint, counters and the protocol timers.
/// </summary>
internal sealed class Peer : IDisposable
{
    private readonly WgDevice _device;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Lock _keypairLock = new();
    private readonly Queue<(byte[] Buffer, int Length)> _staged = new();
    private readonly byte[] _keepaliveBuffer = new byte[MessageLayout.TransportMinSize];
    private Keypair? _current;
    private Keypair? _previous;
    private Keypair? _next;
    // Swapped as a whole (a 24-byte struct is not written atomically); a new box only when the endpoint changes.
    private volatile StrongBox<WgEndpoint> _endpoint = new(default);
    private long _rxBytes;
    private long _txBytes;
    private long _lastHandshakeUnixTicks;
    private long? _lastInitiationSent;
    private int _handshakeAttempts;
    private bool _needAnotherKeepalive;
    private bool _sentLastMinuteHandshake;
    private volatile bool _running;
    private long _persistentKeepaliveTicks;

    public Peer(WgDevice device, WgKey publicKey, TimeProvider time, ILogger logger)
    {
        _device = device;
        _time = time;
        _logger = logger;
        PublicKey = publicKey;
        Span<byte> key = stackalloc byte[32];
        publicKey.CopyTo(key);
        Handshake = new HandshakeState(key);
        Cookies = new CookieGenerator(key, time);
        RetransmitHandshake = new PeerTimer(time, OnRetransmitHandshake);
        SendKeepaliveTimer = new PeerTimer(time, OnSendKeepalive);
        NewHandshake = new PeerTimer(time, OnNewHandshake);
        ZeroKeyMaterial = new PeerTimer(time, OnZeroKeyMaterial);
        PersistentKeepaliveTimer = new PeerTimer(time, OnPersistentKeepalive);
    }

    public WgKey PublicKey { get; }

    public HandshakeState Handshake { get; }

    public CookieGenerator Cookies { get; }

    /// <summary>Orders staged flushes against the TUN thread's direct sends.</summary>
    public Lock SendLock { get; } = new();

    public PeerTimer RetransmitHandshake { get; }

    public PeerTimer SendKeepaliveTimer { get; }

    public PeerTimer NewHandshake { get; }

    public PeerTimer ZeroKeyMaterial { get; }

    public PeerTimer PersistentKeepaliveTimer { get; }

    public bool IsRunning => _running;

    public TimeSpan PersistentKeepalive
    {
        get => TimeSpan.FromTicks(Interlocked.Read(ref _persistentKeepaliveTicks));
        set => Interlocked.Exchange(ref _persistentKeepaliveTicks, value.Ticks);
    }

    /// <summary>Where the peer's packets go; lock-free to read on every packet, and to compare before roaming.</summary>
    public WgEndpoint Endpoint
    {
        get => _endpoint.Value;
        set
        {
            if (_endpoint.Value != value)
            {
                _endpoint = new StrongBox<WgEndpoint>(value);
            }
        }
    }

    public long RxBytes => Interlocked.Read(ref _rxBytes);

    public long TxBytes => Interlocked.Read(ref _txBytes);

    public DateTimeOffset? LastHandshake
    {
        get
        {
            var ticks = Interlocked.Read(ref _lastHandshakeUnixTicks);
            return ticks == 0 ? null : new DateTimeOffset(ticks, TimeSpan.Zero);
        }
    }

    public int StagedCount
    {
        get
        {
            lock (SendLock)
            {
                return _staged.Count;
            }
        }
    }

    internal Keypair? CurrentKeypair => Volatile.Read(ref _current);

    internal Keypair? PreviousKeypair => Volatile.Read(ref _previous);

    internal Keypair? NextKeypair => Volatile.Read(ref _next);

    public void AddRx(long bytes) => Interlocked.Add(ref _rxBytes, bytes);

    public void AddTx(long bytes) => Interlocked.Add(ref _txBytes, bytes);

    public void Start()
    {
        if (_running)
        {
            return;
        }

        _running = true;
        lock (Handshake.Lock)
        {
            _lastInitiationSent = null;
        }

        if (PersistentKeepalive > TimeSpan.Zero)
        {
            SendKeepalive();
        }
    }

    /// <summary>Stops timers and forgets every session (the device went down or the peer was removed).</summary>
    public void Stop()
    {
        _running = false;
        RetransmitHandshake.Stop();
        SendKeepaliveTimer.Stop();
        NewHandshake.Stop();
        ZeroKeyMaterial.Stop();
        PersistentKeepaliveTimer.Stop();
        ZeroKeys();
        DropStaged();
    }

    /// <summary>The keypair to encrypt with, if it may still be used.</summary>
    public Keypair? UsableSendingKeypair()
    {
        var keypair = Volatile.Read(ref _current);
        if (keypair is null || keypair.IsDisposed || keypair.SendCount >= ProtocolTimings.RejectAfterMessages
            || _time.GetElapsedTime(keypair.Created) >= ProtocolTimings.RejectAfterTime)
        {
            return null;
        }

        return keypair;
    }

    /// <summary>Installs the keypair of a finished handshake (caller holds the handshake lock).</summary>
    public Keypair InstallSession(SessionKeys keys, IndexTable indices)
    {
        var keypair = new Keypair(keys, _time.GetTimestamp());
        indices.SetKeypair(keypair.LocalIndex, this, keypair);
        Keypair? retired1 = null;
        Keypair? retired2 = null;
        lock (_keypairLock)
        {
            if (keys.IsInitiator)
            {
                if (_next is not null)
                {
                    retired1 = _current;
                    retired2 = _previous;
                    _previous = _next;
                    _next = null;
                }
                else
                {
                    retired1 = _previous;
                    _previous = _current;
                }

                Volatile.Write(ref _current, keypair);
            }
            else
            {
                retired1 = _next;
                retired2 = _previous;
                _previous = null;
                _next = keypair;
            }

            _sentLastMinuteHandshake = false;
        }

        Retire(retired1, indices);
        Retire(retired2, indices);
        Interlocked.Exchange(ref _lastHandshakeUnixTicks, _time.GetUtcNow().UtcTicks);
        return keypair;
    }

    /// <summary>Called when a transport packet authenticated under <paramref name="keypair"/>: confirms a responder's next keypair. True if it was confirmed now.</summary>
    public bool ConfirmKeypair(Keypair keypair, IndexTable indices)
    {
        if (!ReferenceEquals(Volatile.Read(ref _next), keypair))
        {
            return false;
        }

        Keypair? retired;
        lock (_keypairLock)
        {
            if (!ReferenceEquals(_next, keypair))
            {
                return false;
            }

            retired = _previous;
            _previous = _current;
            Volatile.Write(ref _current, keypair);
            _next = null;
        }

        Retire(retired, indices);
        return true;
    }

    /// <summary>True once per session when the initiator's keys are near expiry on the receive side.</summary>
    public bool ShouldRekeyOnReceive(Keypair keypair)
    {
        if (!keypair.IsInitiator || !ReferenceEquals(Volatile.Read(ref _current), keypair)
            || _time.GetElapsedTime(keypair.Created) < ProtocolTimings.RejectAfterTime - ProtocolTimings.KeepaliveTimeout - ProtocolTimings.RekeyTimeout)
        {
            return false;
        }

        lock (_keypairLock)
        {
            if (_sentLastMinuteHandshake)
            {
                return false;
            }

            _sentLastMinuteHandshake = true;
            return true;
        }
    }

    /// <summary>Whether the sending keypair is old enough (or used enough) that a new handshake should start.</summary>
    public bool ShouldRekeyOnSend(Keypair keypair)
        => keypair.SendCount > ProtocolTimings.RekeyAfterMessages
           || (keypair.IsInitiator && _time.GetElapsedTime(keypair.Created) >= ProtocolTimings.RekeyAfterTime);

    /// <summary>Erases every keypair and the handshake.</summary>
    public void ZeroKeys()
    {
        Keypair? a, b, c;
        lock (_keypairLock)
        {
            a = _current;
            b = _previous;
            c = _next;
            Volatile.Write(ref _current, null);
            _previous = null;
            _next = null;
        }

        Retire(a, _device.Indices);
        Retire(b, _device.Indices);
        Retire(c, _device.Indices);
        lock (Handshake.Lock)
        {
            _device.Indices.RemoveHandshake(Handshake.LocalIndex, Handshake);
            Handshake.Clear();
        }
    }

    /// <summary>Queues a packet (copied, with headroom for the transport header) until a session exists; drops the oldest when full.</summary>
    public void Stage(ReadOnlySpan<byte> packet)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MessageLayout.TransportHeaderSize + packet.Length + 32);
        packet.CopyTo(buffer.AsSpan(MessageLayout.TransportHeaderSize));
        lock (SendLock)
        {
            if (_staged.Count >= ProtocolTimings.MaxStagedPackets)
            {
                ArrayPool<byte>.Shared.Return(_staged.Dequeue().Buffer);
            }

            _staged.Enqueue((buffer, packet.Length));
        }
    }

    /// <summary>True when packets are waiting (caller holds <see cref="SendLock"/>).</summary>
    public bool HasStagedUnlocked => _staged.Count > 0;

    /// <summary>Encrypts and sends staged packets if a session is up, else starts a handshake.</summary>
    public void SendStaged()
    {
        byte[][]? buffers = null;
        int[]? sizes = null;
        var count = 0;
        var rekey = false;
        List<byte[]> toReturn = [];
        lock (SendLock)
        {
            if (_staged.Count == 0)
            {
                return;
            }

            var keypair = UsableSendingKeypair();
            if (keypair is null || Endpoint.IsEmpty)
            {
                rekey = true;
            }
            else
            {
                buffers = new byte[_staged.Count][];
                sizes = new int[_staged.Count];
                while (_staged.TryDequeue(out var item))
                {
                    toReturn.Add(item.Buffer);
                    var length = _device.SealTransport(keypair, item.Buffer, item.Length, item.Buffer.Length);
                    if (length > 0)
                    {
                        buffers[count] = item.Buffer;
                        sizes[count] = length;
                        count++;
                    }
                }

                rekey = ShouldRekeyOnSend(keypair);
                if (count > 0)
                {
                    _device.SendToPeer(this, buffers, sizes, count, isData: true);
                }
            }
        }

        foreach (var buffer in toReturn)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        if (rekey)
        {
            SendHandshakeInitiation(isRetry: false);
        }
    }

    /// <summary>Sends an authenticated empty packet (or the staged packets, which serve the same purpose).</summary>
    public void SendKeepalive()
    {
        bool flushStaged;
        lock (SendLock)
        {
            flushStaged = _staged.Count > 0;
            if (!flushStaged)
            {
                var keypair = UsableSendingKeypair();
                if (keypair is not null)
                {
                    var length = _device.SealTransport(keypair, _keepaliveBuffer, 0, _keepaliveBuffer.Length);
                    if (length > 0)
                    {
                        _device.SendToPeer(this, [_keepaliveBuffer], [length], 1, isData: false);
                    }

                    return;
                }
            }
        }

        if (flushStaged)
        {
            SendStaged();
        }
        else
        {
            // No session: a keepalive cannot be sent, so start the handshake it was meant to keep up.
            SendHandshakeInitiation(isRetry: false);
        }
    }

    /// <summary>Builds and sends an initiation, at most once per REKEY_TIMEOUT unless it is a retry.</summary>
    public void SendHandshakeInitiation(bool isRetry)
    {
        if (!_running || !_device.IsUp)
        {
            return;
        }

        if (!isRetry)
        {
            Volatile.Write(ref _handshakeAttempts, 0);
        }

        var message = new byte[MessageLayout.InitiationSize];
        var endpoint = Endpoint;
        lock (Handshake.Lock)
        {
            if (!isRetry && _lastInitiationSent is { } last && _time.GetElapsedTime(last) < ProtocolTimings.RekeyTimeout)
            {
                return;
            }

            _lastInitiationSent = _time.GetTimestamp();
            var identity = _device.Identity;
            if (identity is null || endpoint.IsEmpty)
            {
                return;
            }

            _device.Indices.RemoveHandshake(Handshake.LocalIndex, Handshake);
            var index = _device.Indices.NewHandshakeIndex(this, Handshake);
            Span<byte> timestamp = stackalloc byte[Tai64N.Size];
            Tai64N.Write(timestamp, _time.GetUtcNow());
            if (!NoiseProtocol.CreateInitiation(Handshake, identity, index, timestamp, message))
            {
                _device.Indices.Remove(index);
                if (_logger.IsEnabled(LogLevel.Debug))
                {
                    _logger.LogDebug("Peer {Peer}: cannot create a handshake initiation (bad key)", PublicKey.ToShortString());
                }

                return;
            }

            Cookies.AddMacs(message);
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: sending handshake initiation{Retry}", PublicKey.ToShortString(), isRetry ? " (retry)" : "");
        }

        OnAnyAuthenticatedPacketTraversal();
        OnAnyAuthenticatedPacketSent();

        // Armed before sending: the response may be processed (and stop this timer) before Send returns.
        RetransmitHandshake.Set(ProtocolTimings.RekeyTimeout + Jitter());
        _device.SendHandshakeMessage(this, message, endpoint);
    }

    // ---- timer events (wireguard.com/papers: 6.1-6.5) ----

    /// <summary>Data was sent: expect an answer within KEEPALIVE + REKEY_TIMEOUT, else re-handshake.</summary>
    public void OnDataSent()
    {
        if (!NewHandshake.IsPending)
        {
            NewHandshake.Set(ProtocolTimings.KeepaliveTimeout + ProtocolTimings.RekeyTimeout + Jitter());
        }
    }

    /// <summary>Data was received: answer with a keepalive if we send nothing for KEEPALIVE_TIMEOUT.</summary>
    public void OnDataReceived()
    {
        if (!SendKeepaliveTimer.IsPending)
        {
            SendKeepaliveTimer.Set(ProtocolTimings.KeepaliveTimeout);
        }
        else
        {
            _needAnotherKeepalive = true;
        }
    }

    public void OnAnyAuthenticatedPacketSent() => SendKeepaliveTimer.Stop();

    public void OnAnyAuthenticatedPacketReceived() => NewHandshake.Stop();

    public void OnAnyAuthenticatedPacketTraversal()
    {
        var interval = PersistentKeepalive;
        if (interval > TimeSpan.Zero)
        {
            PersistentKeepaliveTimer.Set(interval);
        }
    }

    public void OnHandshakeComplete()
    {
        RetransmitHandshake.Stop();
        Volatile.Write(ref _handshakeAttempts, 0);
    }

    public void OnSessionDerived() => ZeroKeyMaterial.Set(ProtocolTimings.ZeroKeysAfter);

    public void Dispose()
    {
        Stop();
        RetransmitHandshake.Dispose();
        SendKeepaliveTimer.Dispose();
        NewHandshake.Dispose();
        ZeroKeyMaterial.Dispose();
        PersistentKeepaliveTimer.Dispose();
    }

    private void OnRetransmitHandshake()
    {
        if (!_running)
        {
            return;
        }

        var attempts = Interlocked.Increment(ref _handshakeAttempts);
        if (attempts > ProtocolTimings.MaxHandshakeAttempts)
        {
            if (_logger.IsEnabled(LogLevel.Debug))
            {
                _logger.LogDebug("Peer {Peer}: handshake did not complete after {Attempts} attempts, giving up", PublicKey.ToShortString(), attempts);
            }

            SendKeepaliveTimer.Stop();
            DropStaged();
            if (!ZeroKeyMaterial.IsPending)
            {
                ZeroKeyMaterial.Set(ProtocolTimings.ZeroKeysAfter);
            }

            return;
        }

        SendHandshakeInitiation(isRetry: true);
    }

    private void OnSendKeepalive()
    {
        if (!_running)
        {
            return;
        }

        SendKeepalive();
        if (_needAnotherKeepalive)
        {
            _needAnotherKeepalive = false;
            SendKeepaliveTimer.Set(ProtocolTimings.KeepaliveTimeout);
        }
    }

    private void OnNewHandshake()
    {
        if (!_running)
        {
            return;
        }

        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: no reply for {Seconds} s after sending data, new handshake", PublicKey.ToShortString(), (ProtocolTimings.KeepaliveTimeout + ProtocolTimings.RekeyTimeout).TotalSeconds);
        }

        SendHandshakeInitiation(isRetry: false);
    }

    private void OnZeroKeyMaterial()
    {
        if (_logger.IsEnabled(LogLevel.Debug))
        {
            _logger.LogDebug("Peer {Peer}: erasing session keys", PublicKey.ToShortString());
        }

        ZeroKeys();
    }

    private void OnPersistentKeepalive()
    {
        if (_running && PersistentKeepalive > TimeSpan.Zero)
        {
            SendKeepalive();
        }
    }

    private void DropStaged()
    {
        lock (SendLock)
        {
            while (_staged.TryDequeue(out var item))
            {
                ArrayPool<byte>.Shared.Return(item.Buffer);
            }
        }
    }

    private static void Retire(Keypair? keypair, IndexTable indices)
    {
        if (keypair is null)
        {
            return;
        }

        indices.Remove(keypair.LocalIndex);
        keypair.Dispose();
    }

    private static TimeSpan Jitter() => TimeSpan.FromMilliseconds(Random.Shared.Next(0, (int)ProtocolTimings.RekeyTimeoutJitterMax.TotalMilliseconds + 1));
}
