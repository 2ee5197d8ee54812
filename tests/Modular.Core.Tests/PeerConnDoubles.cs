using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Peers;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;
using Modular.Core.Ice;
using Modular.Core.Peers;

namespace Modular.Core.Tests;

/// <summary>An interface that records what the connection did; handshakes happen when a test says so.</summary>
internal sealed class RecordingWgIface : IWgIface
{
    public ConcurrentDictionary<WgKey, WgPeerConfig> Peers { get; } = new();

    public ConcurrentQueue<string> Calls { get; } = new();

    /// <summary>When true, every peer set with an endpoint handshakes at once (as a reachable peer would).</summary>
    public volatile bool HandshakeOnSet = true;

    private readonly ConcurrentDictionary<WgKey, DateTimeOffset> _handshakes = new();

    public string Name => "fake0";

    public WgInterfaceMode Mode { get; init; } = WgInterfaceMode.Userspace;

    public IPNetwork Address => IPNetwork.Parse("100.64.0.0/10");

    public IPAddress OverlayIp => IPAddress.Parse("100.64.0.1");

    public int Mtu => 1280;

    public int ListenPort => 51820;

    public WgKey PublicKey => default;

    public IWgBindHook? BindHook => null;

    public ValueTask CreateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask UpAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask CloseAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>Every configuration set, in order.</summary>
    public ConcurrentQueue<WgPeerConfig> Sets { get; } = new();

    /// <summary>Which endpoints answer a handshake (a stand-in of an activity monitor does not).</summary>
    public Func<IPEndPoint?, bool> Answers { get; set; } = _ => true;

    /// <summary>The clock handshakes are stamped with (the connection's, when a test runs it on a fake one).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    private HeldSet? _held;

