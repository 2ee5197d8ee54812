using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Device;

/// <summary>
/// One remote peer inside <see cref="WgDevice"/> (wireguard-go's device/peer.go and keypair
/// rotation): its handshake, its current/previous/next keypairs, endpoint, counters and lifecycle.
/// What it sends on its own is in Peer.Send.cs, its protocol timers in Peer.Timers.cs.
/// </summary>
internal sealed partial class Peer : IDisposable
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
    private WgEndpoint _lastInitiationSentTo; // guarded by Handshake.Lock, with _lastInitiationSent
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

    public void Dispose()
    {
        Stop();
        RetransmitHandshake.Dispose();
        SendKeepaliveTimer.Dispose();
        NewHandshake.Dispose();
        ZeroKeyMaterial.Dispose();
        PersistentKeepaliveTimer.Dispose();
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
}
