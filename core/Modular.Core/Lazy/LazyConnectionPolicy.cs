using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
using Modular.Abstractions.Config;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Peers;

namespace Modular.Core.Lazy;

/// <summary>
/// The lazy-connection policy of a <see cref="ConnectionManager"/>: which peers park (wait Idle behind an activity
/// monitor's stand-in) instead of opening, what wakes a parked one (traffic for it reaching the stand-in, or its
/// offer over signal), and when a connected one goes idle again (no traffic for the inactivity timeout, telling the
/// peer with GO_IDLE; or still connecting that long after traffic woke it) or parks because its peer went idle.
/// The mechanism (<see cref="PeerConn.ParkAsync"/>, <see cref="PeerConn.OpenAsync(OpenReason, CancellationToken)"/>)
/// is the connection's; every decision here is taken under the manager's apply gate, so it never races a map.
/// </summary>
internal sealed class LazyConnectionPolicy : IActivityListener, IAsyncDisposable
{
    /// <summary>How long a go-idle notice to the peer may take before the connection parks anyway.</summary>
    private static readonly TimeSpan NoticeTimeout = TimeSpan.FromSeconds(2);

    private readonly Func<IActivityListener, IActivityMonitor>? _createMonitor;
    private readonly SemaphoreSlim _applyGate;
    private readonly Func<WgKey, PeerConn?> _find;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly IActivityListener _listener;
    // Unbounded, yet never more than one entry per peer: _waking lets a peer in only once until the loop takes it.
    // (A bounded DropWrite queue dropped the wake of the 4,097th peer while TryWrite said true, and that peer,
    // still marked waking, never woke again.)
    private readonly Channel<WgKey> _wakeups = Channel.CreateUnbounded<WgKey>(new UnboundedChannelOptions { SingleReader = true });
    private readonly ConcurrentDictionary<WgKey, byte> _waking = new();
    private readonly CancellationTokenSource _lifetime = new();
    private long _wakesByTraffic;
    private long _wakesByPeer;
    private long _idled;

    // Written under the apply gate (the first park makes them); the monitor is read without it to unwatch.
    private IActivityMonitor? _monitor;
    private Task _wakeLoop = Task.CompletedTask;

    /// <param name="createMonitor">Makes the activity monitor; null: no way to watch idle peers, lazy connections stay off.</param>
    /// <param name="applyGate">The manager's apply gate, taken for every park and wake.</param>
    /// <param name="find">The manager's current connection for a peer.</param>
    /// <param name="listener">What the monitor reports to (the manager, which hands it back to <see cref="OnPeerActivity"/>).</param>
    public LazyConnectionPolicy(Func<IActivityListener, IActivityMonitor>? createMonitor, SemaphoreSlim applyGate, Func<WgKey, PeerConn?> find,
        TimeProvider time, ILogger logger, IActivityListener? listener = null)
    {
        _createMonitor = createMonitor;
        _applyGate = applyGate;
        _find = find;
        _time = time;
        _logger = logger;
        _listener = listener ?? this;
    }

    /// <summary>Lazy connections as configured (see <see cref="ConnectionManager.Lazy"/>).</summary>
    public LazyOptions Options { get; set; } = LazyOptions.Off;

    /// <summary>Lazy connections as configured, off when there is no way to watch idle peers.</summary>
    public LazyOptions Effective => _createMonitor is null ? LazyOptions.Off : Options;

    /// <summary>Idle peers woken by their traffic, by their offer, and connected peers parked for inactivity.</summary>
    public (long ByTraffic, long ByPeer, long Idled) Counters
        => (Interlocked.Read(ref _wakesByTraffic), Interlocked.Read(ref _wakesByPeer), Interlocked.Read(ref _idled));

    /// <summary>A new peer of the map: parked when it may idle, else opened. Call under the apply gate.</summary>
    public async Task StartAsync(PeerConn conn, LazyOptions lazy, CancellationToken cancellationToken)
    {
        if (lazy.MayIdle(conn.Peer))
        {
            await conn.ParkAsync(Monitor().Watch(conn.PublicKey), "lazy: idle until traffic for it appears", cancellationToken);
        }
        else
        {
            await conn.OpenAsync(cancellationToken);
        }
    }

    /// <summary>A peer still in the map: opened when it is parked but may no longer idle. Call under the apply gate.</summary>
    public static async Task ReconsiderAsync(PeerConn conn, LazyOptions lazy, CancellationToken cancellationToken)
    {
        if (conn.IsParked && !lazy.MayIdle(conn.Peer))
        {
            // Lazy connections turned off, or the peer became always-connected.
            await conn.OpenAsync(OpenReason.Map, cancellationToken);
        }
    }