    /// <summary>
    /// Makes the next <see cref="SetPeerAsync"/> wait, called but not yet applied, until the test releases it: a
    /// WireGuard slow to take a configuration, so a test can run something else in between.
    /// </summary>
    public HeldSet HoldNextSet()
    {
        var held = new HeldSet();
        Volatile.Write(ref _held, held);
        return held;
    }

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _held, null) is { } held)
        {
            return SetWhenReleasedAsync(peer, held);
        }

        Set(peer);
        return ValueTask.CompletedTask;
    }

    private async ValueTask SetWhenReleasedAsync(WgPeerConfig peer, HeldSet held)
    {
        held.Entered.TrySetResult(peer);
        await held.Release.Task;
        Set(peer);
        held.Applied.TrySetResult();
    }

    private void Set(WgPeerConfig peer)
    {
        // Recorded first: a test that sees the new config in Peers also finds the call.
        Sets.Enqueue(peer);
        Calls.Enqueue($"set {peer.PublicKey.ToShortString()} {peer.Endpoint}");
        Peers[peer.PublicKey] = peer;
        if (Answers(peer.Endpoint))
        {
            Handshake(peer.PublicKey);
        }
    }

    public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken)
    {
        Peers.TryRemove(publicKey, out _);
        _handshakes.TryRemove(publicKey, out _);
        Calls.Enqueue($"remove {publicKey.ToShortString()}");
        return ValueTask.CompletedTask;
    }

    public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken)
    {
        if (Peers.TryGetValue(publicKey, out var peer))
        {
            Peers[publicKey] = peer with { Endpoint = endpoint };
        }

        Calls.Enqueue($"endpoint {publicKey.ToShortString()} {endpoint}");
        if (Answers(endpoint))
        {
            Handshake(publicKey);
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    /// <summary>While true, every poll shows more bytes received (the remote's keepalives arriving); false: the remote went silent.</summary>
    public volatile bool RemoteSends = true;

    private long _rxBytes = 100;

    /// <summary>The received-bytes counter the next poll starts from.</summary>
    public long RxBytes => Interlocked.Read(ref _rxBytes);

    public ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
    {
        var rx = RemoteSends ? Interlocked.Add(ref _rxBytes, 32) : Interlocked.Read(ref _rxBytes);
        IReadOnlyDictionary<WgKey, WgPeerStats> stats = Peers.Keys.ToDictionary(
            k => k,
            k => new WgPeerStats(_handshakes.TryGetValue(k, out var h) ? h : null, rx, 200, Peers[k].Endpoint));
        return ValueTask.FromResult(stats);
    }

    private void Handshake(WgKey key)
    {
        if (HandshakeOnSet)
        {
            _handshakes[key] = Time.GetUtcNow();
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>A set of a WireGuard peer held back by <see cref="RecordingWgIface.HoldNextSet"/>.</summary>
internal sealed class HeldSet
{
    /// <summary>Completes with the configuration once the set was called (it is not applied yet).</summary>
    public TaskCompletionSource<WgPeerConfig> Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completing it lets the held set take effect.</summary>
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes once the held set took effect.</summary>
    public TaskCompletionSource Applied { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

/// <summary>Signal between connections in this process: a body sent to a key reaches that key's connection.</summary>
internal sealed class LoopbackSignaling : IPeerSignaling
{
    private readonly ConcurrentDictionary<WgKey, (WgKey Self, PeerConn Conn)> _byRecipient = new();

    public int Sent;

    /// <summary>Every body sent, in order (a copy, as it went out).</summary>
    public ConcurrentQueue<SignalBody> Bodies { get; } = new();

    /// <summary>Messages sent to <paramref name="recipient"/> reach <paramref name="conn"/> as coming from <paramref name="sender"/>.</summary>
    public void Route(WgKey recipient, PeerConn conn) => _byRecipient[recipient] = (recipient, conn);

    public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Sent);
        Bodies.Enqueue(body.Clone());
        if (_byRecipient.TryGetValue(recipient, out var target))
        {
            _ = Task.Run(() => target.Conn.OnSignalAsync(body.Clone(), CancellationToken.None), CancellationToken.None);
        }

        return Task.CompletedTask;
    }
}

/// <summary>
/// Paths where a test decides which remote candidates answer checks. Linked to the peer's paths (<see cref="Peer"/>),
/// a check that passes also reaches the peer as a valid check, when the peer answers checks for those credentials (as
/// an <see cref="IceAgent"/> tells its registration where a verified check came from).
/// </summary>
internal sealed class ScriptedPaths(params IceCandidate[] local) : IPeerPaths
{
    private readonly ConcurrentDictionary<string, Action<IPEndPoint, string>> _registered = new();

    private int _unanswered;

    public ConcurrentDictionary<IPEndPoint, bool> Reachable { get; } = new();

    public int Checks;

    /// <summary>The peer's paths, which hear this side's passing checks; null: nobody hears them.</summary>
    public ScriptedPaths? Peer { get; set; }

    /// <summary>
    /// The next this many checks go unanswered even towards a reachable candidate (a check window that ended early,
    /// or checks sent before the peer answered for its credentials).
    /// </summary>
    public int Unanswered
    {
        get => Volatile.Read(ref _unanswered);
        set => Volatile.Write(ref _unanswered, value);
    }

    public IReadOnlyList<IceCandidate> LocalCandidates => local;

    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck)
    {
        _registered[local.Ufrag] = onValidCheck;
        return new Registration(() => _registered.TryRemove(new KeyValuePair<string, Action<IPEndPoint, string>>(local.Ufrag, onValidCheck)));
    }

    public async Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Checks);
        if (!TakeUnanswered() && Reachable.ContainsKey(remote))
        {
            if (Peer?._registered.TryGetValue(remoteCredentials.Ufrag, out var onValidCheck) == true)
            {
                onValidCheck(LocalCandidates.Count > 0 ? LocalCandidates[0].Endpoint : remote, local.Ufrag);
            }

            return new CheckResult(remote, TimeSpan.FromMilliseconds(1.5));
        }

        await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        return null;
    }

    public IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote) => checkedRemote;

    /// <summary>True (and one fewer left) while <see cref="Unanswered"/> checks remain.</summary>
    private bool TakeUnanswered()
    {
        while (true)
        {
            var left = Volatile.Read(ref _unanswered);
            if (left <= 0)
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _unanswered, left - 1, left) == left)
            {
                return true;
            }
        }
    }

    private sealed class Registration(Action dispose) : IDisposable
    {
        public void Dispose() => dispose();
    }
}

