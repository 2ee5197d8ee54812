using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>The lifecycle every proxy inherits from <see cref="RelayedProxy"/>, with WireGuard as two in-memory queues.</summary>
public sealed class RelayedProxyTests
{
    private static readonly WgKey Peer = new(Enumerable.Range(7, 32).Select(i => (byte)i).ToArray());

    [Fact]
    public async Task Forwards_both_ways_and_Pause_stops_only_relay_to_WireGuard()
    {
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        Assert.Equal(proxy.AttachedEndpoint, proxy.EndpointAddr);
        proxy.Work();

        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(1, 2));
        Assert.Equal(WgFrames.Transport(1, 2), await proxy.ToWireGuard.Reader.ReadAsync(Bounded.Wait));
        await proxy.FromWireGuard.Writer.WriteAsync([3]);
        Assert.Equal([3], await relay.ToRelay.Reader.ReadAsync(Bounded.Wait));

        proxy.Pause();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(4));
        await relay.WaitConsumedAsync(2);
        await proxy.FromWireGuard.Writer.WriteAsync([5]);
        Assert.Equal([5], await relay.ToRelay.Reader.ReadAsync(Bounded.Wait));

        proxy.Work();
        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(6));
        Assert.Equal(WgFrames.Transport(6), await proxy.ToWireGuard.Reader.ReadAsync(Bounded.Wait));
        Assert.False(proxy.ToWireGuard.Reader.TryRead(out _), "the datagram that arrived while paused was dropped");
    }

    [Fact]
    public async Task Malformed_and_oversized_datagrams_from_the_relay_are_dropped_and_counted()
    {
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();

        await RelayJunk.AssertDroppedAndCountedAsync(proxy, relay, async () => await proxy.ToWireGuard.Reader.ReadAsync(Bounded.Wait));
        Assert.False(proxy.ToWireGuard.Reader.TryRead(out _));
    }

    [Theory]
    [InlineData(new byte[] { }, RelayedDatagram.Malformed)]
    [InlineData(new byte[] { 4, 0, 0 }, RelayedDatagram.Malformed)]
    [InlineData(new byte[] { 0, 0, 0, 0 }, RelayedDatagram.Malformed)]
    public void Classify_finds_short_and_typeless_datagrams_malformed(byte[] datagram, RelayedDatagram expected)
        => Assert.Equal(expected, RelayedConnectionPump.Classify(datagram));

    [Fact]
    public async Task Work_from_many_threads_starts_the_loops_once()
    {
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);

        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(proxy.Work)));
        proxy.Pause();
        proxy.Work();

        await Bounded.UntilAsync(() => relay.ReceiveCalls >= 1, "the relay loop to start");
        await Bounded.UntilAsync(() => proxy.WireGuardLoopStarts >= 1, "the WireGuard loop to start");
        Assert.Equal(1, relay.ReceiveCalls);
        Assert.Equal(1, proxy.WireGuardLoopStarts);
    }

    [Fact]
    public async Task Disconnected_is_raised_once_when_the_relay_closes_and_a_throwing_handler_does_not_escape()
    {
        var relay = new InMemoryRelayedConnection();
        var logger = new ListLogger();
        var proxy = new QueueProxy(logger);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var count = 0;
        proxy.Disconnected += (_, _) =>
        {
            Interlocked.Increment(ref count);
            throw new InvalidOperationException("subscriber bug");
        };
        proxy.Work();

        relay.FromRelay.Writer.Complete();
        await Bounded.UntilAsync(() => logger.Warnings.Count == 1, "the handler's failure to be logged");
        await proxy.CloseAsync();
        await proxy.CloseAsync();

        Assert.Equal(1, count);
        Assert.Contains("queue proxy", logger.Warnings[0], StringComparison.Ordinal);
        Assert.Single(logger.Warnings);
        Assert.Equal(1, proxy.Detaches);
    }

    [Fact]
    public async Task A_failing_relay_raises_Disconnected_once()
    {
        var relay = new ScriptedRelayedConnection { ReceiveFailure = new IOException("relay reset") };
        await using var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var count = 0;
        var raised = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        proxy.Disconnected += (_, _) =>
        {
            Interlocked.Increment(ref count);
            raised.TrySetResult();
        };

        proxy.Work();
        await raised.Task.WaitAsync(Bounded.Wait);
        proxy.Pause();
        proxy.Work();
        await proxy.CloseAsync();

        Assert.Equal(1, count);
    }

    [Fact]
    public async Task A_failed_send_to_the_relay_loses_one_datagram_and_the_loop_goes_on()
    {
        var relay = new ScriptedRelayedConnection { FailSends = 1 };
        await using var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();

        await proxy.FromWireGuard.Writer.WriteAsync([1]);
        await proxy.FromWireGuard.Writer.WriteAsync([2]);

        Assert.Equal([2], await relay.Sent.Reader.ReadAsync(Bounded.Wait));
    }

    [Fact]
    public async Task Close_from_many_threads_detaches_once_and_raises_no_Disconnected()
    {
        var relay = new InMemoryRelayedConnection();
        var proxy = new QueueProxy();
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        var disconnected = 0;
        proxy.Disconnected += (_, _) => Interlocked.Increment(ref disconnected);
        proxy.Work();

        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () => await proxy.CloseAsync())));
        await proxy.DisposeAsync();

        Assert.True(relay.Disposed);
        Assert.Equal(1, proxy.Detaches);
        Assert.Equal(1, proxy.LoopsStopped);
        Assert.Equal(0, disconnected);
        Assert.Throws<ObjectDisposedException>(proxy.Work);
        Assert.Throws<ObjectDisposedException>(() => proxy.RedirectAs(new IPEndPoint(IPAddress.Loopback, 9)));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () =>
            await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None));
    }

    [Fact]
    public async Task Close_before_any_relayed_connection_still_detaches_once()
    {
        var proxy = new QueueProxy();
        await proxy.CloseAsync();
        await proxy.CloseAsync();

        Assert.Equal(0, proxy.Attaches);
        Assert.Equal(1, proxy.Detaches);
        Assert.Equal(1, proxy.LoopsStopped);
    }

    [Fact]
    public async Task A_failed_attach_adds_nothing_and_can_be_retried()
    {
        await using var proxy = new QueueProxy { FailNextAttach = true };
        var relay = new InMemoryRelayedConnection();

        await Assert.ThrowsAsync<IOException>(async () => await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None));
        Assert.Throws<InvalidOperationException>(() => proxy.EndpointAddr);
        Assert.Throws<InvalidOperationException>(proxy.Work);

        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        Assert.Equal(proxy.AttachedEndpoint, proxy.EndpointAddr);
        Assert.Equal(2, proxy.Attaches);
    }

    [Fact]
    public async Task A_cancelled_add_or_a_second_connection_is_refused()
    {
        await using var proxy = new QueueProxy();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, new CancellationToken(canceled: true)));
        Assert.Equal(0, proxy.Attaches);

        await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None);
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), Peer, CancellationToken.None));
        Assert.Equal(1, proxy.Attaches);
    }

    [Fact]
    public async Task RedirectAs_needs_a_connection_then_applies_and_resumes_forwarding()
    {
        var relay = new InMemoryRelayedConnection();
        await using var proxy = new QueueProxy();
        var asPeer = new IPEndPoint(IPAddress.Parse("198.18.3.4"), 51820);
        Assert.Throws<InvalidOperationException>(() => proxy.RedirectAs(asPeer));
        Assert.Null(proxy.Redirect);

        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.RedirectAs(asPeer);
        Assert.Equal(asPeer, proxy.Redirect);

        await relay.FromRelay.Writer.WriteAsync(WgFrames.Transport(8));
        Assert.Equal(WgFrames.Transport(8), await proxy.ToWireGuard.Reader.ReadAsync(Bounded.Wait));
    }

    /// <summary>A proxy whose WireGuard side is two queues, counting the hooks the base calls.</summary>
    private sealed class QueueProxy(ILogger? logger = null) : RelayedProxy(logger ?? NullLogger.Instance)
    {
        private int _attaches;
        private int _detaches;
        private int _loopsStopped;
        private int _wireGuardLoopStarts;

        public Channel<byte[]> ToWireGuard { get; } = Channel.CreateUnbounded<byte[]>();

        public Channel<byte[]> FromWireGuard { get; } = Channel.CreateUnbounded<byte[]>();

        public bool FailNextAttach { get; set; }

        public IPEndPoint? AttachedEndpoint { get; private set; }

        public IPEndPoint? Redirect { get; private set; }

        public int Attaches => Volatile.Read(ref _attaches);

        public int Detaches => Volatile.Read(ref _detaches);

        public int LoopsStopped => Volatile.Read(ref _loopsStopped);

        public int WireGuardLoopStarts => Volatile.Read(ref _wireGuardLoopStarts);

        public override string Kind => "queue";

        protected override IPEndPoint AttachToWireGuard()
        {
            var n = Interlocked.Increment(ref _attaches);
            if (FailNextAttach)
            {
                FailNextAttach = false;
                throw new IOException("attach failed");
            }

            AttachedEndpoint = new IPEndPoint(IPAddress.Loopback, 40000 + n);
            return AttachedEndpoint;
        }

        protected override ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
            => ToWireGuard.Writer.WriteAsync(datagram.ToArray(), cancellationToken);

        protected override async Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _wireGuardLoopStarts);
            try
            {
                await foreach (var datagram in FromWireGuard.Reader.ReadAllAsync(cancellationToken))
                {
                    if (!await SendToRelayAsync(connection, datagram, cancellationToken))
                    {
                        return;
                    }
                }
            }
            catch (OperationCanceledException)
            {
            }
        }

        protected override void ApplyRedirect(IPEndPoint endpoint) => Redirect = endpoint;

        protected override void DetachFromWireGuard()
        {
            Interlocked.Increment(ref _detaches);
            FromWireGuard.Writer.TryComplete();
        }

        protected override void OnLoopsStopped() => Interlocked.Increment(ref _loopsStopped);
    }

    /// <summary>A relay that fails on cue: every receive, or the first sends.</summary>
    private sealed class ScriptedRelayedConnection : IRelayedConnection
    {
        private int _failSends;

        public Exception? ReceiveFailure { get; init; }

        public int FailSends
        {
            get => _failSends;
            init => _failSends = value;
        }

        public Channel<byte[]> Sent { get; } = Channel.CreateUnbounded<byte[]>();

        public string RelayAddress => "rels://scripted.test:443";

        public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            if (ReceiveFailure is not null)
            {
                throw ReceiveFailure;
            }

            await Task.Delay(Timeout.Infinite, cancellationToken);
            return 0;
        }

        public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
        {
            if (Interlocked.Decrement(ref _failSends) >= 0)
            {
                throw new IOException("relay send failed");
            }

            Sent.Writer.TryWrite(datagram.ToArray());
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
