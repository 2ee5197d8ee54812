using System.Net;
using System.Security.Cryptography;
using System.Threading.Channels;
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
/// while relayed, direct paths are tried again periodically; a handshake that goes stale reconnects.
/// Close tears down the WireGuard peer and the proxy and returns to Idle; it can be opened again.
/// Park (lazy connections) returns to Idle too but leaves the peer in WireGuard with a stand-in endpoint, so traffic
/// for it waits there, staged, until it is opened again.
/// </summary>
public sealed class PeerConn : IPeerConn
{
    private readonly IWgIface _iface;
    private readonly IPeerSignaling _signaling;
    private readonly IPeerPaths _paths;
    private readonly IRelayConnector _relay;
    private readonly PeerConnOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<PeerConn> _changed;
    private readonly PeerLiveness _liveness;

    // Locks, always taken in this order (a later one is never held while an earlier one is waited for):
    //   _lifecycle -> the WireGuard writer's gate (see WireGuardPeerWriter) -> _lock.
    // ConnectionManager's apply gate, when it is held, comes before all three. _lifecycle and the writer's gate are
    // held across awaits; _lock never is, and nothing else is taken under it.

    // The one writer of this peer's WireGuard configuration, with its own gate and fields.
    private readonly WireGuardPeerWriter _wireGuard;

    // Serializes open, close and park (held for the whole of each).
    private readonly SemaphoreSlim _lifecycle = new(1, 1);

    // Guarded by _lifecycle.
    private Task _runTask = Task.CompletedTask; // the connect loop, awaited when it is stopped

    // Guards the connection's state below; held briefly.
    private readonly Lock _lock = new();

