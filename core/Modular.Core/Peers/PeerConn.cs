using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;
using Modular.Core.Lazy;
using Modular.Core.Status;

namespace Modular.Core.Peers;

/// <summary>
/// One remote peer's connection. Open: exchange credentials and candidates over signal (offer /
/// answer), run connectivity checks towards the peer's candidates and set WireGuard's endpoint to the
/// first pair that answers (P2P); when none does (or force_relay), bind at the relay and point
/// WireGuard at a proxy (Relayed). Connected means WireGuard completed a handshake over that path;
/// while relayed, direct paths are tried again periodically, and at once when a valid check of the peer arrives (its
/// checks passed: it went P2P, and both sides must end on one path); a handshake that goes stale reconnects.
/// Close tears down the WireGuard peer and the proxy and returns to Idle; it can be opened again.
/// Park (lazy connections) returns to Idle too but leaves the peer in WireGuard with a stand-in endpoint, so traffic
/// for it waits there, staged, until it is opened again.
/// </summary>
/// <remarks>
/// This type keeps open / close / park, the connect loop and status; the jobs are parts, as magicsock splits its
/// endpoint, relay manager and peer map:
///   <see cref="PeerSession"/> (signal: credentials, session ids, offer / answer / goodbye / go-idle),
///   <see cref="DirectPathFinder"/> (connectivity checks), <see cref="RelayedPathHolder"/> (relay path, pairing wait),
///   <see cref="WireGuardPeerWriter"/> (the one writer of the WireGuard peer) and <see cref="PeerLiveness"/> (the pure
///   liveness verdict the loop acts on). When to park and wake is the lazy policy's (Lazy/LazyConnectionPolicy).
/// The connect loop is the other half of this type, in PeerConn.ConnectLoop.cs (one file would pass 450 lines).
///
/// Locks, always taken in this order (a later one is never held while an earlier one is waited for):
///   ConnectionManager's apply gate -> _lifecycle -> the writer's gate (WireGuardPeerWriter._gate) -> _lock.
/// _lifecycle and the writer's gate are held across awaits; _lock never is, and nothing else is taken under it.
/// The session and the relayed-path holder guard their fields with this same _lock (it is handed to them; they take it
/// again when called under it, which System.Threading.Lock allows).
/// </remarks>
public sealed partial class PeerConn : IPeerConn
{
    private readonly IWgIface _iface;
    private readonly PeerConnOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<PeerConn> _changed;
    private readonly PeerLiveness _liveness;
    private readonly DirectPathFinder _direct;

    // Serializes open, close and park (held for the whole of each). Guards: _runTask.
    private readonly SemaphoreSlim _lifecycle = new(1, 1);
    private Task _runTask = Task.CompletedTask; // the connect loop, awaited when it is stopped

    // The one writer of this peer's WireGuard configuration; its gate guards its own fields.
    private readonly WireGuardPeerWriter _wireGuard;

    // Guards the fields below and those of _session and _relayed; held briefly.
    private readonly Lock _lock = new();
    private readonly PeerSession _session;
    private readonly RelayedPathHolder _relayed;
    private CancellationTokenSource? _run; // set while open (the connect loop runs), with the session it negotiates
    private WakeSignal? _wake; // made on open: an idle (parked or never opened) peer holds none
    private PeerConnectionState _state = PeerConnectionState.Idle;
    private DateTimeOffset _lastStateChange;
    private string? _reason = "not opened";
    private ConnectionType? _type;
    private string? _localCandidate;
    private string? _remoteCandidate;
    private double? _latencyMs;
    private WgPeerStats? _stats;

    // The relayed proxy's BytesToWireGuard read when the last stats arrived (after WireGuard was polled for them), and
    // the one read when the stats before them arrived (so before the last stats were polled): with the last stats' rx,
    // a baseline that never counts a relayed byte as direct (see KeepRelayForTrial). Null while the proxy does not count.
    private (Abstractions.Proxy.IProxy Proxy, long Bytes)? _relayedAtLastStats;
    private (Abstractions.Proxy.IProxy Proxy, long Bytes)? _relayedBeforeStats;
    private bool _relayRedirected; // the kept proxy was redirected for a direct trial (undone when WireGuard returns to it)
    private bool _parked; // Idle, waiting behind the stand-in
    private bool? _startsHandshake;
    private InactivityTracker? _inactivity; // made when the peer first connects: idle peers stay small
    private TimeSpan _quiet;

