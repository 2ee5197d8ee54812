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

namespace Modular.Core.Tests;

/// <summary>The agent's side of incremental Sync: deltas chain on the serial held, a gap asks for a resync.</summary>
public sealed class NetworkMapStateTests
{
    private static RemotePeer Remote(int i, string version = "1.0")
    {
        var key = new byte[32];
        BitConverter.TryWriteBytes(key, i + 1);
        key[31] = 5;
        var remote = new RemotePeer { Hostname = $"peer{i}", Fqdn = $"peer{i}.corp", WgPubKey = ByteString.CopyFrom(key), AgentVersion = version };
        remote.AllowedIps.Add($"100.64.0.{i + 2}/32");
        return remote;
    }

    private static SyncResponse Whole(ulong serial, params RemotePeer[] peers)
    {
        var map = new NetworkMap { Serial = serial, PeerConfig = new PeerConfig { Address = "100.64.0.1/10" }, AccountPsk = ByteString.CopyFrom(new byte[32]) };
        map.RemotePeers.AddRange(peers);
        return new SyncResponse { NetworkMap = map };
    }

    private static SyncResponse Delta(ulong previous, ulong serial, RemotePeer[] upserted, RemotePeer[] removed, NetworkMap? sections = null)
    {
        var delta = new NetworkMapDelta { PreviousSerial = previous, Serial = serial, Sections = sections };
        delta.UpsertedPeers.AddRange(upserted);
        delta.RemovedPeerKeys.AddRange(removed.Select(r => r.WgPubKey));
        return new SyncResponse { NetworkMapDelta = delta };
    }

    [Fact]
    public void Deltas_apply_on_the_serial_held_and_sections_replace_only_when_sent()
    {
        var state = new NetworkMapState();
        Assert.Equal(MapUpdateResult.ResyncNeeded, state.Apply(Delta(0, 1, [Remote(1)], []))); // nothing held yet
        Assert.Equal(MapUpdateResult.Applied, state.Apply(Whole(5, Remote(1), Remote(2), Remote(3))));

        Assert.Equal(MapUpdateResult.Applied, state.Apply(Delta(5, 6, [Remote(4), Remote(2, "2.0")], [Remote(3)])));
        var map = state.ToMap();
        Assert.Equal(6ul, map.Serial);
        Assert.Equal(["peer1", "peer2", "peer4"], map.RemotePeers.Select(p => p.Hostname).Order());
        Assert.Equal("2.0", map.RemotePeers.Single(p => p.Hostname == "peer2").AgentVersion);
        Assert.Equal("100.64.0.1/10", map.PeerConfig.Address); // sections kept from the whole map
        Assert.Equal(32, map.AccountPsk.Length);

        var sections = new NetworkMap { Serial = 7, PeerConfig = new PeerConfig { Address = "100.64.0.9/10" } };
        sections.RemotePeers.Add(Remote(99)); // ignored: peers travel only as upserts/removals
        Assert.Equal(MapUpdateResult.Applied, state.Apply(Delta(6, 7, [], [], sections)));
        map = state.ToMap();
        Assert.Equal("100.64.0.9/10", map.PeerConfig.Address);
        Assert.Empty(map.AccountPsk); // the new sections replace all of the old ones
        Assert.Equal(3, map.RemotePeers.Count);
    }

    [Fact]
    public void A_gap_or_a_replay_asks_for_a_resync_and_changes_nothing()
    {
        var state = new NetworkMapState();
        state.Apply(Whole(5, Remote(1)));

        Assert.Equal(MapUpdateResult.ResyncNeeded, state.Apply(Delta(6, 7, [Remote(2)], [])));  // 5 -> 6 was missed
        Assert.Equal(MapUpdateResult.ResyncNeeded, state.Apply(Delta(4, 5, [Remote(2)], [])));  // already held
        Assert.Equal(MapUpdateResult.ResyncNeeded, state.Apply(Delta(5, 5, [Remote(2)], [])));  // does not move forward
        Assert.Equal(5ul, state.Serial);
        Assert.Equal(["peer1"], state.ToMap().RemotePeers.Select(p => p.Hostname));

        // An older whole map is ignored; a newer one replaces everything.
        Assert.Equal(MapUpdateResult.Ignored, state.Apply(Whole(3, Remote(7))));
        Assert.Equal(MapUpdateResult.Applied, state.Apply(Whole(9, Remote(8))));
        Assert.Equal(["peer8"], state.ToMap().RemotePeers.Select(p => p.Hostname));

        state.Reset();
        Assert.Equal(0ul, state.Serial);
        Assert.Equal(MapUpdateResult.ResyncNeeded, state.Apply(Delta(9, 10, [], [])));
    }

    [Fact]
    public async Task A_delta_through_the_connection_manager_leaves_unchanged_peers_undisturbed()
    {
        var recorder = new StatusRecorder(new InterfaceStatus("b0", "userspace", 51820, 1280), new FeatureStatus(false, "15m", [], false, "auto", false, false, false), "k", new ServiceStatus("", false, null), new ServiceStatus("", false, null));
        var iface = new RecordingWgIface();
        var paths = new ScriptedPaths(new IceCandidate(CandidateType.Host, IPEndPoint.Parse("198.18.0.2:51820")));
        var options = new PeerConnOptions(OfferInterval: TimeSpan.FromMinutes(10));
        await using var manager = new ConnectionManager((peer, changed) => new PeerConn(peer, iface, new QuietSignaling(), paths, new FakeRelay(), options, TimeProvider.System, NullLogger.Instance, changed), recorder, NullLogger.Instance);
        var state = new NetworkMapState();

        state.Apply(Whole(1, Remote(1), Remote(2), Remote(3)));
        Assert.Equal((3, 0, 0), await manager.ApplyAsync(MapApplier.ToPeers(state.ToMap()), CancellationToken.None));
        var untouched = manager.Find(new WgKey(Remote(1).WgPubKey.Span));

        var moved = Remote(2);
        moved.AllowedIps.Add("10.9.0.0/24");
        Assert.Equal(MapUpdateResult.Applied, state.Apply(Delta(1, 2, [Remote(4), moved], [Remote(3)])));
        Assert.Equal((1, 1, 1), await manager.ApplyAsync(MapApplier.ToPeers(state.ToMap()), CancellationToken.None));
        Assert.Same(untouched, manager.Find(new WgKey(Remote(1).WgPubKey.Span)));
        Assert.Null(manager.Find(new WgKey(Remote(3).WgPubKey.Span)));
        Assert.Equal(3, manager.Peers.Count);
    }

    private sealed class QuietSignaling : IPeerSignaling
    {
        public Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