    // Guarded by _lock.
    private CancellationTokenSource? _run; // set while open (the connect loop runs), with the session it negotiates
    private Channel<bool>? _wake; // made on open: an idle (parked or never opened) peer holds no channel
    private PeerConnectionState _state = PeerConnectionState.Idle;
    private DateTimeOffset _lastStateChange;
    private string? _reason = "not opened";
    private IceCredentials? _local;
    private ulong _sessionId;
    private IceCredentials? _remote;
    private ulong _remoteSession;
    private bool _remoteRestarted;
    private bool _remoteLeaving;
    private IReadOnlyList<IceCandidate> _remoteCandidates = [];
    private IPEndPoint? _peerReflexive;
    private ConnectionType? _type;
    private string? _localCandidate;
    private string? _remoteCandidate;
    private RelayedPath? _relayed;
    private bool _relayLost;
    private double? _latencyMs;
    private WgPeerStats? _stats;
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
        _signaling = signaling;
        _paths = paths;
        _relay = relay;
        _options = options;
        _time = time;
        _logger = logger;
        _changed = changed ?? (_ => { });
        _liveness = new PeerLiveness(options);
        _lastStateChange = time.GetUtcNow();
        _wireGuard = new WireGuardPeerWriter(peer, iface, options.PersistentKeepalive, () => StartsHandshake || State == PeerConnectionState.Connected, logger);
    }

    public RemotePeerInfo Peer => _peer;

    public WgKey PublicKey => Peer.PublicKey;

    public string Name => Peer.Name;

    public PeerConnectionState State
    {
        get
        {
            lock (_lock)
            {
                return _state;
            }
        }
    }

    public DateTimeOffset LastStateChange
    {
        get
        {
            lock (_lock)
            {
                return _lastStateChange;
            }
        }
    }

    public ConnectionType? ConnectionType
    {
        get
        {
            lock (_lock)
            {
                return _type;
            }
        }
    }

    /// <summary>Idle with the WireGuard peer set to a stand-in endpoint (see <see cref="ParkAsync"/>).</summary>
    public bool IsParked
    {
        get
        {
            lock (_lock)
            {
                return _parked;
            }
        }
    }

    /// <summary>While connected: how long the peer has carried no traffic (see <see cref="InactivityTracker"/>); zero otherwise.</summary>
    public TimeSpan Quiet
    {
        get
        {
            lock (_lock)
            {
                return _quiet;
            }
        }
    }

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
                _remoteRestarted = false;
                _remoteLeaving = false;
                _wake = NewWake();
                _parked = false; // the WireGuard peer keeps the stand-in (and what is staged) until a path is set

                // Open from here on, with the new session: whoever sees Connecting can hand it the peer's signal.
                RenewSessionLocked();
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
                _local = null;
                _remote = null;
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
        if (SessionNotice(SignalBody.Types.Type.GoIdle) is { } notice)
        {
            using var timeout = new CancellationTokenSource(noticeTimeout, _time);
            using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            try
            {
                await _signaling.SendAsync(PublicKey, notice, bounded.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException or Grpc.Core.RpcException)
            {
                _logger.LogDebug("Peer {Peer}: GO_IDLE not sent: {Problem}", Name, e.Message);
            }
        }

        await ParkAsync(standIn, reason, cancellationToken);
    }

    /// <summary>True when <paramref name="sessionId"/> names the peer's session this connection negotiated (not an older one).</summary>
    public bool IsCurrentRemoteSession(ulong sessionId)
    {
        lock (_lock)
        {
            return _run is not null && _remote is not null && sessionId == _remoteSession;
        }
    }

    /// <summary>Cancels the connect loop and waits for it; false when none was running. Call under <see cref="_lifecycle"/>.</summary>
    private async Task<bool> StopRunAsync()
    {
        CancellationTokenSource? run;
        lock (_lock)
        {
            run = _run;
            _run = null;
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
            OnGoodbye(body.SessionId);
            return;
        }

        if (body.Type is not (SignalBody.Types.Type.Offer or SignalBody.Types.Type.Answer))
        {
            return;
        }

        if (!IceCredentials.IsWellFormed(body.Ufrag, body.Pwd))
        {
            _logger.LogWarning("Peer {Peer}: dropped a signal {Type} with malformed credentials", Name, body.Type);
            return;
        }

        var candidates = new List<IceCandidate>();
        foreach (var text in body.Candidates.Take(32))
        {
            if (IceCandidate.TryParse(text, out var candidate))
            {
                candidates.Add(candidate);
            }
        }

        bool answer;
        lock (_lock)
        {
            if (_run is null || _local is null)
            {
                return; // Closed: the peer will offer again when we open.
            }

            var newSession = _remote is not null && body.SessionId != _remoteSession;
            _remote = new IceCredentials(body.Ufrag, body.Pwd);
            _remoteSession = body.SessionId;
            _remoteCandidates = candidates;
            _remoteRestarted |= newSession;
            answer = body.Type == SignalBody.Types.Type.Offer;
        }

        Wake();
        if (answer)
        {
            await SendCredentialsAsync(SignalBody.Types.Type.Answer, cancellationToken);
        }
    }

    /// <summary>
    /// What this side sends the peer when the agent stops (null while no session is negotiated), so the
    /// peer reconnects, and fails its routes over, at once instead of after a silence.
    /// </summary>
    public SignalBody? Goodbye() => SessionNotice(SignalBody.Types.Type.Goodbye);

    /// <summary>A notice that names this side's session (goodbye, go-idle); null while none is negotiated.</summary>
    private SignalBody? SessionNotice(SignalBody.Types.Type type)
    {
        lock (_lock)
        {
            return _run is null || _local is null ? null : new SignalBody { Type = type, SessionId = _sessionId };
        }
    }

    private void OnGoodbye(ulong sessionId)
    {
        lock (_lock)
        {
            if (_run is null || _remote is null || sessionId != _remoteSession)
            {
                return; // closed here, or a goodbye from an older session of the peer
            }

            _remoteLeaving = true;
        }

        Wake();
    }

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
    public void OnStats(WgPeerStats stats)
    {
        lock (_lock)
        {
            _stats = stats;
            if (_state == PeerConnectionState.Connected)
            {
                _inactivity ??= new InactivityTracker(_options.PersistentKeepalive);
                _quiet = _inactivity.Observe(stats.RxBytes, stats.TxBytes, _time.GetUtcNow());
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
            return new PeerStatus(
                Peer.Name,
                Peer.Ip,
                Peer.PublicKey.ToBase64(),
                _state,
                connected ? null : _reason,
                connected ? _type : null,
                _localCandidate,
                _remoteCandidate,
                _relayed?.RelayAddress,
                _relayed?.Proxy.Kind,
                _lastStateChange,
                _stats?.LastHandshake,
                _stats?.RxBytes ?? 0,
                _stats?.TxBytes ?? 0,
                _latencyMs,
                false,
                null);
        }
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1));
        while (!cancellationToken.IsCancellationRequested)
        {
            string reason;
            try
            {
                await ConnectOnceAsync(cancellationToken);
                reason = "the peer restarted its connection";
                backoff.Reset();
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // Any failure of one attempt is a reason shown in status, then a retry.
            catch (Exception e)
#pragma warning restore CA1031
            {
                reason = e.Message;
                _logger.LogInformation("Peer {Peer}: {Reason}; retrying", Name, reason);

                // A failed attempt starts a new session: the peer may still believe the old one works (it went silent
                // only towards us, or its side never saw the failure) and would keep its WireGuard session and wait;
                // a new session id makes it start over too, so both sides handshake afresh.
                RenewSession();
            }

            // A new attempt is a new WireGuard session: with the old one kept, a path set while its keys were
            // still fresh (the remote restarted, or an attempt just failed over) never sees the handshake it
            // waits for, and the peer hangs in Connecting until the next rekey, two minutes on.
            await TeardownPathAsync(removeWireGuardPeer: true);
            SetState(PeerConnectionState.Connecting, reason);
            try
            {
                await Task.Delay(backoff.Next(cap: TimeSpan.FromSeconds(30)), _time, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    private async Task ConnectOnceAsync(CancellationToken cancellationToken)
    {
        IceCredentials local;
        lock (_lock)
        {
            local = _local!;
            _remoteRestarted = false;
            _remoteLeaving = false;
        }

        using var registration = _paths.Register(local, OnValidCheck);

        // 1. Credentials: offer until the peer answered (or offered) with its own.
        var offerEvery = _options.Offers;
        while (RemoteCredentials() is null)
        {
            try
            {
                await SendCredentialsAsync(SignalBody.Types.Type.Offer, cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                SetReason($"signal unavailable: {e.Message}");
            }

            await WaitForWakeAsync(offerEvery, cancellationToken);
            offerEvery = TimeSpan.FromTicks(Math.Min(offerEvery.Ticks * 2, TimeSpan.FromSeconds(15).Ticks));
        }

        // 2. Path: direct when a check passes, else the relay.
        if (_options.ForceRelay)
        {
            await UseRelayAsync("force_relay is on", cancellationToken);
        }
        else if (!await TryDirectAsync(cancellationToken))
        {
            await UseRelayAsync("no direct path answered the connectivity checks", cancellationToken);
        }

        // 3. Watch: handshake on the chosen path, staleness, a restarted peer, a direct path appearing.
        var watch = LivenessState.OnPath(_time.GetUtcNow(), State, ConnectionType);
        while (true)
        {
            await WaitForWakeAsync(TimeSpan.FromSeconds(1), cancellationToken);
            var now = _time.GetUtcNow();
            WgPeerStats? stats;
            lock (_lock)
            {
                if (_remoteRestarted)
                {
                    return;
                }

                if (_relayLost && _type == Abstractions.Peers.ConnectionType.Relayed)
                {
                    throw new IOException("the relayed connection closed");
                }

                if (_remoteLeaving)
                {
                    throw new IOException("the peer said goodbye (it is stopping)");
                }

                stats = _stats;
                watch = watch with { Connection = _state, Type = _type };
            }

            watch = await ActOnLivenessAsync(now, stats, watch, cancellationToken);
        }
    }

    /// <summary>
    /// Does what <see cref="PeerLiveness"/> says about one look at the peer, asking again after each action (one look
    /// can call for a probe and then a reconnect) until the verdict is Keep or a direct recheck; throws to reconnect.
    /// Returns the watch state for the next look.
    /// </summary>
    private async Task<LivenessState> ActOnLivenessAsync(DateTimeOffset now, WgPeerStats? stats, LivenessState watch, CancellationToken cancellationToken)
    {
        while (true)
        {
            var verdict = _liveness.Decide(now, stats, watch);
            var silent = now - watch.ReceivedAt;
            watch = verdict.Next;
            switch (verdict.Action)
            {
                case LivenessAction.Keep:
                    return watch;
                case LivenessAction.Reconnect:
                    throw new TimeoutException(verdict.Reason);
                case LivenessAction.Probe:
                    await ProbeWithHandshakeAsync(silent, cancellationToken);
                    break;
                case LivenessAction.MarkConnected:
                    SetState(PeerConnectionState.Connected, null);
                    _logger.LogInformation("Peer {Peer} ({Ip}) connected {Type}", Name, Peer.Ip, watch.Type);
                    if (!StartsHandshake)
                    {
                        // Now that the session exists, this side keeps the path alive too.
                        await _wireGuard.RefreshAsync(cancellationToken);
                    }

                    break;
                case LivenessAction.RecheckDirect:
                    if (await TryDirectAsync(cancellationToken))
                    {
                        _logger.LogInformation("Peer {Peer}: a direct path appeared; switched from the relay to P2P", Name);
                        await CloseRelayAsync();
                    }

                    return watch;
            }
        }
    }

    /// <summary>
    /// A connected peer was silent for <see cref="PeerConnOptions.Silent"/>. That alone proves nothing (between idle peers
    /// one side's keepalives can keep resetting the other's, so that side never sends), but a live peer answers a
    /// handshake: the WireGuard peer is set anew on the same path, with its keepalive, which sends an initiation at once.
    /// </summary>
    private async Task ProbeWithHandshakeAsync(TimeSpan silent, CancellationToken cancellationToken)
    {
        _logger.LogInformation("Peer {Peer}: nothing received for {Seconds} s; asking it for a new handshake", Name, (int)silent.TotalSeconds);
        await _wireGuard.ProbeAsync(cancellationToken);
    }

    private async Task<bool> TryDirectAsync(CancellationToken cancellationToken)
    {
        IceCredentials local;
        IceCredentials remote;
        List<IPEndPoint> targets;
        lock (_lock)
        {
            local = _local!;
            remote = _remote!;
            targets = [.. _remoteCandidates.OrderBy(c => c.Type).Select(c => c.Endpoint)];
            if (_peerReflexive is { } reflexive && !targets.Contains(reflexive))
            {
                targets.Add(reflexive);
            }
        }

        if (targets.Count == 0)
        {
            return false;
        }

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var checks = targets.Select(t => _paths.CheckAsync(t, local, remote, _options.Checks, TimeSpan.FromMilliseconds(200), stop.Token)).ToList();
        CheckResult? winner = null;
        var remaining = new List<Task<CheckResult?>>(checks);
        while (remaining.Count > 0 && winner is null)
        {
            var done = await Task.WhenAny(remaining);
            remaining.Remove(done);
            winner = await done;
        }

        await stop.CancelAsync();
        try
        {
            await Task.WhenAll(checks);
        }
        catch (OperationCanceledException)
        {
        }

        if (winner is not { } result)
        {
            return false;
        }

        var endpoint = _paths.WireGuardEndpointFor(result.Remote);
        await _wireGuard.SetEndpointAsync(endpoint, cancellationToken);
        IceCandidate? remoteCandidate;
        lock (_lock)
        {
            remoteCandidate = _remoteCandidates.FirstOrDefault(c => c.Endpoint.Equals(result.Remote))
                ?? new IceCandidate(CandidateType.PeerReflexive, result.Remote);
            _type = Abstractions.Peers.ConnectionType.P2P;
            _remoteCandidate = remoteCandidate.ToString();
            _localCandidate = LocalCandidateFor(remoteCandidate)?.ToString();
            _latencyMs = Math.Round(result.RoundTrip.TotalMilliseconds, 2);
        }

        _logger.LogInformation("Peer {Peer}: direct path to {Remote} (rtt {Rtt:F1} ms)", Name, remoteCandidate, result.RoundTrip.TotalMilliseconds);
        _changed(this);
        return true;
    }

    private async Task UseRelayAsync(string why, CancellationToken cancellationToken)
    {
        SetReason($"{why}; connecting through the relay");
        var path = await _relay.ConnectAsync(PublicKey, cancellationToken);
        lock (_lock)
        {
            _relayed = path;
            _relayLost = false;
        }

        path.Proxy.Disconnected += OnRelayDisconnected;

        path.Proxy.Work();
        if (StartsHandshake && path.IsPaired is { } isPaired)
        {
            // The relay drops what arrives before the peer bound there too: an initiation sent now would be lost and
            // WireGuard would retry only 5 s later. Wait (briefly, bounded) until the relay says both sides are bound.
            var until = _time.GetUtcNow() + PeerConnOptions.PairingWait;
            while (!isPaired() && _time.GetUtcNow() < until)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), _time, cancellationToken);
            }
        }

        await _wireGuard.SetEndpointAsync(path.Proxy.EndpointAddr, cancellationToken);
        lock (_lock)
        {
            _type = Abstractions.Peers.ConnectionType.Relayed;
            _localCandidate = null;
            _remoteCandidate = $"relay {path.RelayAddress}";
            _latencyMs = null;
        }

        _logger.LogInformation("Peer {Peer}: relayed through {Relay} ({Why}), proxy {Proxy}", Name, path.RelayAddress, why, path.Proxy.Kind);
        _changed(this);
    }

    /// <summary>
    /// Both sides set the peer within a moment of each other once a path is chosen. If both added it
    /// with a persistent keepalive, both would send an initiation at once; crossing initiations leave
    /// each side a responder waiting for confirmation, and WireGuard only recovers on its 5 s retry
    /// (seen as "Connected" with no traffic for seconds). So only the side with the larger public key
    /// starts the handshake; the other adds its keepalive once connected. A lazy wake-up decides otherwise
    /// (see <see cref="OpenAsync(OpenReason, CancellationToken)"/>).
    /// </summary>
    private bool StartsHandshake
    {
        get
        {
            lock (_lock)
            {
                if (_startsHandshake is { } decided)
                {
                    return decided;
                }
            }

            Span<byte> local = stackalloc byte[WgKey.Size];
            Span<byte> remote = stackalloc byte[WgKey.Size];
            _iface.PublicKey.CopyTo(local);
            PublicKey.CopyTo(remote);
            return local.SequenceCompareTo(remote) > 0;
        }
    }

    private async Task CloseRelayAsync()
    {
        RelayedPath? relayed;
        lock (_lock)
        {
            relayed = _relayed;
            _relayed = null;
        }

        if (relayed is not null)
        {
            relayed.Proxy.Disconnected -= OnRelayDisconnected;
            try
            {
                await relayed.Proxy.CloseAsync();
            }
#pragma warning disable CA1031 // A plugin's failure to close is logged; the connection goes on.
            catch (Exception e)
#pragma warning restore CA1031
            {
                _logger.LogWarning(e, "Peer {Peer}: closing the {Proxy} proxy failed", Name, relayed.Proxy.Kind);
            }
        }

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

    private async Task SendCredentialsAsync(SignalBody.Types.Type type, CancellationToken cancellationToken)
    {
        SignalBody body;
        lock (_lock)
        {
            if (_local is null)
            {
                return;
            }

            body = new SignalBody { Type = type, Ufrag = _local.Ufrag, Pwd = _local.Password, SessionId = _sessionId };
        }

        body.Candidates.AddRange(_paths.LocalCandidates.Select(c => c.ToString()));
        await _signaling.SendAsync(PublicKey, body, cancellationToken);
    }

    private void OnRelayDisconnected(object? sender, EventArgs e)
    {
        lock (_lock)
        {
            _relayLost = true;
        }

        Wake();
    }

    private void OnValidCheck(IPEndPoint from, string senderUfrag)
    {
        lock (_lock)
        {
            if (_remote is null || string.Equals(_remote.Ufrag, senderUfrag, StringComparison.Ordinal))
            {
                _peerReflexive = from;
            }
        }
    }

    private IceCandidate? LocalCandidateFor(IceCandidate remote)
    {
        var local = _paths.LocalCandidates;
        if (remote.Type != CandidateType.Host && local.FirstOrDefault(c => c.Type == CandidateType.ServerReflexive) is { } reflexive)
        {
            return reflexive;
        }

        // No host address on the peer's network: we reached it through a NAT, as our reflexive address.
        return local.FirstOrDefault(c => c.Type == CandidateType.Host && SameSlash24(c.Endpoint.Address, remote.Endpoint.Address))
               ?? local.FirstOrDefault(c => c.Type == CandidateType.ServerReflexive)
               ?? (local.Count > 0 ? local[0] : null);
    }

    private static bool SameSlash24(IPAddress a, IPAddress b)
    {
        var x = a.GetAddressBytes();
        var y = b.GetAddressBytes();
        return x.Length == 4 && y.Length == 4 && x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
    }

    private void RenewSession()
    {
        lock (_lock)
        {
            RenewSessionLocked();
        }
    }

    /// <summary>New credentials and session id, and no remote ones yet. Call under <see cref="_lock"/>.</summary>
    private void RenewSessionLocked()
    {
        _local = IceCredentials.Generate();
        _sessionId = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8));
        _remote = null;
        _remoteCandidates = [];
        _peerReflexive = null;
    }

    private IceCredentials? RemoteCredentials()
    {
        lock (_lock)
        {
            return _remote;
        }
    }

    private async Task WaitForWakeAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        Channel<bool> wake;
        lock (_lock)
        {
            wake = _wake ??= NewWake();
        }

        using var timer = new CancellationTokenSource(timeout, _time);
        using var waiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token);
        try
        {
            await wake.Reader.ReadAsync(waiting.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
        }
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


    private void Wake()
    {
        Channel<bool>? wake;
        lock (_lock)
        {
            wake = _wake;
        }

        wake?.Writer.TryWrite(true);
    }

    private static Channel<bool> NewWake() => Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    public async ValueTask DisposeAsync()
    {
        await CloseAsync(CancellationToken.None);
        _lifecycle.Dispose();
        _wireGuard.Dispose();
    }
}
