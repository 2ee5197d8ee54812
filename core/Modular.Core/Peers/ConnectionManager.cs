using Modular.Abstractions.Config;
using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Lazy;
using Modular.Core.Status;

namespace Modular.Core.Peers;

/// <summary>
/// Owns one <see cref="PeerConn"/> per remote peer of the network map. Each map is applied as a
/// diff: new peers get a connection that opens at once, changed peers are updated in place (their
/// path and tunnel untouched), peers no longer in the map are closed — their WireGuard peer and
/// proxy removed — and leave status. Verified signal messages are routed to the peer they came from.
/// With lazy connections (<see cref="Lazy"/>) a peer that may idle is parked instead of opened: it waits Idle, with an
/// activity monitor's stand-in as its WireGuard endpoint, until traffic for it (the monitor) or its offer (signal)
/// wakes it; a connected lazy peer that carried no traffic for the inactivity timeout is parked again.
/// </summary>
public sealed class ConnectionManager : IAsyncDisposable, IActivityListener
{
    /// <summary>How long a go-idle notice to the peer may take before the connection parks anyway.</summary>
    private static readonly TimeSpan NoticeTimeout = TimeSpan.FromSeconds(2);

    private readonly Func<RemotePeerInfo, PeerConn> _create;
    private readonly Func<IActivityListener, IActivityMonitor>? _createMonitor;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<WgKey, PeerConn> _peers = new();
    private readonly SemaphoreSlim _applyLock = new(1, 1);
    private readonly Channel<WgKey> _wakeups = Channel.CreateBounded<WgKey>(new BoundedChannelOptions(4096) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly ConcurrentDictionary<WgKey, byte> _waking = new();
    private readonly CancellationTokenSource _lifetime = new();
    private IActivityMonitor? _monitor;
    private Task _wakeLoop = Task.CompletedTask;
    private long _rejectedSignal;
    private long _wakesByTraffic;
    private long _wakesByPeer;
    private long _idled;

    public ConnectionManager(IWgIface iface, IPeerSignaling signaling, IPeerPaths paths, IRelayConnector relay, PeerConnOptions options,
        StatusRecorder recorder, TimeProvider time, ILoggerFactory loggerFactory, Func<IActivityListener, IActivityMonitor>? createMonitor = null)
    {
        _recorder = recorder;
        _time = time;
        _createMonitor = createMonitor;
        _logger = loggerFactory.CreateLogger<ConnectionManager>();
        var peerLogger = loggerFactory.CreateLogger<PeerConn>();
        Action<PeerConn> publish = Publish; // one delegate for all connections, not one each
        _create = peer => new PeerConn(peer, iface, signaling, paths, relay, options, time, peerLogger, publish);
    }

    /// <summary>For tests: builds connections with <paramref name="create"/> (doubles for WireGuard, signal, paths).</summary>
    public ConnectionManager(Func<RemotePeerInfo, Action<PeerConn>, PeerConn> create, StatusRecorder recorder, ILogger logger,
        Func<IActivityListener, IActivityMonitor>? createMonitor = null, TimeProvider? time = null)
    {
        _recorder = recorder;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _createMonitor = createMonitor;
        Action<PeerConn> publish = Publish;
        _create = peer => create(peer, publish);
    }

    /// <summary>
    /// Lazy connections as the next <see cref="ApplyAsync"/> applies them (the engine sets them from the config and
    /// the account's setting). Without a monitor factory they stay off.
    /// </summary>
    public LazyOptions Lazy { get; set; } = LazyOptions.Off;

    /// <summary>Idle peers woken by their traffic, by their offer, and connected peers parked for inactivity.</summary>
    public (long ByTraffic, long ByPeer, long Idled) LazyCounters
        => (Interlocked.Read(ref _wakesByTraffic), Interlocked.Read(ref _wakesByPeer), Interlocked.Read(ref _idled));

    public int Count => _peers.Count;

    /// <summary>Signal messages for peers not in the map, dropped.</summary>
    public long RejectedSignal => Interlocked.Read(ref _rejectedSignal);

    public PeerConn? Find(WgKey publicKey) => _peers.GetValueOrDefault(publicKey);

    public IReadOnlyCollection<PeerConn> Peers => [.. _peers.Values];

    /// <summary>Makes the connections match <paramref name="peers"/>; returns (added, updated, removed).</summary>
    public async Task<(int Added, int Updated, int Removed)> ApplyAsync(IReadOnlyList<RemotePeerInfo> peers, CancellationToken cancellationToken)
    {
        await _applyLock.WaitAsync(cancellationToken);
        try
        {
            var lazy = EffectiveLazy();
            var wanted = new Dictionary<WgKey, RemotePeerInfo>(peers.Count);
            foreach (var peer in peers)
            {
                wanted[peer.PublicKey] = peer;
            }

            var removed = 0;
            var removals = new List<Task>();
            foreach (var (key, conn) in _peers)
            {
                if (!wanted.ContainsKey(key))
                {
                    _peers.TryRemove(key, out _);
                    removals.Add(RemoveAsync(conn));
                    removed++;
                }
            }

            await Task.WhenAll(removals);

            var added = 0;
            var updated = 0;
            foreach (var peer in wanted.Values)
            {
                if (_peers.TryGetValue(peer.PublicKey, out var existing))
                {
                    if (!existing.Peer.SameAs(peer))
                    {
                        await existing.UpdatePeerAsync(peer, cancellationToken);
                        updated++;
                    }

                    if (existing.IsParked && !lazy.MayIdle(peer))
                    {
                        // Lazy connections turned off, or the peer became always-connected.
                        await existing.OpenAsync(OpenReason.Map, cancellationToken);
                    }

                    continue;
                }

                var conn = _create(peer);
                conn.StateChanged += OnStateChanged;
                _peers[peer.PublicKey] = conn;
                Publish(conn);
                if (lazy.MayIdle(peer))
                {
                    await conn.ParkAsync(Monitor().Watch(peer.PublicKey), "lazy: idle until traffic for it appears", cancellationToken);
                }
                else
                {
                    await conn.OpenAsync(cancellationToken);
                }

                added++;
            }

            return (added, updated, removed);
        }
        finally
        {
            _applyLock.Release();
        }
    }

    /// <summary>
    /// Routes one verified signal message (or a delivery error) to its peer. An offer wakes a parked peer first (its
    /// side has traffic); a go-idle of the peer's current session parks a lazy peer.
    /// </summary>
    public async Task OnSignalAsync(SignalInbound inbound, CancellationToken cancellationToken)
    {
        if (!_peers.TryGetValue(inbound.Peer, out var conn))
        {
            Interlocked.Increment(ref _rejectedSignal);
            _logger.LogDebug("Dropped a signal message from {Peer}, which is not in the network map", inbound.Peer.ToShortString());
            return;
        }

        if (inbound.DeliveryError is { } error)
        {
            conn.OnDeliveryError(error);
            return;
        }

        if (inbound.Body is not { } body)
        {
            return;
        }

        if (body.Type == SignalBody.Types.Type.GoIdle)
        {
            await OnGoIdleAsync(conn, body.SessionId, cancellationToken);
            return;
        }

        if (body.Type == SignalBody.Types.Type.Offer && conn.IsParked)
        {
            await _applyLock.WaitAsync(cancellationToken);
            try
            {
                if (IsCurrent(conn) && conn.IsParked)
                {
                    Interlocked.Increment(ref _wakesByPeer);
                    _logger.LogInformation("Peer {Peer} ({Ip}) offered a connection: waking it", conn.Name, conn.Peer.Ip);
                    await conn.OpenAsync(OpenReason.PeerOffer, cancellationToken);
                }
            }
            finally
            {
                _applyLock.Release();
            }
        }

        await conn.OnSignalAsync(body, cancellationToken);
    }

    /// <summary>
    /// From the activity monitor, on WireGuard's send path: traffic for an idle peer reached its stand-in (the handshake
    /// initiation; the packet itself waits staged in WireGuard). Only queues the wake-up.
    /// </summary>
    public void OnPeerActivity(WgKey peer, ReadOnlySpan<byte> firstPacket)
    {
        if (_waking.TryAdd(peer, 0) && !_wakeups.Writer.TryWrite(peer))
        {
            _waking.TryRemove(peer, out _);
        }
    }

    /// <summary>
    /// Parks lazy peers that carried no traffic for the inactivity timeout (telling the peer, so it parks too), and
    /// lazy peers still connecting that long after traffic woke them (an offline peer holds no attempt forever;
    /// the next packet wakes it again). The engine calls it after each <see cref="OnStats"/>.
    /// </summary>
    public async Task IdleInactiveAsync(CancellationToken cancellationToken)
    {
        var lazy = EffectiveLazy();
        if (!lazy.Enabled)
        {
            return;
        }

        var now = _time.GetUtcNow();
        foreach (var conn in _peers.Values)
        {
            if (!lazy.MayIdle(conn.Peer) || conn.IsParked)
            {
                continue;
            }

            string reason;
            if (conn.State == PeerConnectionState.Connected && conn.Quiet >= lazy.InactivityTimeout)
            {
                reason = $"lazy: no traffic for {ConfigDuration.Format(TimeSpan.FromSeconds(Math.Floor(conn.Quiet.TotalSeconds)))}";
            }
            else if (conn.State == PeerConnectionState.Connecting && now - conn.LastStateChange >= lazy.ConnectingTimeout)
            {
                reason = $"lazy: not connected within {ConfigDuration.Format(lazy.ConnectingTimeout)}; idle until traffic for it appears again";
            }
            else
            {
                continue;
            }

            await _applyLock.WaitAsync(cancellationToken);
            try
            {
                if (!IsCurrent(conn) || conn.IsParked)
                {
                    continue;
                }

                Interlocked.Increment(ref _idled);
                _logger.LogInformation("Peer {Peer} ({Ip}) goes idle: {Reason}", conn.Name, conn.Peer.Ip, reason);
                await conn.GoIdleAsync(Monitor().Watch(conn.PublicKey), reason, NoticeTimeout, cancellationToken);
            }
            finally
            {
                _applyLock.Release();
            }
        }
    }

    /// <summary>
    /// Tells every peer this agent has a session with that it is stopping (<see cref="PeerConn.Goodbye"/>),
    /// all at once and bounded by <paramref name="timeout"/>: a stop must not wait on signal.
    /// </summary>
    public async Task SayGoodbyeAsync(IPeerSignaling signaling, TimeSpan timeout)
    {
        using var bounded = new CancellationTokenSource(timeout, _time);
        var sends = _peers.Values
            .Select(conn => (conn.PublicKey, Body: conn.Goodbye()))
            .Where(p => p.Body is not null)
            .Select(async p =>
            {
                try
                {
                    await signaling.SendAsync(p.PublicKey, p.Body!, bounded.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or InvalidOperationException or IOException or Grpc.Core.RpcException)
                {
                    _logger.LogDebug("Goodbye to {Peer} not sent: {Problem}", p.PublicKey.ToShortString(), e.Message);
                }
            })
            .ToList();
        await Task.WhenAll(sends);
        if (sends.Count > 0)
        {
            _logger.LogInformation("Said goodbye to {Count} peers", sends.Count);
        }
    }

    /// <summary>Hands one poll of interface counters to every connection and status.</summary>
    public void OnStats(IReadOnlyDictionary<WgKey, WgPeerStats> stats)
    {
        foreach (var (key, conn) in _peers)
        {
            if (stats.TryGetValue(key, out var peerStats))
            {
                conn.OnStats(peerStats);
                _recorder.UpdatePeer(key.ToBase64(), s => s with { LastHandshake = peerStats.LastHandshake, RxBytes = peerStats.RxBytes, TxBytes = peerStats.TxBytes });
            }
        }
    }

    /// <summary>Closes every connection (the interface itself is the engine's to close).</summary>
    public async Task CloseAllAsync()
    {
        var all = _peers.Values.ToList();
        _peers.Clear();
        await Task.WhenAll(all.Select(RemoveAsync));
    }

    private async Task OnGoIdleAsync(PeerConn conn, ulong sessionId, CancellationToken cancellationToken)
    {
        if (!EffectiveLazy().MayIdle(conn.Peer))
        {
            return; // An eager side stays connected; the peer will wake on its offer.
        }

        await _applyLock.WaitAsync(cancellationToken);
        try
        {
            if (IsCurrent(conn) && conn.IsCurrentRemoteSession(sessionId))
            {
                Interlocked.Increment(ref _idled);
                _logger.LogInformation("Peer {Peer} ({Ip}) went idle: parking it too", conn.Name, conn.Peer.Ip);
                await conn.ParkAsync(Monitor().Watch(conn.PublicKey), "lazy: the peer went idle", cancellationToken);
            }
        }
        finally
        {
            _applyLock.Release();
        }
    }

    private async Task WakeLoopAsync(CancellationToken cancellationToken)
    {
        await foreach (var key in _wakeups.Reader.ReadAllAsync(cancellationToken))
        {
            _waking.TryRemove(key, out _);
            await _applyLock.WaitAsync(cancellationToken);
            try
            {
                if (_peers.TryGetValue(key, out var conn) && conn.IsParked)
                {
                    Interlocked.Increment(ref _wakesByTraffic);
                    _logger.LogInformation("Traffic for idle peer {Peer} ({Ip}): connecting", conn.Name, conn.Peer.Ip);
                    await conn.OpenAsync(OpenReason.Traffic, cancellationToken);
                }
            }
#pragma warning disable CA1031 // One peer failing to wake must not stop the others from waking.
            catch (Exception e) when (e is not OperationCanceledException)
#pragma warning restore CA1031
            {
                _logger.LogWarning(e, "Waking peer {Peer} failed", key.ToShortString());
            }
            finally
            {
                _applyLock.Release();
            }
        }
    }

    /// <summary>Lazy connections as configured, off when there is no way to watch idle peers.</summary>
    private LazyOptions EffectiveLazy() => _createMonitor is null ? LazyOptions.Off : Lazy;

    /// <summary>The activity monitor, made (with its socket, in kernel mode) the first time a peer parks.</summary>
    private IActivityMonitor Monitor()
    {
        if (_monitor is null)
        {
            _monitor = _createMonitor!(this);
            _wakeLoop = Task.Run(() => WakeLoopAsync(_lifetime.Token));
        }

        return _monitor;
    }

    /// <summary>
    /// A woken peer keeps its stand-in until it is connected: WireGuard may retry its initiation there until the endpoint
    /// moves, and a stand-in given back earlier could go to another peer and be blamed for that retry.
    /// </summary>
    private void OnStateChanged(object? sender, PeerStateChange change)
    {
        if (change.To == PeerConnectionState.Connected)
        {
            _monitor?.Unwatch(change.Peer);
        }
    }

    private bool IsCurrent(PeerConn conn) => _peers.TryGetValue(conn.PublicKey, out var current) && ReferenceEquals(current, conn);

    private async Task RemoveAsync(PeerConn conn)
    {
        _monitor?.Unwatch(conn.PublicKey);
        try
        {
            await conn.DisposeAsync();
        }
#pragma warning disable CA1031 // One peer failing to close must not keep the others open.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning(e, "Closing peer {Peer} failed", conn.Name);
        }

        _recorder.RemovePeer(conn.PublicKey.ToBase64());
        _logger.LogInformation("Peer {Peer} ({Ip}) removed", conn.Name, conn.Peer.Ip);
    }

    private void Publish(PeerConn conn)
    {
        // A connection closing after it left the map must not reappear in status.
        if (_peers.TryGetValue(conn.PublicKey, out var current) && ReferenceEquals(current, conn))
        {
            _recorder.SetPeer(conn.ToStatus());
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lifetime.CancelAsync();
        try
        {
            await _wakeLoop;
        }
        catch (OperationCanceledException)
        {
        }

        await CloseAllAsync();
        if (_monitor is not null)
        {
            await _monitor.DisposeAsync();
        }

        _lifetime.Dispose();
        _applyLock.Dispose();
    }
}
