using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Activity;
using Modular.Abstractions.Peers;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;
using Modular.Core.Lazy;
using Modular.Core.Peers;
using Modular.Core.Status;

namespace Modular.Core.Tests;

/// <summary>
/// Lazy connections between two connection managers (A and B) in one process: WireGuard, paths and the activity
/// monitors are doubles, signal goes from one manager to the other as the engine routes it.
/// </summary>
public sealed class LazyConnectionTests
{
    private static readonly TimeSpan LongTimeout = TimeSpan.FromMinutes(15);

    [Fact]
    public async Task A_lazy_peer_stays_idle_without_a_socket_until_traffic_then_both_sides_connect_keeping_the_staged_packet()
    {
        await using var pair = new LazyPair(Lazy(LongTimeout), Lazy(LongTimeout));
        await pair.ApplyAsync();

        Assert.Equal(PeerConnectionState.Idle, pair.AtoB.State);
        Assert.Equal(PeerConnectionState.Idle, pair.BtoA.State);
        Assert.True(pair.AtoB.IsParked && pair.BtoA.IsParked);
        Assert.Equal(0, pair.SignalSent);
        Assert.Empty(pair.RelayA.Proxies);
        var parked = pair.IfaceA.Peers[pair.KeyB];
        Assert.True(FakeActivityMonitor.IsStandIn(parked.Endpoint));
        Assert.Null(parked.PersistentKeepalive);
        Assert.Equal([IPNetwork.Parse("100.64.0.3/32")], parked.AllowedIps);
        Assert.Contains("lazy", pair.Recorder(pair.A).Snapshot().Peers.Single().Reason, StringComparison.Ordinal);

        var callsBeforeTraffic = pair.IfaceA.Calls.Count;
        Assert.True(pair.MonitorA.SendTraffic(pair.KeyB));
        await pair.WaitBothAsync(PeerConnectionState.Connected);

        Assert.Equal((1, 0, 0), pair.A.LazyCounters);
        Assert.Equal((0, 1, 0), pair.B.LazyCounters);

        // Connected: both give their stand-ins back (right after the state change is announced).
        await ConnPair.WaitForAsync(() => pair.MonitorA.Count == 0 && pair.MonitorB.Count == 0, "both stand-ins given back");

        // A's WireGuard peer was never removed on the way: the packet it staged is sent after the handshake.
        Assert.DoesNotContain(pair.IfaceA.Calls.Skip(callsBeforeTraffic), call => call.StartsWith("remove", StringComparison.Ordinal));

        // The side its peer woke starts the handshake (its keepalive comes with its first real endpoint); the side
        // its own traffic woke answers it (its WireGuard just sent an initiation and would wait 5 s for the next).
        Assert.NotNull(FirstRealSet(pair.IfaceB, pair.KeyA).PersistentKeepalive);
        Assert.Null(FirstRealSet(pair.IfaceA, pair.KeyB).PersistentKeepalive);
    }

    [Fact]
    public async Task Connected_lazy_peers_without_traffic_go_idle_on_both_sides_and_wake_again()
    {
        var inactivity = TimeSpan.FromSeconds(3);
        await using var pair = new LazyPair(Lazy(inactivity), Lazy(inactivity));
        await pair.ApplyAsync();
        pair.MonitorA.SendTraffic(pair.KeyB);
        await pair.WaitBothAsync(PeerConnectionState.Connected);

        // Only keepalive-sized traffic from here on: both park, A on its timer, B on A's GO_IDLE (or its own timer).
        pair.Quiet = true;
        await ConnPair.WaitForAsync(() => pair.AtoB.IsParked && pair.BtoA.IsParked, "both parked");
        Assert.Equal(PeerConnectionState.Idle, pair.AtoB.State);
        Assert.Equal(PeerConnectionState.Idle, pair.BtoA.State);
        Assert.True(pair.A.LazyCounters.Idled + pair.B.LazyCounters.Idled >= 2);
        Assert.Contains("lazy", pair.Recorder(pair.A).Snapshot().Peers.Single().Reason, StringComparison.Ordinal);
        Assert.True(FakeActivityMonitor.IsStandIn(pair.IfaceB.Peers[pair.KeyA].Endpoint));

        // A closed (parked) connection opens again, this time woken from B's side.
        pair.Quiet = false;
        Assert.True(pair.MonitorB.SendTraffic(pair.KeyA));
        await pair.WaitBothAsync(PeerConnectionState.Connected);
        Assert.Equal(1, pair.B.LazyCounters.ByTraffic);
        Assert.Equal(1, pair.A.LazyCounters.ByPeer);
    }

