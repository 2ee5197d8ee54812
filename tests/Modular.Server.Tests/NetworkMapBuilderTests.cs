using System.Diagnostics;
using Google.Protobuf;
using Modular.Abstractions.WireGuard;
using Modular.Server.Config;
using Modular.Control.Management;
using Modular.Server.Management;
using Modular.Server.Store;
using Xunit.Abstractions;

namespace Modular.Server.Tests;

public sealed class NetworkMapBuilderTests(ITestOutputHelper output)
{
    private static readonly DateTimeOffset Now = DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

    private static PeerRecord Peer(int i, DateTimeOffset? expires = null)
    {
        var key = new byte[32];
        BitConverter.TryWriteBytes(key, i + 1);
        return new PeerRecord($"id{i}", new WgKey(key), $"host{i}", $"host{i}", OverlayNetwork.FirstHost + (uint)i, Now, Now, "1.0", "linux", [], [], "", expires, "k");
    }

    [Fact]
    public void A_map_holds_every_peer_but_itself_and_marks_an_expired_login()
    {
        var peers = Enumerable.Range(0, 50).Select(i => Peer(i, i == 7 ? Now.AddSeconds(-1) : i == 8 ? Now.AddSeconds(1) : null)).ToList();
        var snapshot = new NetworkSnapshot(9, peers);
        var map = NetworkMapBuilder.Build(snapshot, peers[3], new AccountConfig { DnsDomain = "corp" }, Now);

        Assert.Equal(9ul, map.Serial);
        Assert.Equal("100.64.0.4/10", map.PeerConfig.Address);
        Assert.Equal("host3.corp", map.PeerConfig.Fqdn);
        Assert.Equal(49, map.RemotePeers.Count);
        Assert.DoesNotContain(map.RemotePeers, p => p.Hostname is "host3");
        // The lapsed login stays, marked (others show it as Idle, "login expired"); one that lapses later is live.
        Assert.Equal(["host7"], map.RemotePeers.Where(p => p.Expired).Select(p => p.Hostname));
        Assert.Equal("100.64.0.8/32", map.RemotePeers.Single(p => p.Hostname == "host7").AllowedIps.Single());
        // The snapshot's shared entry is not marked: a later map of the same snapshot decides again.
        Assert.DoesNotContain(snapshot.RemotePeers(new AccountConfig { DnsDomain = "corp" }), p => p.Remote.Expired);
        Assert.Equal(map.RemotePeers.Count, map.RemotePeers.Select(p => p.AllowedIps[0]).Distinct().Count());
        Assert.True(map.AccountPsk.IsEmpty);
        // Agents name a peer in flow events by this ID (RemotePeer.id).
        Assert.All(map.RemotePeers, p => Assert.Equal($"id{p.Hostname["host".Length..]}", p.Id));
    }

    [Fact]
    public void The_shared_encoder_produces_exactly_the_built_map()
    {
        var peers = Enumerable.Range(0, 30).Select(i => Peer(i, i == 5 ? Now.AddSeconds(-1) : null)).ToList();
        var snapshot = new NetworkSnapshot(4, peers);
        var account = new AccountConfig { Psk = Convert.ToBase64String(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray()), LazyConnections = true };
        var services = new ServiceAddresses { SignalUrl = "http://h:1", RelayAddress = "h:2", RelayToken = ByteString.CopyFrom([1, 2, 3]) };
        var encoder = snapshot.Encoder(account, Now);
        foreach (var self in new[] { peers[0], peers[17], peers[29] })
        {
            var decoded = SyncResponse.Parser.ParseFrom(encoder.Encode(snapshot, self, account, services));
            var expected = new SyncResponse { NetworkMap = NetworkMapBuilder.Build(snapshot, self, account, Now), Services = services };
            Assert.Equal(expected, decoded);
            Assert.Equal(29, decoded.NetworkMap.RemotePeers.Count);
            Assert.Equal(["host5"], decoded.NetworkMap.RemotePeers.Where(p => p.Expired).Select(p => p.Hostname));
        }
    }

    [Fact]
    public void Ten_thousand_peer_maps_build_and_serialize()
    {
        var peers = Enumerable.Range(0, 10_000).Select(i => Peer(i)).ToList();
        var snapshot = new NetworkSnapshot(1, peers);
        var account = new AccountConfig();
        var clock = Stopwatch.StartNew();
        var size = 0;
        const int maps = 20;
        for (var i = 0; i < maps; i++)
        {
            size = NetworkMapBuilder.Build(snapshot, peers[i], account, Now).ToByteArray().Length;
        }

        var perMap = clock.Elapsed.TotalMilliseconds / maps;
        output.WriteLine($"10,000-peer map: {size / 1024} KiB, {perMap:F1} ms to build and serialize one (first build of the snapshot included)");

        var encoder = snapshot.Encoder(account, Now);
        var services = new ServiceAddresses();
        clock.Restart();
        for (var i = 0; i < maps; i++)
        {
            size = encoder.Encode(snapshot, peers[i], account, services).Length;
        }

        output.WriteLine($"10,000-peer map with the shared encoder: {size / 1024} KiB, {clock.Elapsed.TotalMilliseconds / maps:F2} ms per stream");
        Assert.True(size < 64 << 20);
        Assert.Equal(9_999, NetworkMap.Parser.ParseFrom(NetworkMapBuilder.Build(snapshot, peers[0], account, Now).ToByteArray()).RemotePeers.Count);
    }
}
