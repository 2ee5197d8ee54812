using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Peers;
using Modular.Core.Ice;
using Modular.Core.Peers;
using Modular.Core.Status;

namespace Modular.Core.Tests;

public sealed class ConnectionManagerTests
{
    private static StatusRecorder NewRecorder() => new(
        new InterfaceStatus("fake0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        "key",
        new ServiceStatus("", false, null),
        new ServiceStatus("", false, null));

    private static RemotePeerInfo Peer(int n, string? allowed = null)
        => new(KeyOf(n), $"p{n}", $"100.64.0.{n}", [IPNetwork.Parse(allowed ?? $"100.64.0.{n}/32")], null);

    private static Abstractions.WireGuard.WgKey KeyOf(int n)
    {
        var bytes = new byte[32];
        bytes[0] = (byte)n;
        bytes[1] = 1;
        return new Abstractions.WireGuard.WgKey(bytes);
    }

    private static (ConnectionManager Manager, RecordingWgIface Iface, StatusRecorder Recorder) NewManager()
    {
        var iface = new RecordingWgIface();
        var recorder = NewRecorder();
        var paths = new ScriptedPaths(new IceCandidate(CandidateType.Host, IPEndPoint.Parse("198.18.0.2:51820")));
        var options = new PeerConnOptions(ForceRelay: true, HandshakeTimeout: TimeSpan.FromSeconds(5), OfferInterval: TimeSpan.FromMilliseconds(100));
        var signaling = new AnsweringSignaling();
        var manager = new ConnectionManager(
            (peer, changed) =>
            {
                var conn = new PeerConn(peer, iface, signaling, paths, new FakeRelay(), options, TimeProvider.System, NullLogger.Instance, changed);
                signaling.Conns[peer.PublicKey] = conn;
                return conn;
            },
            recorder,
            NullLogger.Instance);
        return (manager, iface, recorder);
    }

    [Fact]
    public async Task A_map_is_applied_as_a_diff_that_leaves_unchanged_peers_alone()
    {
        var (manager, iface, recorder) = NewManager();
        await using var _ = manager;
        var first = await manager.ApplyAsync([Peer(1), Peer(2), Peer(3)], CancellationToken.None);
        Assert.Equal((3, 0, 0), first);
        await ConnPair.WaitForAsync(
            () =>
            {
                // What the engine's stats loop does every second.
                manager.OnStats(iface.GetStatsAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult());

                // A connection that did not start the handshake sets its peer once more with a keepalive just
                // after it shows Connected; the counts below start after that set.
                return manager.Peers.All(p => p.State == PeerConnectionState.Connected)
                    && iface.Peers.Count == 3 && iface.Peers.Values.All(p => p.PersistentKeepalive is not null);
            },
            "all three Connected, each keeping its path alive");
        Assert.All(recorder.Snapshot().Peers, p => Assert.Equal(200, p.TxBytes));
        var unchanged = manager.Find(KeyOf(1))!;
        var changed = manager.Find(KeyOf(2))!;
        var setsOfTwo = SetsOf(iface, 2);
        var setsOfOne = SetsOf(iface, 1);

        var second = await manager.ApplyAsync(
            [Peer(1), Peer(2) with { AllowedIps = [IPNetwork.Parse("100.64.0.2/32"), IPNetwork.Parse("10.9.0.0/16")] }, Peer(4)],
            CancellationToken.None);

        Assert.Equal((1, 1, 1), second);
        Assert.Same(unchanged, manager.Find(KeyOf(1)));
        Assert.Same(changed, manager.Find(KeyOf(2)));
        Assert.Null(manager.Find(KeyOf(3)));
        Assert.Equal(PeerConnectionState.Connected, unchanged.State);
        Assert.Equal(PeerConnectionState.Connected, changed.State);
        Assert.False(iface.Peers.ContainsKey(KeyOf(3)));
        Assert.Equal(2, iface.Peers[KeyOf(2)].AllowedIps.Count);
        Assert.Equal(setsOfTwo + 1, SetsOf(iface, 2));
        Assert.Equal(setsOfOne, SetsOf(iface, 1));
        var names = recorder.Snapshot().Peers.Select(p => p.Name).Order().ToList();
        Assert.Equal(["p1", "p2", "p4"], names);
    }

    private static int SetsOf(RecordingWgIface iface, int n) => iface.Calls.Count(c => c.StartsWith($"set {KeyOf(n).ToShortString()}", StringComparison.Ordinal));

    [Fact]
    public async Task An_empty_map_closes_every_connection_and_clears_status()
    {
        var (manager, iface, recorder) = NewManager();
        await using var _ = manager;
        await manager.ApplyAsync([Peer(1), Peer(2)], CancellationToken.None);
        await ConnPair.WaitForAsync(() => iface.Peers.Count == 2, "two WireGuard peers");

        Assert.Equal((0, 0, 2), await manager.ApplyAsync([], CancellationToken.None));
        Assert.Empty(iface.Peers);
        Assert.Empty(recorder.Snapshot().Peers);
        Assert.Equal(0, manager.Count);
    }

    [Fact]
    public async Task Goodbyes_that_signal_never_takes_end_when_the_managers_clock_says_the_time_is_up()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        var iface = new RecordingWgIface { Time = clock };
        var signaling = new HangingSignaling();
        var paths = new ScriptedPaths(new IceCandidate(CandidateType.Host, IPEndPoint.Parse("198.18.0.2:51820")));
        var options = new PeerConnOptions(ForceRelay: true);
        var manager = new ConnectionManager(
            (peer, changed) => new PeerConn(peer, iface, signaling, paths, new FakeRelay(), options, clock, NullLogger.Instance, changed),
            NewRecorder(),
            NullLogger.Instance,
            time: clock);
        await using var _ = manager;
        await manager.ApplyAsync([Peer(1), Peer(2)], CancellationToken.None);

        // An hour on the real clock would hang the test; on the manager's clock it passes at once.
        var goodbyes = manager.SayGoodbyeAsync(signaling, TimeSpan.FromHours(1));
        await ConnPair.WaitForAsync(() => signaling.Sent.Count(b => b.Type == Control.Signal.SignalBody.Types.Type.Goodbye) == 2, "both goodbyes on their way");
        Assert.False(goodbyes.IsCompleted);
        clock.Advance(TimeSpan.FromHours(1));

        await goodbyes.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.True(goodbyes.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Signal_from_a_key_not_in_the_map_is_dropped_and_counted()
    {
        var (manager, _, _) = NewManager();
        await using var __ = manager;
        await manager.ApplyAsync([Peer(1)], CancellationToken.None);
        await manager.OnSignalAsync(new Control.Signal.SignalInbound(KeyOf(9), new Control.Signal.SignalBody(), null), CancellationToken.None);
        Assert.Equal(1, manager.RejectedSignal);
    }
}
