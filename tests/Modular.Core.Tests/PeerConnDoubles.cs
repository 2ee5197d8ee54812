using System.Collections.Concurrent;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
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

    public WgInterfaceMode Mode => WgInterfaceMode.Userspace;

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

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken)
    {
        // Recorded first: a test that sees the new config in Peers also finds the call.
        Sets.Enqueue(peer);
        Calls.Enqueue($"set {peer.PublicKey.ToShortString()} {peer.Endpoint}");
        Peers[peer.PublicKey] = peer;
        if (Answers(peer.Endpoint))
        {
            Handshake(peer.PublicKey);
        }

        return ValueTask.CompletedTask;
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
            _handshakes[key] = DateTimeOffset.UtcNow;
        }
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>Signal between connections in this process: a body sent to a key reaches that key's connection.</summary>
internal sealed class LoopbackSignaling : IPeerSignaling
{
    private readonly ConcurrentDictionary<WgKey, (WgKey Self, PeerConn Conn)> _byRecipient = new();

    public int Sent;

    /// <summary>Messages sent to <paramref name="recipient"/> reach <paramref name="conn"/> as coming from <paramref name="sender"/>.</summary>
    public void Route(WgKey recipient, PeerConn conn) => _byRecipient[recipient] = (recipient, conn);

    public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Sent);
        if (_byRecipient.TryGetValue(recipient, out var target))
        {
            _ = Task.Run(() => target.Conn.OnSignalAsync(body.Clone(), CancellationToken.None), CancellationToken.None);
        }

        return Task.CompletedTask;
    }
}

/// <summary>Paths where a test decides which remote candidates answer checks.</summary>
internal sealed class ScriptedPaths(params IceCandidate[] local) : IPeerPaths
{
    public ConcurrentDictionary<IPEndPoint, bool> Reachable { get; } = new();

    public int Checks;

    public IReadOnlyList<IceCandidate> LocalCandidates => local;

    public IDisposable Register(IceCredentials local, Action<IPEndPoint, string> onValidCheck) => new Nothing();

    public async Task<CheckResult?> CheckAsync(IPEndPoint remote, IceCredentials local, IceCredentials remoteCredentials, TimeSpan timeout, TimeSpan interval, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Checks);
        if (Reachable.ContainsKey(remote))
        {
            return new CheckResult(remote, TimeSpan.FromMilliseconds(1.5));
        }

        await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        return null;
    }

    public IPEndPoint WireGuardEndpointFor(IPEndPoint checkedRemote) => checkedRemote;

    private sealed class Nothing : IDisposable
    {
        public void Dispose()
        {
        }
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

    public void RedirectAs(IPEndPoint endpoint)
    {
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

    public ConnPair(PeerConnOptions options)
    {
        var keyA = RandomKey();
        var keyB = RandomKey();
        IfaceA = new RecordingWgIface();
        IfaceB = new RecordingWgIface();
        PathsA = new ScriptedPaths(new IceCandidate(CandidateType.Host, AHost));
        PathsB = new ScriptedPaths(new IceCandidate(CandidateType.Host, BHost));
        RelayA = new FakeRelay();
        RelayB = new FakeRelay();
        var signalFromA = new LoopbackSignaling();
        var signalFromB = new LoopbackSignaling();
        SignalA = signalFromA;
        var peerB = new RemotePeerInfo(keyB, "b", "100.64.0.3", [IPNetwork.Parse("100.64.0.3/32")], null);
        var peerA = new RemotePeerInfo(keyA, "a", "100.64.0.2", [IPNetwork.Parse("100.64.0.2/32")], null);
        AtoB = new PeerConn(peerB, IfaceA, signalFromA, PathsA, RelayA, options, TimeProvider.System, NullLogger.Instance);
        BtoA = new PeerConn(peerA, IfaceB, signalFromB, PathsB, RelayB, options, TimeProvider.System, NullLogger.Instance);
        signalFromA.Route(keyB, BtoA);
        signalFromB.Route(keyA, AtoB);
        _pump = Task.Run(PumpStatsAsync);
    }

    public RecordingWgIface IfaceA { get; }

    public RecordingWgIface IfaceB { get; }

    public ScriptedPaths PathsA { get; }

    public ScriptedPaths PathsB { get; }

    public FakeRelay RelayA { get; }

    public FakeRelay RelayB { get; }

    public LoopbackSignaling SignalA { get; }

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
        => WaitForAsync(() => AtoB.State == PeerConnectionState.Connected && BtoA.State == PeerConnectionState.Connected, "both Connected");

    public static async Task WaitForAsync(Func<bool> condition, string what, int seconds = 20)
    {
        var until = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > until)
            {
                throw new TimeoutException($"not within {seconds} s: {what}");
            }

            await Task.Delay(20);
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
