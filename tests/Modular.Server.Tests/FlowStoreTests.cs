using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Flows;
using Modular.Server.Config;
using Modular.Server.Flows;

namespace Modular.Server.Tests;

/// <summary>The flow events table: once per (peer, event ID) across retries and restarts, retention, and a peer's removal.</summary>
public sealed class FlowStoreTests : StoreTestBase
{
    private DateTimeOffset Now => Time.GetUtcNow();

    private DateTimeOffset KeepAll => DateTimeOffset.UnixEpoch;

    [Fact]
    public async Task The_same_batch_twice_is_stored_once()
    {
        var peer = await Register("alpha");
        var batch = FlowSamples.Batch(Now, 5);

        var first = await Store.AddFlowEventsAsync(peer.Id, batch, KeepAll, default);
        var second = await Store.AddFlowEventsAsync(peer.Id, batch, KeepAll, default);

        Assert.Equal(5, first.Count);
        Assert.Empty(second);
        Assert.Equal(5, await Store.CountFlowEventsAsync(default));
    }

    [Fact]
    public async Task A_batch_sent_again_to_a_restarted_server_is_stored_once()
    {
        var peer = await Register("alpha");
        var batch = FlowSamples.Batch(Now, 3);
        await Store.AddFlowEventsAsync(peer.Id, batch, KeepAll, default);

        // A new store instance on the same file, as a restarted server opens it: only the table can know.
        await ReopenStoreAsync();
        var again = await Store.AddFlowEventsAsync(peer.Id, [.. batch, FlowSamples.Tcp(Now, 9)], KeepAll, default);

        Assert.Single(again);
        Assert.Equal(4, await Store.CountFlowEventsAsync(default));
    }

    [Fact]
    public async Task The_same_event_id_from_two_peers_is_two_events()
    {
        var alpha = await Register("alpha");
        var beta = await Register("beta");
        var batch = FlowSamples.Batch(Now, 2);

        await Store.AddFlowEventsAsync(alpha.Id, batch, KeepAll, default);
        await Store.AddFlowEventsAsync(beta.Id, batch, KeepAll, default);

        Assert.Equal(4, await Store.CountFlowEventsAsync(default));
    }

    [Fact]
    public async Task Events_older_than_the_retention_are_not_stored_but_count_as_taken()
    {
        var peer = await Register("alpha");
        var old = FlowSamples.Tcp(Now - TimeSpan.FromDays(8));
        var fresh = FlowSamples.Tcp(Now);

        var added = await Store.AddFlowEventsAsync(peer.Id, [old, fresh], Now - TimeSpan.FromDays(7), default);

        Assert.Equal([fresh.Id], added.Select(e => e.Id));
        Assert.Equal(1, await Store.CountFlowEventsAsync(default));
    }

    [Fact]
    public async Task Every_field_comes_back_as_stored()
    {
        var peer = await Register("alpha");
        var e = new FlowEvent(
            Guid.NewGuid(), Guid.NewGuid(), Now, FlowEventType.Drop, FlowDirection.Ingress, 58,
            System.Net.IPAddress.Parse("fd00::1"), 0, System.Net.IPAddress.Parse("fd00::2"), 0, 128, 0,
            ulong.MaxValue, 2, 3, 4, "rule-x", "peer-a", "res-b");
        await Store.AddFlowEventsAsync(peer.Id, [e], KeepAll, default);

        var stored = Assert.Single(await Store.ListFlowEventsAsync(null, null, 10, default));

        // ulong counters past long.MaxValue are kept as the largest long (SQLite's INTEGER is signed).
        Assert.Equal(e with { RxPackets = long.MaxValue }, stored.Event);
        Assert.Equal("alpha", stored.PeerName);
        Assert.Equal(peer.OverlayAddress, stored.PeerAddress);
    }