    // Replaced whole by UpdatePeerAsync (the map's applier, one update at a time); read without a lock: an immutable record.
    private volatile RemotePeerInfo _peer;

    public PeerConn(RemotePeerInfo peer, IWgIface iface, IPeerSignaling signaling, IPeerPaths paths, IRelayConnector relay,
        PeerConnOptions options, TimeProvider time, ILogger logger, Action<PeerConn>? changed = null)
    {
        _peer = peer;
        _iface = iface;
        _options = options;
        _time = time;
        _logger = logger;
        _changed = changed ?? (_ => { });
        _liveness = new PeerLiveness(options);
        _direct = new DirectPathFinder(paths, options);
        _session = new PeerSession(peer.PublicKey, () => Name, signaling, paths, time, logger, _lock, Wake);
        _relayed = new RelayedPathHolder(peer.PublicKey, () => Name, relay, time, logger, _lock, Wake);
        _lastStateChange = time.GetUtcNow();
        _wireGuard = new WireGuardPeerWriter(peer, iface, options.PersistentKeepalive, () => StartsHandshake || State == PeerConnectionState.Connected, logger);
    }

    public RemotePeerInfo Peer => _peer;

    public WgKey PublicKey => Peer.PublicKey;

    public string Name => Peer.Name;

    public PeerConnectionState State => Read(static c => c._state);

    public DateTimeOffset LastStateChange => Read(static c => c._lastStateChange);

    public ConnectionType? ConnectionType => Read(static c => c._type);

    /// <summary>Idle with the WireGuard peer set to a stand-in endpoint (see <see cref="ParkAsync"/>).</summary>
    public bool IsParked => Read(static c => c._parked);

    /// <summary>While connected: how long the peer has carried no traffic (see <see cref="InactivityTracker"/>); zero otherwise.</summary>
    public TimeSpan Quiet => Read(static c => c._quiet);

    public event EventHandler<PeerStateChange>? StateChanged;

    public ValueTask OpenAsync(CancellationToken cancellationToken) => OpenAsync(OpenReason.Map, cancellationToken);