    /// <summary>
    /// A verified signal body, before the connection takes it: a go-idle of the peer's current session parks a lazy
    /// peer (consumed: true); an offer wakes a parked peer first (its side has traffic), then goes on to the connection.
    /// </summary>
    public async Task<bool> OnSignalAsync(PeerConn conn, SignalBody body, CancellationToken cancellationToken)
    {
        if (body.Type == SignalBody.Types.Type.GoIdle)
        {
            await OnGoIdleAsync(conn, body.SessionId, cancellationToken);
            return true;
        }

        if (body.Type == SignalBody.Types.Type.Offer && conn.IsParked)
        {
            await _applyGate.WaitAsync(cancellationToken);
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
                _applyGate.Release();
            }
        }

        return false;
    }

    /// <summary>
    /// From the activity monitor, on WireGuard's send path: traffic for an idle peer reached its stand-in (the handshake
    /// initiation; the packet itself waits staged in WireGuard). Only queues the wake-up.
    /// </summary>
    public void OnPeerActivity(WgKey peer, ReadOnlySpan<byte> firstPacket)
    {
        if (_waking.TryAdd(peer, 0) && !_wakeups.Writer.TryWrite(peer))
        {
            _waking.TryRemove(peer, out _); // completed: the policy is closing
        }
    }

    /// <summary>
    /// Parks lazy peers that carried no traffic for the inactivity timeout (telling the peer, so it parks too), and
    /// lazy peers still connecting that long after traffic woke them (an offline peer holds no attempt forever;
    /// the next packet wakes it again).
    /// </summary>
    public async Task IdleInactiveAsync(IEnumerable<PeerConn> peers, CancellationToken cancellationToken)
    {
        var lazy = Effective;
        if (!lazy.Enabled)
        {
            return;
        }

        var now = _time.GetUtcNow();
        foreach (var conn in peers)
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

            await _applyGate.WaitAsync(cancellationToken);
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
                _applyGate.Release();
            }
        }
    }

    /// <summary>
    /// A woken peer keeps its stand-in until it is connected: WireGuard may retry its initiation there until the endpoint
    /// moves, and a stand-in given back earlier could go to another peer and be blamed for that retry.
    /// </summary>
    public void OnStateChanged(object? sender, PeerStateChange change)
    {
        if (change.To == PeerConnectionState.Connected)
        {
            _monitor?.Unwatch(change.Peer);
        }
    }

    /// <summary>The peer left the map: its stand-in, if any, is given back.</summary>
    public void Forget(WgKey peer) => _monitor?.Unwatch(peer);

    /// <summary>Stops waking peers (before the manager closes them).</summary>
    public async Task StopAsync()
    {
        await _lifetime.CancelAsync();
        try
        {
            await _wakeLoop;
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Disposes the monitor (after the manager closed every connection).</summary>
    public async ValueTask DisposeAsync()
    {
        if (_monitor is not null)
        {
            await _monitor.DisposeAsync();
        }

        _lifetime.Dispose();
    }

    private async Task OnGoIdleAsync(PeerConn conn, ulong sessionId, CancellationToken cancellationToken)
    {
        if (!Effective.MayIdle(conn.Peer))
        {
            return; // An eager side stays connected; the peer will wake on its offer.
        }

        await _applyGate.WaitAsync(cancellationToken);
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
            _applyGate.Release();
        }
    }

    private async Task WakeLoopAsync(CancellationToken cancellationToken)
    {
        await foreach (var key in _wakeups.Reader.ReadAllAsync(cancellationToken))
        {
            _waking.TryRemove(key, out _);
            await _applyGate.WaitAsync(cancellationToken);
            try
            {
                if (_find(key) is { } conn && conn.IsParked)
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
                _applyGate.Release();
            }
        }
    }

    /// <summary>The activity monitor, made (with its socket, in kernel mode) the first time a peer parks. Call under the apply gate.</summary>
    private IActivityMonitor Monitor()
    {
        if (_monitor is null)
        {
            _monitor = _createMonitor!(_listener);
            _wakeLoop = Task.Run(() => WakeLoopAsync(_lifetime.Token));
        }

        return _monitor;
    }

    private bool IsCurrent(PeerConn conn) => ReferenceEquals(_find(conn.PublicKey), conn);
}
