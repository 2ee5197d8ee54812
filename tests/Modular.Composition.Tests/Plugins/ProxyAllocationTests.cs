using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyBind;
using Modular.Plugins.ProxyUdp;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>Runs alone: it counts the whole process's allocations.</summary>
[CollectionDefinition(nameof(AllocationCollection), DisableParallelization = true)]
public sealed class AllocationCollection;

/// <summary>
/// The packet paths of both proxies allocate nothing per datagram once warm. A single allocation per datagram
/// (at least 24 bytes) would show as 24 or more bytes per datagram; the bound of one byte per datagram leaves
/// room for the test's own waits and the runtime's per-batch work. (The UDP proxy's relay-to-WireGuard send is
/// left out: when the loopback send buffer fills under load, the runtime completes that send asynchronously and
/// allocates for it, which is the socket layer's cost, not the proxy's.)
/// </summary>
[Collection(nameof(AllocationCollection))]
public sealed class ProxyAllocationTests
{
    private const int Warmup = 2_000;
    private const int Measured = 50_000;
    private const int Rounds = 3;
    private static readonly WgKey Peer = new(new byte[32]);

    [Fact]
    public async Task Bind_proxy_relay_to_WireGuard_allocates_nothing_per_datagram()
    {
        var hook = new CountingBindHook();
        var relay = new CountingRelay();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();

        await relay.DeliverAsync(Warmup);
        var allocated = await AllocatedDuringAsync(() => relay.DeliverAsync(Measured));

        Assert.Equal(Warmup + (Rounds * Measured), hook.Injected);
        Assert.True(allocated < Measured, $"{allocated} bytes allocated for {Measured} datagrams");
    }

    [Fact]
    public async Task Bind_proxy_WireGuard_to_relay_allocates_nothing_per_datagram()
    {
        var hook = new CountingBindHook();
        var relay = new CountingRelay();
        await using var proxy = new BindProxy(hook, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();
        var datagram = new byte[1200];

        // Batches well inside the proxy's queue, so nothing is dropped for being too fast.
        var sent = 0;
        void SendBatches(int count)
        {
            for (var i = 0; i < count; i += 500)
            {
                for (var j = 0; j < 500; j++)
                {
                    hook.Sink!.Send(datagram);
                }

                sent += 500;
                relay.WaitForSends(sent);
            }
        }

        SendBatches(Warmup);
        var allocated = await AllocatedDuringAsync(() =>
        {
            SendBatches(Measured);
            return Task.CompletedTask;
        });

        Assert.Equal(0, proxy.DroppedToRelay);
        Assert.True(allocated < Measured, $"{allocated} bytes allocated for {Measured} datagrams");
    }

    [Fact]
    public async Task Udp_proxy_WireGuard_to_relay_allocates_nothing_per_datagram()
    {
        using var wireGuard = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        wireGuard.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var relay = new CountingRelay();
        await using var proxy = new UdpProxy(((IPEndPoint)wireGuard.LocalEndPoint!).Port, NullLogger.Instance);
        await proxy.AddRelayedConnAsync(relay, Peer, CancellationToken.None);
        proxy.Work();
        wireGuard.Connect(proxy.EndpointAddr);
        var datagram = new byte[64];

        // Small batches, so the proxy's socket buffer never overflows and every datagram arrives.
        var sent = 0;
        void SendBatches(int count)
        {
            for (var i = 0; i < count; i += 100)
            {
                for (var j = 0; j < 100; j++)
                {
                    wireGuard.Send(datagram);
                }

                sent += 100;
                relay.WaitForSends(sent);
            }
        }

        SendBatches(Warmup);
        var allocated = await AllocatedDuringAsync(() =>
        {
            SendBatches(Measured);
            return Task.CompletedTask;
        });

        Assert.True(allocated < Measured, $"{allocated} bytes allocated for {Measured} datagrams");
    }

    // The counter is process-wide: the test runner's own threads (reporting earlier results) add noise now and
    // then. Noise only adds, while an allocation per datagram shows in every round, so the least round counts.
    private static async Task<long> AllocatedDuringAsync(Func<Task> run)
    {
        var least = long.MaxValue;
        for (var round = 0; round < Rounds; round++)
        {
            var before = GC.GetTotalAllocatedBytes(precise: true);
            await run();
            least = Math.Min(least, GC.GetTotalAllocatedBytes(precise: true) - before);
        }

        return least;
    }

    /// <summary>A Bind hook that only counts: the test measures the proxy, not a fake WireGuard.</summary>
    private sealed class CountingBindHook : IWgBindHook
    {
        private int _injected;

        public IDatagramSink? Sink { get; private set; }

        public int Injected => Volatile.Read(ref _injected);

        public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink)
        {
            Sink = sink;
            return new Release(this);
        }

        public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from) => Interlocked.Increment(ref _injected);

        private sealed class Release(CountingBindHook hook) : IDisposable
        {
            public void Dispose() => hook.Sink = null;
        }
    }

    /// <summary>
    /// A relay that hands out batches of one reused datagram without allocating, and counts what it is sent.
    /// One reader (the proxy's relay loop); the test adds a batch only while that reader waits for more.
    /// </summary>
    private sealed class CountingRelay : IRelayedConnection
    {
        private readonly byte[] _datagram = WgFrames.AsTransport(new byte[1200]);
        private readonly SemaphoreSlim _more = new(0);
        private int _available;
        private long _sent;
        private long _sendTarget;
        private Func<bool>? _sendsReached;
        private TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string RelayAddress => "rels://counting.test:443";

        /// <summary>Hands out <paramref name="count"/> datagrams and completes once the proxy has taken them all.</summary>
        public async Task DeliverAsync(int count)
        {
            await _waiting.Task.WaitAsync(Bounded.Wait);
            var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting = drained;
            Volatile.Write(ref _available, count);
            _more.Release();
            await drained.Task.WaitAsync(Bounded.Wait);
        }

        /// <summary>Blocks until the relay was sent <paramref name="total"/> datagrams in all (no allocation per call).</summary>
        public void WaitForSends(long total)
        {
            Volatile.Write(ref _sendTarget, total);
            _sendsReached ??= () => Interlocked.Read(ref _sent) >= Volatile.Read(ref _sendTarget);
            if (!SpinWait.SpinUntil(_sendsReached, TimeSpan.FromSeconds(15)))
            {
                throw new TimeoutException($"the relay got {Interlocked.Read(ref _sent)} of {total} datagrams");
            }
        }

        public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            if (_available > 0)
            {
                return new ValueTask<int>(Take(buffer.Span));
            }

            return WaitForMoreAsync(buffer, cancellationToken);
        }

        public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _sent);
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;

        private async ValueTask<int> WaitForMoreAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            _waiting.TrySetResult();
            await _more.WaitAsync(cancellationToken);
            return Take(buffer.Span);
        }

        private int Take(Span<byte> buffer)
        {
            _available--;
            _datagram.CopyTo(buffer);
            return _datagram.Length;
        }
    }
}
