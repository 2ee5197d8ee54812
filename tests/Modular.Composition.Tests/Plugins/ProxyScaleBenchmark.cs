using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyBind;
using Modular.Plugins.ProxyUdp;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.Composition.Tests.Plugins;

/// <summary>
/// Opt-in benchmark (MODULAR_BENCH=1; `scripts/bench proxies`): N relayed peers in one process through each proxy
/// form — the udp proxy's one shared socket, the per-peer-socket form (the ThirdPartyProxy fixture: a connected
/// loopback socket per peer, what the udp proxy was before) and bind — interleaved rounds, medians: time to set up
/// N relayed peers, sockets and managed memory they hold, and relay-to-WireGuard throughput with every peer sending
/// at once. WireGuard is a counting UDP socket (udp, per-peer) or a counting Bind hook (bind). It asserts only that
/// each run carried traffic and gave its sockets back.
/// </summary>
[Collection(nameof(AllocationCollection))]
public sealed class ProxyScaleBenchmark(ITestOutputHelper output)
{
    private const int DatagramBytes = 1200;

    [SkippableFact]
    public async Task Relayed_peers_at_scale_per_proxy_form()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var peers = int.Parse(Environment.GetEnvironmentVariable("PROXY_BENCH_PEERS") ?? "1000", CultureInfo.InvariantCulture);
        var rounds = int.Parse(Environment.GetEnvironmentVariable("ROUNDS") ?? "5", CultureInfo.InvariantCulture);
        var perPeer = Environment.GetEnvironmentVariable("PROXY_BENCH_DATAGRAMS") is { } d ? int.Parse(d, CultureInfo.InvariantCulture) : 200;