    [Fact]
    public async Task Always_connected_peers_connect_at_once_and_wake_the_lazy_side()
    {
        // A is lazy but lists B as always connected; B is lazy: A's offer wakes B.
        await using var pair = new LazyPair(Lazy(LongTimeout) with { AlwaysConnected = ["b"] }, Lazy(LongTimeout));
        await pair.ApplyAsync();
        await pair.WaitBothAsync(PeerConnectionState.Connected);
        Assert.Equal(1, pair.B.LazyCounters.ByPeer);
        Assert.False(pair.A.Lazy.MayIdle(pair.AtoB.Peer));
    }

    [Fact]
    public async Task An_eager_peer_wakes_a_lazy_one_and_ignores_its_go_idle()
    {
        var inactivity = TimeSpan.FromSeconds(3);
        await using var pair = new LazyPair(Lazy(inactivity), LazyOptions.Off);
        await pair.ApplyAsync();
        await pair.WaitBothAsync(PeerConnectionState.Connected);
        Assert.Equal(1, pair.A.LazyCounters.ByPeer);

        pair.Quiet = true;
        await ConnPair.WaitForAsync(() => pair.A.LazyCounters.Idled > 0, "A went idle");

        // B stays eager: it does not park on A's notice, and (being eager) it brings A back.
        Assert.False(pair.BtoA.IsParked);
        Assert.Equal(0, pair.MonitorB.Count);
    }

    [Fact]
    public async Task Turning_lazy_connections_off_opens_every_parked_peer()
    {
        await using var pair = new LazyPair(Lazy(LongTimeout), Lazy(LongTimeout));
        await pair.ApplyAsync();
        Assert.True(pair.AtoB.IsParked);

        pair.A.Lazy = LazyOptions.Off;
        await pair.ApplyAsync();
        await pair.WaitBothAsync(PeerConnectionState.Connected);
        await ConnPair.WaitForAsync(() => pair.MonitorA.Count == 0, "A's stand-in given back");
    }

    [Fact]
    public async Task A_lazy_peer_that_does_not_answer_goes_back_to_idle_and_traffic_wakes_it_again()
    {
        var giveUp = Lazy(LongTimeout) with { ConnectingTimeout = TimeSpan.FromSeconds(2) };
        await using var pair = new LazyPair(giveUp, giveUp);
        await pair.ApplyAsync();
        pair.SignalDown = true;

        pair.MonitorA.SendTraffic(pair.KeyB);
        await ConnPair.WaitForAsync(() => pair.AtoB.State == PeerConnectionState.Connecting, "A connecting");
        await ConnPair.WaitForAsync(() => pair.AtoB.IsParked, "A parked again");
        Assert.Contains("not connected within", pair.Recorder(pair.A).Snapshot().Peers.Single().Reason, StringComparison.Ordinal);

        pair.SignalDown = false;
        pair.MonitorA.SendTraffic(pair.KeyB);
        await pair.WaitBothAsync(PeerConnectionState.Connected);
        Assert.Equal(2, pair.A.LazyCounters.ByTraffic);
    }