internal sealed class FakeRelay : IRelayConnector
{
    private int _port = 40000;

    public ConcurrentBag<FakeProxy> Proxies { get; } = [];

    public bool Available = true;

    public Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken)
    {
        if (!Available)
        {
            throw new InvalidOperationException("no relay");
        }

        var proxy = new FakeProxy(new IPEndPoint(IPAddress.Loopback, Interlocked.Increment(ref _port)));
        Proxies.Add(proxy);
        return Task.FromResult(new RelayedPath(proxy, "198.18.0.1:33080"));
    }
}

internal sealed class FakeProxy(IPEndPoint endpoint) : IProxy
{
    public volatile bool Working;
    public volatile bool Closed;

    public string Kind => "fake";

    public IPEndPoint EndpointAddr => endpoint;

    public event EventHandler? Disconnected;

    public ValueTask AddRelayedConnAsync(IRelayedConnection connection, WgKey remotePeer, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public void Work() => Working = true;

    public void Pause() => Working = false;

    /// <summary>What <see cref="BytesToWireGuard"/> answers; null (the default): a proxy that does not count, never redirected.</summary>
    public volatile Func<long?> Delivered = () => null;

    /// <summary>Called with each redirect's endpoint as it is made (a test records what WireGuard was set to then).</summary>
    public volatile Action<IPEndPoint>? OnRedirect;

    public long? BytesToWireGuard => Delivered();

    /// <summary>Every <see cref="RedirectAs"/> endpoint, in order.</summary>
    public ConcurrentQueue<IPEndPoint> Redirects { get; } = new();

    public void RedirectAs(IPEndPoint endpoint)
    {
        OnRedirect?.Invoke(endpoint);
        Redirects.Enqueue(endpoint);
        Working = true;
    }

    public ValueTask CloseAsync()
    {
        Closed = true;
        Working = false;
        Disconnected?.Invoke(this, EventArgs.Empty);
        return ValueTask.CompletedTask;
    }

    public ValueTask DisposeAsync() => CloseAsync();
}

/// <summary>Two connections facing each other (A's view of B and B's view of A) over loopback signal.</summary>
internal sealed class ConnPair : IAsyncDisposable
{
    public static readonly IPEndPoint AHost = IPEndPoint.Parse("198.18.0.2:51820");
    public static readonly IPEndPoint BHost = IPEndPoint.Parse("198.18.0.3:51820");

    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;

    /// <param name="clock">
    /// A fake clock both connections run on (each through its own <see cref="WatchedClock"/>); it moves only when the
    /// test moves it (<see cref="RunUntilAsync"/>, <see cref="WatchedClock.AdvanceAsync"/>). Null: the real clock.
    /// </param>
    public ConnPair(PeerConnOptions options, FakeTimeProvider? clock = null)
    {
        var keyA = RandomKey();
        var keyB = RandomKey();
        Clock = clock;
        TimeProvider timeA = TimeProvider.System;
        TimeProvider timeB = TimeProvider.System;
        if (clock is not null)
        {
            ClockA = new WatchedClock(clock);
            timeA = ClockA;
            timeB = new WatchedClock(clock);
        }

        IfaceA = new RecordingWgIface { Time = timeA };
        IfaceB = new RecordingWgIface { Time = timeB };
        PathsA = new ScriptedPaths(new IceCandidate(CandidateType.Host, AHost));
        PathsB = new ScriptedPaths(new IceCandidate(CandidateType.Host, BHost));
        PathsA.Peer = PathsB;
        PathsB.Peer = PathsA;
        RelayA = new FakeRelay();
        RelayB = new FakeRelay();
        var signalFromA = new LoopbackSignaling();
        var signalFromB = new LoopbackSignaling();
        SignalA = signalFromA;
        SignalB = signalFromB;
        var peerB = new RemotePeerInfo(keyB, "b", "100.64.0.3", [IPNetwork.Parse("100.64.0.3/32")], null);
        var peerA = new RemotePeerInfo(keyA, "a", "100.64.0.2", [IPNetwork.Parse("100.64.0.2/32")], null);
        AtoB = new PeerConn(peerB, IfaceA, signalFromA, PathsA, RelayA, options, timeA, NullLogger.Instance);
        BtoA = new PeerConn(peerA, IfaceB, signalFromB, PathsB, RelayB, options, timeB, NullLogger.Instance);
        signalFromA.Route(keyB, BtoA);
        signalFromB.Route(keyA, AtoB);
        _pump = Task.Run(PumpStatsAsync);
    }