    [Fact]
    public async Task Listing_filters_by_peer_and_time_and_keeps_the_newest()
    {
        var alpha = await Register("alpha");
        var beta = await Register("beta");
        await Store.AddFlowEventsAsync(alpha.Id, [FlowSamples.Tcp(Now - TimeSpan.FromHours(2), 1), FlowSamples.Tcp(Now - TimeSpan.FromMinutes(5), 2), FlowSamples.Tcp(Now, 3)], KeepAll, default);
        await Store.AddFlowEventsAsync(beta.Id, [FlowSamples.Tcp(Now, 4)], KeepAll, default);

        var alphaRecent = await Store.ListFlowEventsAsync("alpha", Now - TimeSpan.FromMinutes(10), 100, default);
        Assert.Equal([40002, 40003], alphaRecent.Select(s => (int)s.Event.SourcePort));

        var byIp = await Store.ListFlowEventsAsync(beta.OverlayAddress.ToString(), null, 100, default);
        Assert.Equal([40004], byIp.Select(s => (int)s.Event.SourcePort));

        var byKey = await Store.ListFlowEventsAsync(alpha.PublicKey.ToBase64(), null, 100, default);
        Assert.Equal(3, byKey.Count);

        // The newest two of all four, oldest first.
        var newest = await Store.ListFlowEventsAsync(null, null, 2, default);
        Assert.Equal(2, newest.Count);
        Assert.All(newest, s => Assert.Equal(Now, s.Event.Timestamp));

        await Assert.ThrowsAsync<KeyNotFoundException>(() => Store.ListFlowEventsAsync("nobody", null, 100, default));
    }

    [Fact]
    public async Task Removing_a_peer_deletes_its_flows()
    {
        var alpha = await Register("alpha");
        var beta = await Register("beta");
        await Store.AddFlowEventsAsync(alpha.Id, FlowSamples.Batch(Now, 3), KeepAll, default);
        await Store.AddFlowEventsAsync(beta.Id, FlowSamples.Batch(Now, 2), KeepAll, default);

        await Store.RemovePeersAsync("alpha", default);

        Assert.Equal(2, await Store.CountFlowEventsAsync(default));
        Assert.All(await Store.ListFlowEventsAsync(null, null, 100, default), s => Assert.Equal(beta.Id, s.PeerId));
    }

    [Fact]
    public async Task Retention_is_swept_on_the_servers_clock()
    {
        var peer = await Register("alpha");
        var config = new ServerConfig { Account = new AccountConfig { Flows = new FlowSettingsConfig { Retention = TimeSpan.FromHours(1) } } };
        var old = FlowSamples.Tcp(Now - TimeSpan.FromMinutes(50));
        var fresh = FlowSamples.Tcp(Now);
        await Store.AddFlowEventsAsync(peer.Id, [old, fresh], KeepAll, default);
        using var sweeper = new FlowRetention(Store, config, Time, NullLogger<FlowRetention>.Instance);

        await sweeper.StartAsync(default);
        try
        {
            // At start: both within the hour.
            await SweepsReach(sweeper, 1);
            Assert.Equal(2, await Store.CountFlowEventsAsync(default));

            // 10 minutes on: the old one is exactly an hour old, not older.
            Time.Advance(FlowRetention.Interval);
            await SweepsReach(sweeper, 2);
            Assert.Equal(2, await Store.CountFlowEventsAsync(default));

            // 20 minutes on: 70 minutes old, swept; the fresh one stays.
            Time.Advance(FlowRetention.Interval);
            await SweepsReach(sweeper, 3);
            var left = Assert.Single(await Store.ListFlowEventsAsync(null, null, 10, default));
            Assert.Equal(fresh.Id, left.Event.Id);
        }
        finally
        {
            await sweeper.StopAsync(default);
        }
    }

    private static async Task SweepsReach(FlowRetention sweeper, long count)
    {
        using var timeout = new CancellationTokenSource(Wait);
        while (sweeper.Sweeps < count)
        {
            await Task.Delay(10, timeout.Token);
        }
    }
}