    [Fact]
    public async Task A_go_idle_of_another_session_and_repeated_traffic_change_nothing()
    {
        await using var pair = new LazyPair(Lazy(LongTimeout), Lazy(LongTimeout));
        await pair.ApplyAsync();
        for (var i = 0; i < 5; i++)
        {
            pair.MonitorA.SendTraffic(pair.KeyB); // WireGuard retries its initiation while it waits
        }

        await pair.WaitBothAsync(PeerConnectionState.Connected);
        Assert.Equal(1, pair.A.LazyCounters.ByTraffic);

        await pair.B.OnSignalAsync(new SignalInbound(pair.KeyA, new SignalBody { Type = SignalBody.Types.Type.GoIdle, SessionId = 12345 }, null), CancellationToken.None);
        Assert.Equal(PeerConnectionState.Connected, pair.BtoA.State);
        Assert.Equal(0, pair.B.LazyCounters.Idled);
    }

    [Fact]
    public async Task A_peer_leaving_the_map_gives_back_its_stand_in_and_the_monitor_is_disposed_with_the_manager()
    {
        var pair = new LazyPair(Lazy(LongTimeout), Lazy(LongTimeout));
        await pair.ApplyAsync();
        Assert.Equal(1, pair.MonitorA.Count);

        await pair.A.ApplyAsync([], CancellationToken.None);
        Assert.Equal(0, pair.MonitorA.Count);
        Assert.False(pair.IfaceA.Peers.ContainsKey(pair.KeyB));

        await pair.DisposeAsync();
        Assert.True(pair.MonitorA.Disposed);
    }

    [Fact]
    public void Always_connected_matches_the_full_name_the_first_label_or_the_overlay_ip()
    {
        var peer = new RemotePeerInfo(ConnPair.RandomKey(), "db.modular.internal", "100.64.0.9", [IPNetwork.Parse("100.64.0.9/32")], null);
        Assert.True(Lazy(LongTimeout).MayIdle(peer));
        Assert.False(LazyOptions.Off.MayIdle(peer));
        Assert.False((Lazy(LongTimeout) with { AlwaysConnected = ["db"] }).MayIdle(peer));
        Assert.False((Lazy(LongTimeout) with { AlwaysConnected = ["DB.modular.internal"] }).MayIdle(peer));
        Assert.False((Lazy(LongTimeout) with { AlwaysConnected = ["100.64.0.9"] }).MayIdle(peer));
        Assert.True((Lazy(LongTimeout) with { AlwaysConnected = ["d", "100.64.0.90", "web"] }).MayIdle(peer));
    }

    [Fact]
    public void Giving_up_connecting_waits_the_inactivity_timeout_but_at_least_a_minute()
    {
        Assert.Equal(LongTimeout, Lazy(LongTimeout).ConnectingTimeout);
        Assert.Equal(TimeSpan.FromMinutes(1), Lazy(TimeSpan.FromSeconds(20)).ConnectingTimeout);
        Assert.Equal(TimeSpan.FromSeconds(2), (Lazy(TimeSpan.FromSeconds(20)) with { ConnectingTimeout = TimeSpan.FromSeconds(2) }).ConnectingTimeout);
    }

    [Fact]
    public void Keepalives_and_handshakes_alone_are_quiet_and_real_traffic_is_not()
    {
        var keepalive = TimeSpan.FromSeconds(25);
        var tracker = new InactivityTracker(keepalive);
        var start = DateTimeOffset.UnixEpoch;
        long rx = 1000, tx = 1000;
        Assert.Equal(TimeSpan.Zero, tracker.Observe(rx, tx, start));

        // 15 minutes of what WireGuard sends by itself: a keepalive each way every 25 s, a handshake every 2 minutes.
        for (var second = 1; second <= 900; second++)
        {
            if (second % 25 == 0)
            {
                rx += 32;
                tx += 32;
            }

            if (second % 120 == 0)
            {
                tx += 148;
                rx += 92;
            }

            var quiet = tracker.Observe(rx, tx, start.AddSeconds(second));
            Assert.Equal(TimeSpan.FromSeconds(second), quiet);
        }

        // One small ping and its reply (two 128-byte transport messages) is traffic.
        Assert.Equal(TimeSpan.Zero, tracker.Observe(rx + 128 + 300, tx + 128, start.AddSeconds(901)));

        // Counters that went backwards (the WireGuard peer was set anew) start a new quiet period.
        Assert.Equal(TimeSpan.Zero, tracker.Observe(10, 10, start.AddSeconds(950)));
        Assert.Equal(TimeSpan.FromSeconds(10), tracker.Observe(10, 10, start.AddSeconds(960)));
    }

