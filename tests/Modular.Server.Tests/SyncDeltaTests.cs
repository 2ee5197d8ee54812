using System.Diagnostics;
using Google.Protobuf;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Server.Config;
using Modular.Server.Management;
using Modular.Server.Store;
using Xunit.Abstractions;

namespace Modular.Server.Tests;

/// <summary>The change log and delta encoding, without a server: chains, merging, overflow and the size limit.</summary>
public sealed class SyncDeltaTests(ITestOutputHelper output)
{
    private static readonly DateTimeOffset Now = DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture);
    private static readonly AccountConfig Account = new() { DnsDomain = "corp" };

    private static PeerRecord Peer(int i, string version = "1.0", DateTimeOffset? expires = null)
    {
        var key = new byte[32];
        BitConverter.TryWriteBytes(key, i + 1);
        key[31] = 9;
        return new PeerRecord($"id{i}", new WgKey(key), $"host{i}", $"host{i}", OverlayNetwork.FirstHost + (uint)i, Now, Now, version, "linux", [], [], "", expires, "k");
    }

    private static NetworkSnapshot Snapshot(ulong serial, IEnumerable<PeerRecord> peers) => new(serial, [.. peers]) { TakenAt = Now };

    [Fact]
    public void A_change_holds_only_added_changed_and_removed_peers()
    {
        var log = new NetworkChangeLog();
        var before = Snapshot(1, Enumerable.Range(0, 10).Select(i => Peer(i)));
        // 3 removed, 5 upgraded, 10 joined, 7 expired (sent again, marked expired); the rest unchanged.
        var after = Snapshot(2, Enumerable.Range(0, 11).Where(i => i != 3).Select(i => i switch { 5 => Peer(i, "2.0"), 7 => Peer(i, expires: Now), _ => Peer(i) }));

        var change = log.Record(before, after, Account)!;

        Assert.Equal((1ul, 2ul), (change.FromSerial, change.ToSerial));
        Assert.True(change.Upserted.Keys.ToHashSet().SetEquals([Peer(5).PublicKey, Peer(7).PublicKey, Peer(10).PublicKey]));
        Assert.Equal("2.0", change.Upserted[Peer(5).PublicKey].AgentVersion);
        Assert.True(change.Upserted[Peer(7).PublicKey].Expired);
        Assert.False(change.Upserted[Peer(5).PublicKey].Expired);
        Assert.True(change.Removed.ToHashSet().SetEquals([Peer(3).PublicKey]));

        // Still expired in the next snapshot: nothing to send again.
        var later = Snapshot(3, after.Peers);
        Assert.Equal(0, log.Record(after, later, Account)!.Size);
    }

    [Fact]
    public void Consecutive_changes_merge_with_the_latest_state_winning()
    {
        var log = new NetworkChangeLog();
        var s1 = Snapshot(1, [Peer(0), Peer(1)]);
        var s2 = Snapshot(2, [Peer(0), Peer(1), Peer(2)]);        // 2 joins
        var s3 = Snapshot(3, [Peer(0, "3.0"), Peer(1)]);          // 2 leaves again, 0 changes
        var s5 = Snapshot(5, [Peer(0, "3.0"), Peer(2, "4.0")]);   // 1 leaves, 2 back
        log.Record(s1, s2, Account);
        log.Record(s2, s3, Account);
        log.Record(s3, s5, Account);

        Assert.True(log.TryCollect(1, 5, out var all));
        Assert.Equal(3, all.Count);
        Assert.Equal("3.0", all[Peer(0).PublicKey]!.AgentVersion);
        Assert.Null(all[Peer(1).PublicKey]);
        Assert.Equal("4.0", all[Peer(2).PublicKey]!.AgentVersion);

        Assert.True(log.TryCollect(2, 3, out var one));
        Assert.Null(one[Peer(2).PublicKey]);

        Assert.False(log.TryCollect(3, 4, out _));  // 4 was never a published serial
        Assert.False(log.TryCollect(5, 5, out _));  // nothing to send
        Assert.False(log.TryCollect(0, 2, out _));  // older than the log
    }

    [Fact]
    public void An_overflowed_log_cannot_bridge_a_lagging_stream()
    {
        var log = new NetworkChangeLog(capacity: 2);
        var snapshots = Enumerable.Range(1, 4).Select(s => Snapshot((ulong)s, Enumerable.Range(0, s).Select(i => Peer(i)))).ToList();
        for (var i = 1; i < snapshots.Count; i++)
        {
            log.Record(snapshots[i - 1], snapshots[i], Account);
        }

        Assert.Equal(2, log.Count);
        Assert.False(log.TryCollect(1, 4, out _)); // 1 -> 2 fell out
        Assert.True(log.TryCollect(2, 4, out var kept));
        Assert.True(kept.Keys.ToHashSet().SetEquals([Peer(2).PublicKey, Peer(3).PublicKey]));
    }

    [Fact]
    public void A_change_to_most_peers_is_kept_without_its_peers_and_forces_a_whole_map()
    {
        var log = new NetworkChangeLog();
        var s1 = Snapshot(1, Enumerable.Range(0, 40).Select(i => Peer(i)));
        var s2 = Snapshot(2, Enumerable.Range(0, 40).Select(i => Peer(i, "2.0")));
        var s3 = Snapshot(3, Enumerable.Range(0, 41).Select(i => Peer(i, "2.0")));

        var large = log.Record(s1, s2, Account)!;
        log.Record(s2, s3, Account);

        Assert.False(large.Complete);
        Assert.Equal(0, large.Size);
        Assert.False(log.TryCollect(1, 3, out _)); // crosses the large change
        Assert.True(log.TryCollect(2, 3, out var after));
        Assert.Single(after);
    }

    [Fact]
    public void A_delta_leaves_out_the_receiver_and_a_large_change_falls_back_to_a_whole_map()
    {
        var log = new NetworkChangeLog();
        var before = Snapshot(1, Enumerable.Range(0, 100).Select(i => Peer(i)));
        var after = Snapshot(2, Enumerable.Range(0, 100).Select(i => i < 3 ? Peer(i, "2.0") : Peer(i)));
        log.Record(before, after, Account);
        var self = Peer(0);
        var sections = NetworkMapBuilder.BuildHeader(after, self, Account);

        var bytes = SyncDeltas.TryEncode(log, 1, after, self.PublicKey, sections, sectionsUnchanged: true, new ServiceAddresses())!;
        var delta = SyncResponse.Parser.ParseFrom(bytes).NetworkMapDelta;
        Assert.Equal((2ul, 1ul), (delta.Serial, delta.PreviousSerial));
        Assert.Equal(["host1", "host2"], delta.UpsertedPeers.Select(p => p.Hostname).Order());
        Assert.Null(delta.Sections);

        var withSections = SyncResponse.Parser.ParseFrom(SyncDeltas.TryEncode(log, 1, after, self.PublicKey, sections, sectionsUnchanged: false, new ServiceAddresses())!).NetworkMapDelta;
        Assert.Equal(sections.PeerConfig, withSections.Sections.PeerConfig);

        var everyone = Snapshot(3, Enumerable.Range(0, 100).Select(i => Peer(i, "3.0")));
        log.Record(after, everyone, Account);
        Assert.Null(SyncDeltas.TryEncode(log, 2, everyone, self.PublicKey, sections, true, new ServiceAddresses()));
        Assert.Null(SyncDeltas.TryEncode(log, 0, everyone, self.PublicKey, sections, true, new ServiceAddresses()));
    }

    /// <summary>
    /// Bytes one connected peer receives when one peer joins, whole map versus delta. A benchmark (prints
    /// its numbers with MODULAR_BENCH=1); it asserts only what a delta must hold.
    /// </summary>
    [SkippableTheory]
    [InlineData(1_000)]
    [InlineData(10_000)]
    public void Bytes_per_peer_per_change(int peers)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var log = new NetworkChangeLog();
        var records = Enumerable.Range(0, peers).Select(i => Peer(i)).ToList();
        var before = Snapshot(1, records);
        var after = Snapshot(2, [.. records, Peer(peers)]);
        var clock = Stopwatch.StartNew();
        log.Record(before, after, Account);
        var recordTime = clock.Elapsed;
        var services = new ServiceAddresses { SignalUrl = "https://mgmt.example:33073", RelayAddress = "mgmt.example:33080", StunAddress = "mgmt.example:3478", RelayToken = ByteString.CopyFrom(new byte[60]), RelayTokenExpiresUnix = 1 };
        var self = records[0];

        var whole = after.Encoder(Account, Now).Encode(after, self, Account, services);
        clock.Restart();
        var delta = SyncDeltas.TryEncode(log, 1, after, self.PublicKey, NetworkMapBuilder.BuildHeader(after, self, Account), true, services)!;
        var deltaTime = clock.Elapsed;

        Assert.Single(SyncResponse.Parser.ParseFrom(delta).NetworkMapDelta.UpsertedPeers);
        Assert.Equal(peers, SyncResponse.Parser.ParseFrom(whole).NetworkMap.RemotePeers.Count);
        output.WriteLine($"{peers} peers, one joins: whole map {whole.Length:N0} B per connected peer ({(double)whole.Length * peers / 1e6:F1} MB for all), delta {delta.Length:N0} B ({(double)delta.Length * peers / 1e6:F2} MB for all); change record {recordTime.TotalMilliseconds:F1} ms, delta encode {deltaTime.TotalMilliseconds:F3} ms");
    }
}
