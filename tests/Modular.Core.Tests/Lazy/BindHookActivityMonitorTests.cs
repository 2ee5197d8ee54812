using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Lazy;

namespace Modular.Core.Tests.Lazy;

/// <summary>The userspace monitor against a recording Bind hook: the test plays WireGuard's send path.</summary>
public sealed class BindHookActivityMonitorTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(5);
    private readonly RecordingBindHook _hook = new();
    private readonly RecordingActivityListener _listener = new();

    private BindHookActivityMonitor NewMonitor(CountingLogger? logger = null)
        => new(_hook, _listener, (Microsoft.Extensions.Logging.ILogger?)logger ?? NullLogger.Instance);

    [Fact]
    public async Task Watch_claims_one_loopback_endpoint_per_peer_and_is_idempotent()
    {
        await using var monitor = NewMonitor();

        var a = monitor.Watch(TestKeys.Peer(1));
        var b = monitor.Watch(TestKeys.Peer(2));

        Assert.Equal(a, monitor.Watch(TestKeys.Peer(1)));
        Assert.NotEqual(a.Address, b.Address);
        Assert.Equal(BindHookActivityMonitor.StandInPort, a.Port);
        Assert.Equal(IPAddress.Parse("127.128.0.1"), a.Address);
        Assert.Equal(2, monitor.Count);
        Assert.Equal(new[] { a, b }.OrderBy(e => e.ToString()), _hook.Claimed.OrderBy(e => e.ToString()));
    }

    [Fact]
    public async Task Unwatch_gives_the_claim_and_the_address_back()
    {
        await using var monitor = NewMonitor();
        var a = monitor.Watch(TestKeys.Peer(1));
        var b = monitor.Watch(TestKeys.Peer(2));

        monitor.Unwatch(TestKeys.Peer(1));
        monitor.Unwatch(TestKeys.Peer(1));
        monitor.Unwatch(TestKeys.Peer(99));

        Assert.Equal(1, monitor.Count);
        Assert.Equal([b], _hook.Claimed);
        var c = monitor.Watch(TestKeys.Peer(3));
        Assert.Equal(a, c);
    }

    [Fact]
    public async Task Each_datagram_to_a_watched_peer_is_reported_with_its_exact_bytes()
    {
        await using var monitor = NewMonitor();
        var a = monitor.Watch(TestKeys.Peer(1));
        var b = monitor.Watch(TestKeys.Peer(2));
        var first = TestKeys.Initiation(0xA1);
        var retry = TestKeys.Initiation(0xA2);
        var forB = TestKeys.Initiation(0xB1);

        Assert.True(_hook.SendTo(a, first));
        Assert.True(_hook.SendTo(b, forB));
        Assert.True(_hook.SendTo(a, retry));

        _listener.AssertNext(TestKeys.Peer(1), first, Wait);
        _listener.AssertNext(TestKeys.Peer(2), forB, Wait);
        _listener.AssertNext(TestKeys.Peer(1), retry, Wait);
        Assert.Equal(0, _listener.Pending);
        Assert.Equal(3, monitor.DatagramsReported);
        Assert.Equal(0, monitor.DatagramsDropped);
    }

    [Fact]
    public async Task A_datagram_reaching_the_sink_after_unwatch_is_dropped_and_counted()
    {
        await using var monitor = NewMonitor();
        var a = monitor.Watch(TestKeys.Peer(1));
        var sink = _hook.EverClaimed[a];

        monitor.Unwatch(TestKeys.Peer(1));
        sink.Send(TestKeys.Initiation(0xA1)); // WireGuard picked the sink just before the claim went away

        Assert.False(_hook.SendTo(a, TestKeys.Initiation(0xA2)));
        Assert.Equal(0, _listener.Calls);
        Assert.Equal(1, monitor.DatagramsDropped);
        Assert.Equal(0, monitor.DatagramsReported);
    }

    [Fact]
    public async Task A_throwing_listener_does_not_reach_the_send_path_and_is_logged_once_per_peer()
    {
        var logger = new CountingLogger();
        await using var monitor = NewMonitor(logger);
        var a = monitor.Watch(TestKeys.Peer(1));
        var b = monitor.Watch(TestKeys.Peer(2));
        _listener.Throw = true;

        for (var i = 0; i < 3; i++)
        {
            _hook.SendTo(a, TestKeys.Initiation(0xA1));
            _hook.SendTo(b, TestKeys.Initiation(0xB1));
        }

        Assert.Equal(6, _listener.Calls);
        Assert.Equal(6, monitor.ListenerFailures);
        Assert.Equal(2, logger.Errors);

        _listener.Throw = false;
        _hook.SendTo(a, TestKeys.Initiation(0xA3));
        Assert.Equal(TestKeys.Initiation(0xA3), Take().Datagram);
    }

    [Fact]
    public async Task An_endpoint_claimed_by_someone_else_is_skipped()
    {
        _hook.Taken.Add(IPEndPoint.Parse($"127.128.0.1:{BindHookActivityMonitor.StandInPort}"));
        await using var monitor = NewMonitor();

        var a = monitor.Watch(TestKeys.Peer(1));

        Assert.Equal(IPEndPoint.Parse($"127.128.0.2:{BindHookActivityMonitor.StandInPort}"), a);
    }

    [Fact]
    public async Task Dispose_releases_every_claim_and_refuses_new_watches()
    {
        var monitor = NewMonitor();
        monitor.Watch(TestKeys.Peer(1));
        monitor.Watch(TestKeys.Peer(2));

        await monitor.DisposeAsync();
        await monitor.DisposeAsync();

        Assert.Empty(_hook.Claimed);
        Assert.Equal(0, monitor.Count);
        Assert.Throws<ObjectDisposedException>(() => monitor.Watch(TestKeys.Peer(3)));
        monitor.Unwatch(TestKeys.Peer(1));
    }

    [Fact]
    public async Task Concurrent_watches_and_unwatches_keep_claims_and_count_consistent()
    {
        await using var monitor = NewMonitor();
        var workers = Enumerable.Range(0, 4).Select(w => Task.Run(() =>
        {
            for (var i = 0; i < 500; i++)
            {
                var peer = TestKeys.Peer((w * 1000) + (i % 50));
                var endpoint = monitor.Watch(peer);
                _hook.SendTo(endpoint, TestKeys.Initiation(0x11));
                if (i % 3 == 0)
                {
                    monitor.Unwatch(peer);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        Assert.Equal(monitor.Count, _hook.Claimed.Count);
        Assert.Equal(_hook.Claimed.Count, _hook.Claimed.Distinct().Count());
        Assert.Equal(2000, monitor.DatagramsReported); // each worker sends only to its own, still watched, peers
    }

    private (Abstractions.WireGuard.WgKey Peer, byte[] Datagram) Take()
        => _listener.Next(Wait) ?? throw new Xunit.Sdk.XunitException("no report");
}