    [Fact]
    public void A_psk_providers_exchange_traffic_is_not_activity_but_traffic_beside_it_is()
    {
        var tracker = new InactivityTracker(TimeSpan.FromSeconds(25));
        var start = DateTimeOffset.UnixEpoch;
        long rx = 1000, tx = 1000, exchange = 0;
        Assert.Equal(TimeSpan.Zero, tracker.Observe(rx, tx, start, exchange));

        // A Rosenpass exchange every two minutes (about 2.5 KB each way in the tunnel), reported by the provider.
        for (var minute = 2; minute <= 14; minute += 2)
        {
            rx += 2500;
            tx += 2500;
            exchange += 5000;
            Assert.Equal(TimeSpan.FromMinutes(minute), tracker.Observe(rx, tx, start.AddMinutes(minute), exchange));
        }

        // Reported exchange bytes are allowed for; real traffic beside them (5 KB each way, more than keepalives explain) is activity.
        Assert.Equal(TimeSpan.Zero, tracker.Observe(rx + 2500 + 5000, tx + 2500 + 5000, start.AddMinutes(16), exchange + 5000));
    }

    /// <summary>
    /// Benchmark (MODULAR_BENCH=1): what an idle peer costs in the agent — its connection object, its WireGuard
    /// entry's bookkeeping here and its stand-in — measured as managed heap growth over 10,000 parked peers.
    /// </summary>
    [SkippableFact]
    public async Task Memory_of_an_idle_peer()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        const int count = 10_000;
        var peers = Enumerable.Range(0, count)
            .Select(i => new RemotePeerInfo(ConnPair.RandomKey(), $"p{i}", $"100.64.{i >> 8}.{i & 255}", [IPNetwork.Parse($"100.64.{i >> 8}.{i & 255}/32")], null))
            .ToList();
        var iface = new RecordingWgIface { Answers = _ => false };
        var paths = new ScriptedPaths();
        var options = new PeerConnOptions();
        var signaling = new LoopbackSignaling();
        var relay = new FakeRelay();

        // The real stand-ins of userspace mode: claims on a real device's Bind hook.
        using var tun = new Modular.Testing.WireGuard.InMemoryTun();
        using var device = new Modular.WireGuard.Device.WgDevice(tun, new Modular.Testing.WireGuard.InMemoryNetwork().CreateBind(1), NullLoggerFactory.Instance, TimeProvider.System);
        BindHookActivityMonitor? monitor = null;
        await using var manager = new ConnectionManager(
            (peer, changed) => new PeerConn(peer, iface, signaling, paths, relay, options, TimeProvider.System, NullLogger.Instance, changed),
            new StatusRecorder(new InterfaceStatus("fake0", "userspace", 51820, 1280), new FeatureStatus(true, "15m", [], false, "auto", false, false, false),
                "key", new ServiceStatus("", true, null), new ServiceStatus("", true, null)),
            NullLogger.Instance,
            listener => monitor = new BindHookActivityMonitor(device.BindHook, listener, NullLogger.Instance))
        { Lazy = Lazy(LongTimeout) };

        var before = GC.GetTotalMemory(forceFullCollection: true);
        await manager.ApplyAsync(peers, CancellationToken.None);
        Assert.Equal(count, monitor!.Count);
        Assert.All(manager.Peers, p => Assert.True(p.IsParked));