        var pluginsDir = PluginFixtures.CreatePluginsDir("ThirdPartyProxy");
        try
        {
            using var catalog = PluginCatalog.Load(pluginsDir, NullLogger.Instance);
            var thirdParty = catalog.Get<IProxyFactory>("thirdparty");
            var results = new Dictionary<string, List<Round>> { ["udp (shared socket)"] = [], ["per-peer socket"] = [], ["bind"] = [] };
            for (var round = 0; round < rounds; round++)
            {
                results["udp (shared socket)"].Add(await RunAsync(peers, perPeer, port => new UdpProxyFactory(), null));
                results["per-peer socket"].Add(await RunAsync(peers, perPeer, _ => thirdParty, null));
                results["bind"].Add(await RunAsync(peers, perPeer, null, new CountingBindHook()));
            }

            output.WriteLine($"{peers} relayed peers, {perPeer} datagrams of {DatagramBytes} bytes each per round, median of {rounds} interleaved rounds, {Environment.ProcessorCount} cores:");
            output.WriteLine("| proxy | set up (ms) | sockets | managed MB | relay -> WireGuard (Mbit/s) | delivered |");
            output.WriteLine("| --- | --- | --- | --- | --- | --- |");
            foreach (var (kind, list) in results)
            {
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {kind} | {Median(list, r => r.SetupMs):F0} | {Median(list, r => r.Sockets):F0} | {Median(list, r => r.ManagedMb):F1} | {Median(list, r => r.Mbps):F0} | {Median(list, r => r.Delivered * 100):F0}% |"));
            }
        }
        finally
        {
            Directory.Delete(pluginsDir, recursive: true);
        }
    }

    private static double Median(List<Round> rounds, Func<Round, double> value)
    {
        var sorted = rounds.Select(value).Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private static async Task<Round> RunAsync(int peers, int datagramsPerPeer, Func<int, IProxyFactory>? factoryFor, CountingBindHook? hook)
    {
        using var wireGuard = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveBufferSize = 8 << 20 };
        wireGuard.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)wireGuard.LocalEndPoint!).Port;
        long received = 0;
        var receiver = new Thread(() =>
        {
            var buffer = new byte[65536];
            try
            {
                while (true)
                {
                    wireGuard.Receive(buffer);
                    Interlocked.Increment(ref received);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        }) { IsBackground = true };
        receiver.Start();

        GC.Collect();
        var socketsBefore = Sockets();
        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);
        IWgInterfaceView iface = new FakeWgIface(hook is null ? WgInterfaceMode.Kernel : WgInterfaceMode.Userspace, port, hook);
        var relays = new List<BurstRelay>(peers);
        var proxies = new List<IProxy>(peers);
        var clock = Stopwatch.StartNew();
        var factory = factoryFor?.Invoke(port);
        for (var i = 0; i < peers; i++)
        {
            var proxy = factory is null ? new BindProxy(hook!, NullLogger.Instance) : await factory.CreateAsync(iface, new FakePluginContext(), CancellationToken.None);
            var relay = new BurstRelay(datagramsPerPeer);
            var key = new byte[32];
            BitConverter.TryWriteBytes(key, i);
            await proxy.AddRelayedConnAsync(relay, new WgKey(key), CancellationToken.None);
            proxy.Work();
            relays.Add(relay);
            proxies.Add(proxy);
        }

        var setupMs = clock.Elapsed.TotalMilliseconds;
        var sockets = Sockets() - socketsBefore;
        var managedMb = (GC.GetTotalMemory(forceFullCollection: false) - memoryBefore) / 1e6;

        // Every peer's relay releases its burst at once; the round ends when all were taken and WireGuard stopped
        // receiving for 200 ms (what a full socket buffer dropped is not coming).
        long Delivered() => hook?.Injected ?? Interlocked.Read(ref received);
        clock.Restart();
        foreach (var relay in relays)
        {
            relay.Go();
        }

        await Task.WhenAll(relays.Select(r => r.Drained)).WaitAsync(TimeSpan.FromMinutes(2));
        var last = -1L;
        while (Delivered() != last)
        {
            last = Delivered();
            await Task.Delay(200);
        }

        var seconds = (clock.Elapsed - TimeSpan.FromMilliseconds(200)).TotalSeconds;
        var delivered = Delivered();
        foreach (var proxy in proxies)
        {
            await proxy.CloseAsync();
        }

        Assert.True(delivered > 0, "the proxies carried traffic");
        Assert.True(Sockets() <= socketsBefore, "closing every proxy gave its sockets back");
        return new Round(setupMs, sockets, managedMb, delivered * DatagramBytes * 8 / seconds / 1e6, (double)delivered / ((long)peers * datagramsPerPeer));
    }

    private static int Sockets()
        => Directory.GetFiles("/proc/self/fd").Count(fd =>
        {
            try
            {
                return File.ResolveLinkTarget(fd, returnFinalTarget: false)?.FullName.Contains("socket:", StringComparison.Ordinal) == true;
            }
            catch (IOException)
            {
                return false;
            }
        });

    private sealed record Round(double SetupMs, double Sockets, double ManagedMb, double Mbps, double Delivered);

    /// <summary>A relay that hands out a burst of transport-framed datagrams after <see cref="Go"/>, then waits until closed.</summary>
    private sealed class BurstRelay(int count) : IRelayedConnection
    {
        private static readonly byte[] Datagram = WgFrames.AsTransport(new byte[DatagramBytes]);
        private readonly TaskCompletionSource _go = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _left = count;

        public string RelayAddress => "rels://burst.test:443";

        public Task Drained => _drained.Task;

        public void Go() => _go.TrySetResult();

        public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            await _go.Task.WaitAsync(cancellationToken);
            if (_left-- > 0)
            {
                Datagram.CopyTo(buffer);
                return Datagram.Length;
            }

            _drained.TrySetResult();
            await _closed.Task.WaitAsync(cancellationToken);
            return 0;
        }

        public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        public ValueTask DisposeAsync()
        {
            _closed.TrySetResult();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A Bind hook that only counts what the bind proxy injects.</summary>
    private sealed class CountingBindHook : IWgBindHook
    {
        private long _injected;

        public long Injected => Interlocked.Read(ref _injected);

        public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink) => new Nothing();

        public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from) => Interlocked.Increment(ref _injected);

        private sealed class Nothing : IDisposable
        {
            public void Dispose()
            {
            }
        }
    }
}
