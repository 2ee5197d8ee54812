using Microsoft.Extensions.Time.Testing;
using Modular.Core.Firewall;

namespace Modular.Core.Tests.Firewall;

/// <summary>The connection-tracking table on its own: lookup by direction, expiry by state, admission when full.</summary>
public sealed class FlowTableTests
{
    private static readonly UInt128 Remote = 0xffff_6440_0001;
    private static readonly UInt128 Local = 0xffff_6440_0002;

    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void A_reply_finds_its_connection_and_the_same_key_the_other_way_does_not()
    {
        var table = new FlowTable(new FirewallOptions(), _time);
        var key = new FlowKey(IpProtocol.Udp, Remote, Local, 5000, 53);
        var now = _time.GetTimestamp();
        Track(table, key, RuleDirection.Inbound, now);

        using (var shard = table.Enter(key.Reverse()))
        {
            Assert.True(shard.TryFind(key.Reverse(), RuleDirection.Outbound, now, out var reply, out var isReply, out _));
            Assert.True(isReply);
            Assert.Equal(key, reply.Key);

            // The opener's key sent the other way is not this connection (nor a reply to it).
            Assert.False(shard.TryFind(key, RuleDirection.Outbound, now, out _, out _, out var expired));
            Assert.Null(expired);
        }

        Assert.True(table.IsTracked(key.Reverse(), now));
    }

    [Fact]
    public void An_expired_connection_is_removed_on_lookup_and_handed_back()
    {
        var options = new FirewallOptions();
        var table = new FlowTable(options, _time);
        var key = new FlowKey(IpProtocol.Udp, Remote, Local, 5000, 53);
        Track(table, key, RuleDirection.Inbound, _time.GetTimestamp());

        _time.Advance(options.UdpTimeout + TimeSpan.FromSeconds(1));
        var now = _time.GetTimestamp();
        Assert.False(table.IsTracked(key, now));
        using (var shard = table.Enter(key))
        {
            Assert.False(shard.TryFind(key, RuleDirection.Inbound, now, out _, out _, out var expired));
            Assert.Equal(key, expired?.Key);
        }

        Assert.Equal(0, table.Count);
    }

    [Fact]
    public void A_full_shard_refuses_new_flows_until_one_expires()
    {
        var options = new FirewallOptions { MaxFlows = FlowTable.ShardCount };
        var table = new FlowTable(options, _time);
        var first = new FlowKey(IpProtocol.Udp, Remote, Local, 5000, 53);
        Track(table, first, RuleDirection.Inbound, _time.GetTimestamp());

        // Same ports and ends swapped hash to the same shard, which holds one flow.
        var second = new FlowKey(IpProtocol.Udp, Local, Remote, 53, 5000);
        using (var shard = table.Enter(second))
        {
            Assert.False(shard.Admits(second, RuleDirection.Outbound, _time.GetTimestamp()));
        }

        _time.Advance(options.UdpTimeout + TimeSpan.FromSeconds(1));
        using (var shard = table.Enter(second))
        {
            Assert.True(shard.Admits(second, RuleDirection.Outbound, _time.GetTimestamp()));
        }

        Assert.Equal(0, table.Count);
    }

    [Fact]
    public void Review_removes_what_is_no_longer_allowed_and_reports_it()
    {
        var table = new FlowTable(new FirewallOptions(), _time);
        var kept = new FlowKey(IpProtocol.Tcp, Remote, Local, 40000, 80);
        var ended = new FlowKey(IpProtocol.Tcp, Remote, Local, 40001, 22);
        Track(table, kept, RuleDirection.Inbound, _time.GetTimestamp());
        Track(table, ended, RuleDirection.Inbound, _time.GetTimestamp());

        var removed = new List<FlowEntry>();
        table.Review(entry => entry.Key.DestinationPort == 80, removed);

        Assert.Equal([ended], removed.Select(e => e.Key));
        Assert.Equal([kept], table.Snapshot().Select(s => s.Key));
    }

    [Fact]
    public void Fewer_flows_than_shards_is_refused()
        => Assert.Throws<ArgumentOutOfRangeException>(() => new FlowTable(new FirewallOptions { MaxFlows = FlowTable.ShardCount - 1 }, _time));

    private static void Track(FlowTable table, FlowKey key, RuleDirection direction, long now)
    {
        using var shard = table.Enter(key);
        Assert.True(shard.Admits(key, direction, now));
        shard.Add(new FlowEntry(Guid.NewGuid(), key, direction, null) { LastSeen = now });
    }
}