        // What the doubles recorded is WireGuard's memory (kernel, wireguard-go or the device), not the agent's.
        iface.Peers.Clear();
        iface.Sets.Clear();
        iface.Calls.Clear();
        var after = GC.GetTotalMemory(forceFullCollection: true);
        Console.WriteLine($"idle peers: {count}; the agent's managed heap grew {(after - before) / count} B per idle peer (connection, status entry, stand-in claimed on the Bind hook)");
        GC.KeepAlive(manager);
    }

    private static LazyOptions Lazy(TimeSpan inactivity) => new(true, inactivity, []);

    private static WgPeerConfig FirstRealSet(RecordingWgIface iface, WgKey peer)
        => iface.Sets.First(s => s.PublicKey == peer && s.Endpoint is not null && !FakeActivityMonitor.IsStandIn(s.Endpoint));
}

/// <summary>An activity monitor whose stand-ins are 127.128.0.x:9; a test plays WireGuard sending to them.</summary>
internal sealed class FakeActivityMonitor : IActivityMonitor
{
    private readonly ConcurrentDictionary<WgKey, IPEndPoint> _watched = new();
    private int _next;

    public bool Disposed { get; private set; }

    /// <summary>The connection manager, set when it makes its monitor (the first time a peer parks).</summary>
    public IActivityListener? Listener { get; set; }

    public int Count => _watched.Count;

    public IPEndPoint Watch(WgKey peer) => _watched.GetOrAdd(peer, _ =>
    {
        var n = Interlocked.Increment(ref _next);
        return new IPEndPoint(new IPAddress([127, (byte)(128 + (n >> 16)), (byte)(n >> 8), (byte)n]), 9);
    });

    public void Unwatch(WgKey peer) => _watched.TryRemove(peer, out _);

    /// <summary>What WireGuard does with a packet for an idle peer: its handshake initiation reaches the stand-in.</summary>
    public bool SendTraffic(WgKey peer)
    {
        if (!_watched.ContainsKey(peer))
        {
            return false;
        }

        var initiation = new byte[148];
        initiation[0] = 1;
        Listener!.OnPeerActivity(peer, initiation);
        return true;
    }

    public static bool IsStandIn(IPEndPoint? endpoint) => endpoint is not null && endpoint.Address.GetAddressBytes() is [127, >= 128, _, _];

    public ValueTask DisposeAsync()
    {
        Disposed = true;
        return ValueTask.CompletedTask;
    }
}

/// <summary>Two connection managers facing each other, each with one peer (the other), polled as the engine polls them.</summary>
internal sealed class LazyPair : IAsyncDisposable
{
    private static readonly IPEndPoint AHost = IPEndPoint.Parse("198.18.0.2:51820");
    private static readonly IPEndPoint BHost = IPEndPoint.Parse("198.18.0.3:51820");

    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;
    private readonly Dictionary<ConnectionManager, StatusRecorder> _recorders = [];
    private readonly RemotePeerInfo _peerA;
    private readonly RemotePeerInfo _peerB;
    private int _signalSent;
    private bool _disposed;

    public LazyPair(LazyOptions lazyA, LazyOptions lazyB)
    {
        KeyA = ConnPair.RandomKey();
        KeyB = ConnPair.RandomKey();
        _peerA = new RemotePeerInfo(KeyA, "a", "100.64.0.2", [IPNetwork.Parse("100.64.0.2/32")], null);
        _peerB = new RemotePeerInfo(KeyB, "b", "100.64.0.3", [IPNetwork.Parse("100.64.0.3/32")], null);
        IfaceA = new RecordingWgIface { Answers = e => !FakeActivityMonitor.IsStandIn(e), RemoteSends = false };
        IfaceB = new RecordingWgIface { Answers = e => !FakeActivityMonitor.IsStandIn(e), RemoteSends = false };
        var options = new PeerConnOptions(OfferInterval: TimeSpan.FromMilliseconds(100), SilentPeer: TimeSpan.FromMinutes(10));
        (A, MonitorA) = NewManager(IfaceA, new ScriptedPaths(new IceCandidate(CandidateType.Host, AHost)), RelayA, KeyA, () => B!, options);
        (B, MonitorB) = NewManager(IfaceB, new ScriptedPaths(new IceCandidate(CandidateType.Host, BHost)), new FakeRelay(), KeyB, () => A, options);
        A.Lazy = lazyA;
        B.Lazy = lazyB;
        _pump = Task.Run(PumpAsync);
    }

