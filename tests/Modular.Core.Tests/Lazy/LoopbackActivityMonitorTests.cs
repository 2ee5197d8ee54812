using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Lazy;

namespace Modular.Core.Tests.Lazy;

/// <summary>
/// The one-socket monitor on this host's loopback: datagrams go only to 127/8 addresses, which the kernel
/// delivers on lo to the monitor's socket.
/// </summary>
public sealed class LoopbackActivityMonitorTests : IAsyncLifetime
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(5);
    private readonly RecordingActivityListener _listener = new();
    private readonly CountingLogger _logger = new();
    private readonly Socket _sender = new(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
    private LoopbackActivityMonitor _monitor = null!;

    public Task InitializeAsync()
    {
        _monitor = new LoopbackActivityMonitor(_listener, _logger);
        _sender.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _sender.Dispose();
        await _monitor.DisposeAsync();
    }

    [Fact]
    public void Watch_gives_each_peer_its_own_127_128_address_on_the_monitors_port()
    {
        var a = _monitor.Watch(TestKeys.Peer(1));
        var b = _monitor.Watch(TestKeys.Peer(2));

        Assert.Equal(new IPEndPoint(IPAddress.Parse("127.128.0.1"), _monitor.Port), a);
        Assert.Equal(new IPEndPoint(IPAddress.Parse("127.128.0.2"), _monitor.Port), b);
        Assert.Equal(a, _monitor.Watch(TestKeys.Peer(1)));
        Assert.Equal(2, _monitor.Count);
        Assert.True(_monitor.BoundToLoopback);

        _monitor.Unwatch(TestKeys.Peer(1));
        _monitor.Unwatch(TestKeys.Peer(1));
        Assert.Equal(1, _monitor.Count);
        Assert.Equal(a, _monitor.Watch(TestKeys.Peer(3)));
    }

    [Fact]
    public void Each_datagram_to_a_watched_address_is_reported_for_its_peer_with_the_exact_bytes()
    {
        var a = _monitor.Watch(TestKeys.Peer(1));
        var b = _monitor.Watch(TestKeys.Peer(2));
        var first = TestKeys.Initiation(0xA1);
        var forB = TestKeys.Initiation(0xB1);
        var retry = TestKeys.Initiation(0xA2);

        _sender.SendTo(first, a);
        _sender.SendTo(forB, b);
        _sender.SendTo(retry, a);

        _listener.AssertNext(TestKeys.Peer(1), first, Wait);
        _listener.AssertNext(TestKeys.Peer(2), forB, Wait);
        _listener.AssertNext(TestKeys.Peer(1), retry, Wait);
        Assert.Null(_listener.Next(TimeSpan.FromMilliseconds(200)));
        Assert.Equal(3, _monitor.DatagramsReported);
        Assert.Equal(0, _monitor.DatagramsDropped);
    }

    [Fact]
    public void Datagrams_to_unwatched_or_foreign_addresses_are_dropped_and_counted()
    {
        var a = _monitor.Watch(TestKeys.Peer(1));
        _monitor.Unwatch(TestKeys.Peer(1));

        _sender.SendTo(TestKeys.Initiation(0xA1), a); // unwatched stand-in
        _sender.SendTo(TestKeys.Initiation(0xA2), new IPEndPoint(IPAddress.Parse("127.128.7.7"), _monitor.Port)); // never watched
        _sender.SendTo(TestKeys.Initiation(0xA3), new IPEndPoint(IPAddress.Loopback, _monitor.Port)); // outside 127.128.0.0/9

        Assert.True(WaitUntil(() => _monitor.DatagramsDropped == 3), $"dropped {_monitor.DatagramsDropped}");
        Assert.Equal(0, _listener.Calls);
        Assert.Equal(0, _monitor.DatagramsReported);

        // Still receiving afterwards.
        var b = _monitor.Watch(TestKeys.Peer(2));
        _sender.SendTo(TestKeys.Initiation(0xB1), b);
        Assert.Equal(TestKeys.Peer(2), Take().Peer);
    }

    [Fact]
    public void Empty_and_largest_datagrams_are_reported_whole()
    {
        var a = _monitor.Watch(TestKeys.Peer(1));
        var largest = new byte[65507]; // the most IPv4 UDP carries
        Random.Shared.NextBytes(largest);

        _sender.SendTo([], a);
        _sender.SendTo(largest, a);

        Assert.Empty(Take().Datagram);
        Assert.Equal(largest, Take().Datagram);
    }

    [Fact]
    public void A_throwing_listener_does_not_stop_the_loop_and_is_logged_once_per_peer()
    {
        var a = _monitor.Watch(TestKeys.Peer(1));
        var b = _monitor.Watch(TestKeys.Peer(2));
        _listener.Throw = true;

        for (var i = 0; i < 3; i++)
        {
            _sender.SendTo(TestKeys.Initiation(0xA1), a);
            _sender.SendTo(TestKeys.Initiation(0xB1), b);
        }

        Assert.True(WaitUntil(() => _monitor.ListenerFailures == 6), $"failures {_monitor.ListenerFailures}");
        Assert.Equal(2, _logger.Errors);
        _listener.Throw = false;
        _sender.SendTo(TestKeys.Initiation(0xA4), a);
        Assert.Equal(TestKeys.Initiation(0xA4), Take().Datagram);
    }

    [Fact]
    public async Task Dispose_closes_the_socket_and_ends_the_loop()
    {
        var monitor = new LoopbackActivityMonitor(_listener, NullLogger.Instance);
        var port = monitor.Port;
        monitor.Watch(TestKeys.Peer(1));

        await monitor.DisposeAsync();
        await monitor.DisposeAsync();

        Assert.Equal(0, monitor.Count);
        Assert.Throws<ObjectDisposedException>(() => monitor.Watch(TestKeys.Peer(2)));
        using var reuse = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        reuse.Bind(new IPEndPoint(IPAddress.Any, port)); // the port is free again: the socket is closed
    }

    [Fact]
    public async Task Concurrent_watches_and_unwatches_keep_one_address_per_watched_peer()
    {
        var workers = Enumerable.Range(0, 4).Select(w => Task.Run(() =>
        {
            for (var i = 0; i < 500; i++)
            {
                var peer = TestKeys.Peer((w * 1000) + (i % 50));
                _monitor.Watch(peer);
                if (i % 3 == 0)
                {
                    _monitor.Unwatch(peer);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers);

        var watched = Enumerable.Range(0, 4).SelectMany(w => Enumerable.Range(0, 50).Select(i => TestKeys.Peer((w * 1000) + i)))
            .Select(peer => _monitor.Watch(peer)).ToList(); // idempotent for those still watched
        Assert.Equal(200, _monitor.Count);
        Assert.Equal(200, watched.Distinct().Count());
    }

    [Fact]
    public async Task Disposing_while_datagrams_arrive_ends_cleanly()
    {
        var monitor = new LoopbackActivityMonitor(_listener, _logger);
        var to = monitor.Watch(TestKeys.Peer(1));
        var datagram = TestKeys.Initiation(0x66);
        var sending = Task.Run(() =>
        {
            for (var i = 0; i < 2000; i++)
            {
                _sender.SendTo(datagram, to);
            }
        });
        Assert.True(WaitUntil(() => monitor.DatagramsReported > 0));

        await monitor.DisposeAsync();
        await sending;
        var reportedAfterDispose = monitor.DatagramsReported;
        _sender.SendTo(datagram, to);

        Assert.Equal(0, _logger.Errors);
        Assert.Equal(0, _logger.Warnings); // among them: the loop not stopping in time
        Assert.Equal(0, monitor.Count);
        Assert.Equal(reportedAfterDispose, monitor.DatagramsReported);
    }

    private (Abstractions.WireGuard.WgKey Peer, byte[] Datagram) Take()
        => _listener.Next(Wait) ?? throw new Xunit.Sdk.XunitException($"no report (reported {_monitor.DatagramsReported}, dropped {_monitor.DatagramsDropped})");

    private static bool WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!condition() && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(10);
        }

        return condition();
    }
}