    /// <summary>The fake clock both sides run on; null when they run on the real one.</summary>
    public FakeTimeProvider? Clock { get; }

    /// <summary>A's view of <see cref="Clock"/>, which sees A's timers; null on the real clock.</summary>
    public WatchedClock? ClockA { get; }

    public RecordingWgIface IfaceA { get; }

    public RecordingWgIface IfaceB { get; }

    public ScriptedPaths PathsA { get; }

    public ScriptedPaths PathsB { get; }

    public FakeRelay RelayA { get; }

    public FakeRelay RelayB { get; }

    public LoopbackSignaling SignalA { get; }

    public LoopbackSignaling SignalB { get; }

    public PeerConn AtoB { get; }

    public PeerConn BtoA { get; }

    public void MakeDirectPathWork()
    {
        PathsA.Reachable[BHost] = true;
        PathsB.Reachable[AHost] = true;
    }

    public async Task OpenBothAsync()
    {
        await AtoB.OpenAsync(CancellationToken.None);
        await BtoA.OpenAsync(CancellationToken.None);
    }

    public Task WaitBothConnectedAsync()
        => RunUntilAsync(() => AtoB.State == PeerConnectionState.Connected && BtoA.State == PeerConnectionState.Connected, "both Connected");

    /// <summary>
    /// <see cref="WaitForAsync"/> that, on a fake clock, lets the clock run meanwhile (a step per poll, no faster than
    /// real time): for what takes the connections' timers to happen, such as connecting or a reconnect after a silence.
    /// </summary>
    public Task RunUntilAsync(Func<bool> condition, string what, int seconds = 20)
    {
        var clock = Clock;
        return clock is null
            ? WaitForAsync(condition, what, seconds)
            : WaitForAsync(
                () =>
                {
                    if (condition())
                    {
                        return true;
                    }

                    clock.Advance(PollInterval);
                    return false;
                },
                what,
                seconds);
    }

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(20);

    public static async Task WaitForAsync(Func<bool> condition, string what, int seconds = 20)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > until)
            {
                throw new TimeoutException($"not within {seconds} s: {what}");
            }

