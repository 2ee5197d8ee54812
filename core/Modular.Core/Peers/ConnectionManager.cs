using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Activity;
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
/// wakes it; a connected lazy peer that carried no traffic for the inactivity timeout is parked again. Those decisions
/// are the <see cref="LazyConnectionPolicy"/>'s (Lazy/), taken under this manager's apply gate.
/// </summary>
/// <remarks>
/// Locks: the apply gate (_applyLock) serializes map application, lazy parks and wakes, and comes before every lock
/// of a <see cref="PeerConn"/> (see its header for their order). _peers is a concurrent map, written under the gate.
/// </remarks>
public sealed class ConnectionManager : IAsyncDisposable, IActivityListener
{
    private readonly Func<RemotePeerInfo, PeerConn> _create;
    private readonly StatusRecorder _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly LazyConnectionPolicy _lazy;

    // The apply gate: held for one map application, one lazy park or wake. Guards the writes of _peers.
    private readonly SemaphoreSlim _applyLock = new(1, 1);
    private readonly ConcurrentDictionary<WgKey, PeerConn> _peers = new();
    private long _rejectedSignal;

    public ConnectionManager(IWgIface iface, IPeerSignaling signaling, IPeerPaths paths, IRelayConnector relay, PeerConnOptions options,
        StatusRecorder recorder, TimeProvider time, ILoggerFactory loggerFactory, Func<IActivityListener, IActivityMonitor>? createMonitor = null)
    {
        _recorder = recorder;
        _time = time;
        _logger = loggerFactory.CreateLogger<ConnectionManager>();
        _lazy = new LazyConnectionPolicy(createMonitor, _applyLock, Find, time, _logger, this);
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
        _lazy = new LazyConnectionPolicy(createMonitor, _applyLock, Find, _time, _logger, this);
        Action<PeerConn> publish = Publish;
        _create = peer => create(peer, publish);
    }

    /// <summary>
    /// Lazy connections as the next <see cref="ApplyAsync"/> applies them (the engine sets them from the config and
    /// the account's setting). Without a monitor factory they stay off.
    /// </summary>
    public LazyOptions Lazy
    {
        get => _lazy.Options;
        set => _lazy.Options = value;
    }

    /// <summary>Idle peers woken by their traffic, by their offer, and connected peers parked for inactivity.</summary>
    public (long ByTraffic, long ByPeer, long Idled) LazyCounters => _lazy.Counters;

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
            var lazy = _lazy.Effective;
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

                    await LazyConnectionPolicy.ReconsiderAsync(existing, lazy, cancellationToken);
                    continue;
                }

                var conn = _create(peer);
                conn.StateChanged += _lazy.OnStateChanged;
                _peers[peer.PublicKey] = conn;
                Publish(conn);
                await _lazy.StartAsync(conn, lazy, cancellationToken);
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

        if (await _lazy.OnSignalAsync(conn, body, cancellationToken))
        {
            return;
        }

        await conn.OnSignalAsync(body, cancellationToken);
    }

    /// <summary>
    /// From the activity monitor, on WireGuard's send path: traffic for an idle peer reached its stand-in (the handshake
    /// initiation; the packet itself waits staged in WireGuard). Only queues the wake-up.
    /// </summary>
    public void OnPeerActivity(WgKey peer, ReadOnlySpan<byte> firstPacket) => _lazy.OnPeerActivity(peer, firstPacket);

    /// <summary>
    /// Parks lazy peers that carried no traffic for the inactivity timeout (telling the peer, so it parks too), and
    /// lazy peers still connecting that long after traffic woke them (see <see cref="LazyConnectionPolicy"/>).
    /// The engine calls it after each <see cref="OnStats"/>.
    /// </summary>
    public Task IdleInactiveAsync(CancellationToken cancellationToken) => _lazy.IdleInactiveAsync(_peers.Values, cancellationToken);

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
    /// <param name="exemptBytes">Per peer, the PSK provider's exchange traffic so far (not activity); null: none.</param>
    public void OnStats(IReadOnlyDictionary<WgKey, WgPeerStats> stats, Func<WgKey, long>? exemptBytes = null)
    {
        foreach (var (key, conn) in _peers)
        {
            if (stats.TryGetValue(key, out var peerStats))
            {
                conn.OnStats(peerStats, exemptBytes?.Invoke(key) ?? 0);
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

    private async Task RemoveAsync(PeerConn conn)
    {
        _lazy.Forget(conn.PublicKey);
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
        await _lazy.StopAsync();
        await CloseAllAsync();
        await _lazy.DisposeAsync();
        _applyLock.Dispose();
    }
}
