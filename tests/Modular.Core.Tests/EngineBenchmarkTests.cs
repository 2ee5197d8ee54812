using System.Diagnostics;
using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Control.Signal;
using Modular.Core.Engine;
using Modular.Core.Ice;
using Modular.Core.Peers;
using Modular.Core.Status;
using Xunit.Abstractions;

namespace Modular.Core.Tests;

/// <summary>
/// Network-map apply time (decode the map, diff it, create and open a connection per new peer, publish
/// status) for 1,000 and 10,000 peers. A benchmark, not a timed test: runs with MODULAR_BENCH=1 and
/// prints its numbers; it asserts only that the map was applied.
/// </summary>
public sealed class EngineBenchmarkTests(ITestOutputHelper output)
{
    [SkippableTheory]
    [InlineData(1_000)]
    [InlineData(10_000)]
    public async Task Network_map_apply(int peers)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var map = new NetworkMap { Serial = 1 };
        for (var i = 0; i < peers; i++)
        {
            var key = new byte[32];
            BitConverter.TryWriteBytes(key, i + 1);
            key[31] = 7;
            var ip = $"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}";
            var remote = new RemotePeer { Hostname = $"peer{i}", Fqdn = $"peer{i}.modular.internal", WgPubKey = ByteString.CopyFrom(key) };
            remote.AllowedIps.Add($"{ip}/32");
            map.RemotePeers.Add(remote);
        }

        var recorder = new StatusRecorder(new InterfaceStatus("b0", "userspace", 51820, 1280), new FeatureStatus(false, "15m", [], false, "auto", false, false, false), "k", new ServiceStatus("", false, null), new ServiceStatus("", false, null));
        var iface = new RecordingWgIface();
        var paths = new ScriptedPaths(new IceCandidate(CandidateType.Host, IPEndPoint.Parse("198.18.0.2:51820")));
        // Peers never answer here: the measured work is the apply itself, not connecting.
        var options = new PeerConnOptions(OfferInterval: TimeSpan.FromMinutes(10));
        await using var manager = new ConnectionManager((peer, changed) => new PeerConn(peer, iface, new SilentSignaling(), paths, new FakeRelay(), options, TimeProvider.System, NullLogger.Instance, changed), recorder, NullLogger.Instance);

        var clock = Stopwatch.StartNew();
        var applied = await manager.ApplyAsync(MapApplier.ToPeers(map), CancellationToken.None);
        var first = clock.Elapsed;

        map.Serial = 2;
        clock.Restart();
        var unchanged = await manager.ApplyAsync(MapApplier.ToPeers(map), CancellationToken.None);
        var again = clock.Elapsed;

        clock.Restart();
        var snapshot = recorder.Snapshot();
        var snapshotTime = clock.Elapsed;

        Assert.Equal((peers, 0, 0), applied);
        Assert.Equal((0, 0, 0), unchanged);
        Assert.Equal(peers, snapshot.Peers.Count);
        output.WriteLine($"map apply, {peers} peers: first {first.TotalMilliseconds:F0} ms, unchanged re-apply {again.TotalMilliseconds:F0} ms, status snapshot {snapshotTime.TotalMilliseconds:F2} ms");
    }

    private sealed class SilentSignaling : IPeerSignaling
    {
        public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