            await Task.Delay(PollInterval);
        }
    }

    public static WgKey RandomKey() => new(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    private async Task PumpStatsAsync()
    {
        // What the engine's stats loop does: counters from the interface into each connection.
        while (!_stop.IsCancellationRequested)
        {
            foreach (var (iface, conn) in new[] { (IfaceA, AtoB), (IfaceB, BtoA) })
            {
                var stats = await iface.GetStatsAsync(CancellationToken.None);
                if (stats.TryGetValue(conn.PublicKey, out var s))
                {
                    conn.OnStats(s);
                }
            }

            try
            {
                await Task.Delay(25, _stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump;
        await AtoB.DisposeAsync();
        await BtoA.DisposeAsync();
        _stop.Dispose();
    }
}

/// <summary>A connection's state changes as they happen (raised on its own threads).</summary>
internal sealed class StateChanges
{
    private readonly List<PeerStateChange> _changes = [];

    public static StateChanges Of(PeerConn conn)
    {
        var changes = new StateChanges();
        conn.StateChanged += (_, change) =>
        {
            lock (changes._changes)
            {
                changes._changes.Add(change);
            }
        };
        return changes;
    }

    public IReadOnlyList<PeerStateChange> Snapshot()
    {
        lock (_changes)
        {
            return [.. _changes];
        }
    }
}

/// <summary>
/// One connection's view of a fake clock shared with others: the timers the connection makes on it are counted, so a
/// test can tell when the connection's loop has looked at the clock after the test moved it. The loop waits on one
/// timer at a time (its wait for a wake-up, or its back-off), so one timer waiting means the loop is at rest.
/// </summary>
internal sealed class WatchedClock(FakeTimeProvider clock) : TimeProvider
{
    private readonly Lock _lock = new();
    private readonly List<WatchedTimer> _waiting = []; // guarded by _lock
    private int _made; // guarded by _lock

    public override DateTimeOffset GetUtcNow() => clock.GetUtcNow();

    public override long GetTimestamp() => clock.GetTimestamp();

    public override long TimestampFrequency => clock.TimestampFrequency;

    public override TimeZoneInfo LocalTimeZone => clock.LocalTimeZone;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new WatchedTimer(this);
        lock (_lock)
        {
            _made++;
            _waiting.Add(timer);
        }

        timer.Inner = clock.CreateTimer(
            s =>
            {
                timer.End(fired: true);
                callback(s);
            },
            state,
            dueTime,
            period);
        return timer;
    }

    /// <summary>
    /// Moves the shared clock on by <paramref name="by"/> (at least the loop's wait, 1 s) and returns once this
    /// connection's loop, woken by the clock, has gone round: whatever the loop does at the new time is done by then.
    /// A wake-up that raced the move could have let the loop read the clock just before it moved; then it goes again.
    /// </summary>
    public async Task AdvanceAsync(TimeSpan by)
    {
        while (true)
        {
            WatchedTimer? resting = null;
            await ConnPair.WaitForAsync(() => (resting = OnlyWaiting()) is not null, "the loop at rest, waiting on the clock");
            clock.Advance(by);
            await ConnPair.WaitForAsync(() => resting!.Ended, "the loop's wait ended");
            if (!resting!.Fired)
            {
                continue;
            }

            await ConnPair.WaitForAsync(() => Made > resting.MadeWhenEnded, "the loop round at the new time");
            return;
        }
    }

    private int Made
    {
        get
        {
            lock (_lock)
            {
                return _made;
            }
        }
    }

    private WatchedTimer? OnlyWaiting()
    {
        lock (_lock)
        {
            return _waiting.Count == 1 ? _waiting[0] : null;
        }
    }

    private sealed class WatchedTimer(WatchedClock owner) : ITimer
    {
        public ITimer? Inner;

        public volatile bool Ended;

        public volatile bool Fired;

        /// <summary>How many timers the connection had made when this one ended.</summary>
        public int MadeWhenEnded;

        public void End(bool fired)
        {
            lock (owner._lock)
            {
                if (Ended)
                {
                    return;
                }

                MadeWhenEnded = owner._made;
                owner._waiting.Remove(this);
                Fired = fired;
                Ended = true;
            }
        }

        public bool Change(TimeSpan dueTime, TimeSpan period) => Inner!.Change(dueTime, period);

        public void Dispose()
        {
            End(fired: false);
            Inner?.Dispose();
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>
/// Answers every offer as a remote agent would (so a connection gets remote credentials) and records what was sent.
/// </summary>
internal sealed class AnsweringSignaling : IPeerSignaling
{
    public ConcurrentDictionary<WgKey, PeerConn> Conns { get; } = new();

    public ConcurrentQueue<SignalBody> Sent { get; } = new();

    public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
    {
        Sent.Enqueue(body);
        if (body.Type == SignalBody.Types.Type.Offer && Conns.TryGetValue(recipient, out var conn))
        {
            var answer = new SignalBody { Type = SignalBody.Types.Type.Answer, Ufrag = "remoteUf", Pwd = "remotePasswordRemotePass", SessionId = 42 };
            _ = Task.Run(() => conn.OnSignalAsync(answer, CancellationToken.None), CancellationToken.None);
        }

        return Task.CompletedTask;
    }
}

/// <summary>Signal that takes every message and never delivers it: each send waits until it is cancelled.</summary>
internal sealed class HangingSignaling : IPeerSignaling
{
    public ConcurrentQueue<SignalBody> Sent { get; } = new();

    public async Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
    {
        Sent.Enqueue(body);
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }
}