    public WgKey KeyA { get; }

    public WgKey KeyB { get; }

    public RecordingWgIface IfaceA { get; }

    public RecordingWgIface IfaceB { get; }

    public FakeRelay RelayA { get; } = new();

    public ConnectionManager A { get; }

    public ConnectionManager B { get; }

    public FakeActivityMonitor MonitorA { get; }

    public FakeActivityMonitor MonitorB { get; }

    public PeerConn AtoB => A.Find(KeyB)!;

    public PeerConn BtoA => B.Find(KeyA)!;

    public int SignalSent => Volatile.Read(ref _signalSent);

    /// <summary>While true, signal delivers nothing (the peer is offline).</summary>
    public volatile bool SignalDown;

    /// <summary>While false, every poll shows traffic both ways; while true, none.</summary>
    public volatile bool Quiet;

    public StatusRecorder Recorder(ConnectionManager manager) => _recorders[manager];

    public async Task ApplyAsync()
    {
        await A.ApplyAsync([_peerB], CancellationToken.None);
        await B.ApplyAsync([_peerA], CancellationToken.None);
    }

    public Task WaitBothAsync(PeerConnectionState state)
        => ConnPair.WaitForAsync(() => AtoB.State == state && BtoA.State == state, $"both {state}");

    private (ConnectionManager Manager, FakeActivityMonitor Monitor) NewManager(
        RecordingWgIface iface, ScriptedPaths paths, FakeRelay relay, WgKey self, Func<ConnectionManager> remote, PeerConnOptions options)
    {
        var signaling = new ManagerSignaling(this, self, remote);
        paths.Reachable[AHost] = true;
        paths.Reachable[BHost] = true;
        var monitor = new FakeActivityMonitor();
        var recorder = new StatusRecorder(
            new InterfaceStatus("fake0", "userspace", 51820, 1280),
            new FeatureStatus(true, "15m", [], false, "auto", false, false, false),
            self.ToBase64(),
            new ServiceStatus("", true, null),
            new ServiceStatus("", true, null));
        var manager = new ConnectionManager(
            (peer, changed) => new PeerConn(peer, iface, signaling, paths, relay, options, TimeProvider.System, NullLogger.Instance, changed),
            recorder,
            NullLogger.Instance,
            listener =>
            {
                monitor.Listener = listener;
                return monitor;
            });
        _recorders[manager] = recorder;
        return (manager, monitor);
    }

    private async Task PumpAsync()
    {
        // What the engine's stats loop does: counters into the connections, then the inactivity check.
        long traffic = 0;
        while (!_stop.IsCancellationRequested)
        {
            if (!Quiet)
            {
                traffic += 1000;
            }

            foreach (var (manager, iface) in new[] { (A, IfaceA), (B, IfaceB) })
            {
                var stats = (await iface.GetStatsAsync(CancellationToken.None))
                    .ToDictionary(p => p.Key, p => p.Value with { RxBytes = p.Value.RxBytes + traffic, TxBytes = p.Value.TxBytes + traffic });
                manager.OnStats(stats);
                try
                {
                    await manager.IdleInactiveAsync(_stop.Token);
                }
                catch (OperationCanceledException)
                {
                }
            }

            try
            {
                await Task.Delay(50, _stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _stop.CancelAsync();
        await _pump;
        await A.DisposeAsync();
        await B.DisposeAsync();
        _stop.Dispose();
    }

    /// <summary>Signal as the engine routes it: a body sent to a key reaches the other manager as coming from this side.</summary>
    private sealed class ManagerSignaling(LazyPair pair, WgKey self, Func<ConnectionManager> remote) : IPeerSignaling
    {
        public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref pair._signalSent);
            if (!pair.SignalDown)
            {
                var copy = body.Clone();
                _ = Task.Run(() => remote().OnSignalAsync(new SignalInbound(self, copy, null), CancellationToken.None), CancellationToken.None);
            }

            return Task.CompletedTask;
        }
    }
}