    /// <summary>
    /// Starts connecting. Opened from a parked state, the WireGuard peer stays as it is (with the packets staged for
    /// it) and only its endpoint changes; the side woken by its peer's offer starts the handshake at once, the side
    /// woken by its own traffic answers it (its WireGuard just sent an initiation to the stand-in and would not send
    /// another for 5 s).
    /// </summary>
    public async ValueTask OpenAsync(OpenReason reason, CancellationToken cancellationToken)
    {
        await _lifecycle.WaitAsync(cancellationToken);
        try
        {
            CancellationToken token;
            lock (_lock)
            {
                if (_run is not null)
                {
                    return;
                }

                _startsHandshake = reason switch
                {
                    OpenReason.Traffic => false,
                    OpenReason.PeerOffer => true,
                    _ => null,
                };
                _quiet = TimeSpan.Zero;
                _inactivity?.Reset();
                _wake = new WakeSignal();
                _parked = false; // the WireGuard peer keeps the stand-in (and what is staged) until a path is set

                // Open from here on, with the new session: whoever sees Connecting can hand it the peer's signal.
                _session.Open();
                _run = new CancellationTokenSource();
                token = _run.Token;
            }

            SetState(PeerConnectionState.Connecting, reason switch
            {
                OpenReason.Traffic => "traffic for the peer: exchanging credentials over signal",
                OpenReason.PeerOffer => "the peer has traffic: exchanging credentials over signal",
                _ => "exchanging credentials over signal",
            });
            _runTask = Task.Run(() => RunAsync(token), CancellationToken.None);
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    public async ValueTask CloseAsync(CancellationToken cancellationToken)
    {
        await _lifecycle.WaitAsync(cancellationToken);
        try
        {
            var wasParked = IsParked;
            if (!await StopRunAsync() && !wasParked)
            {
                return;
            }

            await TeardownPathAsync(removeWireGuardPeer: true);
            SetState(PeerConnectionState.Idle, "closed");
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>
    /// Returns to Idle for lazy connections: stops any attempt, ends the WireGuard session and sets the peer again with
    /// its allowed IPs, <paramref name="standIn"/> as endpoint and no keepalive. Traffic for the peer is then staged in
    /// WireGuard (not lost: a session kept would send it encrypted to the stand-in) and the handshake initiation it
    /// triggers reaches the stand-in, which reports the activity. <see cref="OpenAsync(OpenReason, CancellationToken)"/> connects again.
    /// </summary>
    public async ValueTask ParkAsync(IPEndPoint standIn, string reason, CancellationToken cancellationToken)
    {
        await _lifecycle.WaitAsync(cancellationToken);
        try
        {
            await StopRunAsync();
            await TeardownPathAsync(removeWireGuardPeer: true);
            await _wireGuard.SetStandInAsync(standIn, cancellationToken);
            lock (_lock)
            {
                _startsHandshake = null;
                _quiet = TimeSpan.Zero;
                _session.Forget();
            }

            // Status first: whoever sees IsParked also sees the Idle state and its reason.
            SetState(PeerConnectionState.Idle, reason);
            lock (_lock)
            {
                _parked = true;
            }
        }
        finally
        {
            _lifecycle.Release();
        }
    }

    /// <summary>
    /// Tells the peer this side goes idle (GO_IDLE with this session's id, so a lazy peer parks too instead of
    /// reconnecting on the silence), then parks. The notice is best effort and bounded: parking never waits on signal.
    /// </summary>
    public async ValueTask GoIdleAsync(IPEndPoint standIn, string reason, TimeSpan noticeTimeout, CancellationToken cancellationToken)
    {
        await _session.SendGoIdleAsync(noticeTimeout, cancellationToken);
        await ParkAsync(standIn, reason, cancellationToken);
    }

    /// <summary>True when <paramref name="sessionId"/> names the peer's session this connection negotiated (not an older one).</summary>
    public bool IsCurrentRemoteSession(ulong sessionId) => _session.IsCurrentRemoteSession(sessionId);

    /// <summary>Cancels the connect loop and waits for it; false when none was running. Call under <see cref="_lifecycle"/>.</summary>
    private async Task<bool> StopRunAsync()
    {
        CancellationTokenSource? run;
        lock (_lock)
        {
            run = _run;
            _run = null;
            _session.End();
        }

        if (run is null)
        {
            return false;
        }

        await run.CancelAsync();
        try
        {
            await _runTask;
        }
        catch (OperationCanceledException)
        {
        }

        run.Dispose();
        return true;
    }

    /// <summary>Takes a changed map entry (allowed IPs, PSK, name); WireGuard is updated in place, the path kept.</summary>
    public async ValueTask UpdatePeerAsync(RemotePeerInfo peer, CancellationToken cancellationToken)
    {
        _peer = peer;

        // Through the writer, as every write of the WireGuard peer: a set the connect loop has under way lands first
        // and this one after it, or the loop's set comes later and is built from this entry.
        await _wireGuard.UpdateAsync(peer, cancellationToken);
        _changed(this);
    }

    /// <summary>A verified signal body from this peer (the signal client already authenticated the sender).</summary>
    public async Task OnSignalAsync(SignalBody body, CancellationToken cancellationToken)
    {
        if (body.Type == SignalBody.Types.Type.Goodbye)
        {
            _session.OnGoodbye(body.SessionId);
            return;
        }

        if (body.Type is SignalBody.Types.Type.Offer or SignalBody.Types.Type.Answer)
        {
            await _session.OnCredentialsAsync(body, cancellationToken);
        }
    }

    /// <summary>
    /// What this side sends the peer when the agent stops (null while no session is negotiated), so the
    /// peer reconnects, and fails its routes over, at once instead of after a silence.
    /// </summary>
    public SignalBody? Goodbye() => _session.Notice(SignalBody.Types.Type.Goodbye);

    /// <summary>The signal server could not deliver to this peer (it is offline).</summary>
    public void OnDeliveryError(string reason)
    {
        lock (_lock)
        {
            if (_state == PeerConnectionState.Connecting)
            {
                _reason = $"peer not reachable over signal: {reason}";
            }
        }

        _changed(this);
    }

    /// <summary>Fresh counters from the interface (the engine polls them for every peer at once).</summary>
    /// <param name="exemptBytes">The PSK provider's exchange traffic with this peer so far: not activity (see <see cref="InactivityTracker.Observe"/>).</param>
    public void OnStats(WgPeerStats stats, long exemptBytes = 0)
    {
        // Outside the lock: a plugin's code.
        var proxy = _relayed.Path?.Proxy;
        var delivered = proxy?.BytesToWireGuard;
        lock (_lock)
        {
            _stats = stats;
            _relayedBeforeStats = _relayedAtLastStats;
            _relayedAtLastStats = proxy is not null && delivered is { } bytes ? (proxy, bytes) : null;
            if (_state == PeerConnectionState.Connected)
            {
                _inactivity ??= new InactivityTracker(_options.PersistentKeepalive);
                _quiet = _inactivity.Observe(stats.RxBytes, stats.TxBytes, _time.GetUtcNow(), exemptBytes);
            }
            else
            {
                _inactivity?.Reset();
                _quiet = TimeSpan.Zero;
            }
        }
    }

    /// <summary>The peer as `modular status` shows it.</summary>
    public PeerStatus ToStatus()
    {
        lock (_lock)
        {
            var connected = _state == PeerConnectionState.Connected;
            var relayed = _relayed.Path;
            return new PeerStatus(
                Peer.Name,
                Peer.Ip,
                Peer.PublicKey.ToBase64(),
                _state,
                connected ? null : _reason,
                connected ? _type : null,
                _localCandidate,
                _remoteCandidate,
                relayed?.RelayAddress,
                relayed?.Proxy.Kind,
                _lastStateChange,
                _stats?.LastHandshake,
                _stats?.RxBytes ?? 0,
                _stats?.TxBytes ?? 0,
                _latencyMs,
                Peer.QuantumResistantSince is not null,
                Peer.QuantumResistantSince);
        }
    }

    private async Task CloseRelayAsync()
    {
        lock (_lock)
        {
            _relayRedirected = false;
            _relayedAtLastStats = null;
            _relayedBeforeStats = null;
        }

        await _relayed.CloseAsync();
        _changed(this);
    }

    private async Task TeardownPathAsync(bool removeWireGuardPeer)
    {
        await CloseRelayAsync();
        lock (_lock)
        {
            _type = null;
            _localCandidate = null;
            _remoteCandidate = null;
            _latencyMs = null;
            if (removeWireGuardPeer)
            {
                _parked = false;
                _stats = null;
            }
        }

        if (removeWireGuardPeer)
        {
            await _wireGuard.RemoveAsync();
        }
    }

    private Task WaitForWakeAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        WakeSignal wake;
        lock (_lock)
        {
            wake = _wake ??= new WakeSignal();
        }

        return wake.WaitAsync(timeout, _time, cancellationToken);
    }

    private void Wake()
    {
        WakeSignal? wake;
        lock (_lock)
        {
            wake = _wake;
        }

        wake?.Wake();
    }

    private void SetReason(string reason)
    {
        lock (_lock)
        {
            _reason = reason;
        }

        _changed(this);
    }

    private void SetState(PeerConnectionState state, string? reason)
    {
        PeerStateChange? change = null;
        lock (_lock)
        {
            _reason = reason;
            if (_state != state)
            {
                change = new PeerStateChange(PublicKey, _state, state, _time.GetUtcNow(), reason);
                _state = state;
                _lastStateChange = change.At;
            }
        }

        _changed(this);
        if (change is not null)
        {
            StateChanged?.Invoke(this, change);
        }
    }

    /// <summary>One field read under <see cref="_lock"/>.</summary>
    private T Read<T>(Func<PeerConn, T> read)
    {
        lock (_lock)
        {
            return read(this);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await CloseAsync(CancellationToken.None);
        _lifecycle.Dispose();
        _wireGuard.Dispose();
    }
}
