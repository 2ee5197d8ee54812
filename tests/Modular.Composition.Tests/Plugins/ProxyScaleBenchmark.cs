using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;
using Modular.Plugins.ProxyBind;
using Modular.Plugins.ProxyEbpf;
using Modular.Plugins.ProxyUdp;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.Composition.Tests.Plugins;

/// <summary>
/// Opt-in benchmark (MODULAR_BENCH=1; `scripts/bench proxies`, issue 16): N relayed peers in one process through each
/// proxy form — the udp proxy's one shared socket, the per-peer-socket form (the ThirdPartyProxy fixture: a connected
/// loopback socket per peer, what the udp proxy was before), bind and ebpf — interleaved rounds, medians: time to set
/// up N relayed peers, sockets, managed memory and eBPF kernel memory they hold, relay-to-WireGuard throughput with
/// every peer sending at once, WireGuard-to-relay throughput with one sender over all peers, and the process CPU each
/// direction took. WireGuard is a counting UDP socket (udp, per-peer, ebpf)
/// or a counting Bind hook (bind). As root, ebpf and udp run in a network namespace of their own per round (the
/// program attaches to that namespace's lo) and each round also measures the host's own TCP over lo (iperf3 in such a
/// namespace) with the eBPF program attached and detached, in alternating order; without root those are left out and
/// udp runs in the test's namespace. It asserts only that each run carried traffic and gave its sockets back.
/// </summary>
[Collection(nameof(AllocationCollection))]
public sealed class ProxyScaleBenchmark(ITestOutputHelper output)
{
    private const int DatagramBytes = 1200;
    private const string Udp = "udp (shared socket)";
    private const string PerPeer = "per-peer socket";
    private const string Bind = "bind";
    private const string Ebpf = "ebpf";

    [SkippableFact]
    public async Task Relayed_peers_at_scale_per_proxy_form()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var peers = IntSetting("PROXY_BENCH_PEERS", 1000);
        var rounds = IntSetting("ROUNDS", 5);
        var perPeer = IntSetting("PROXY_BENCH_DATAGRAMS", 200);
        var loSeconds = IntSetting("PROXY_BENCH_LO_SECONDS", 5);
        // PROXY_BENCH_EBPF=0: no namespaces even as root (ebpf and the lo measurement left out).
        var inNamespaces = Prerequisites.IsRoot && Environment.GetEnvironmentVariable("PROXY_BENCH_EBPF") != "0";
        var iperf = inNamespaces && Prerequisites.FindOnPath("iperf3") is not null;

        var pluginsDir = PluginFixtures.CreatePluginsDir("ThirdPartyProxy");
        try
        {
            using var catalog = PluginCatalog.Load(pluginsDir, NullLogger.Instance);
            var thirdParty = catalog.Get<IProxyFactory>("thirdparty");
            var results = new Dictionary<string, List<Round>> { [Udp] = [], [PerPeer] = [], [Bind] = [] };
            if (inNamespaces)
            {
                results[Ebpf] = [];
            }

            var lo = new List<(double Detached, double Attached)>();
            for (var round = 0; round < rounds; round++)
            {
                results[Udp].Add(await InOwnNamespaceAsync(inNamespaces, "pxu", rig => RunAsync(peers, perPeer, new UdpProxyFactory(), rig)));
                results[PerPeer].Add(await RunAsync(peers, perPeer, thirdParty, null));
                results[Bind].Add(await RunAsync(peers, perPeer, null, null));
                if (inNamespaces)
                {
                    results[Ebpf].Add(await InOwnNamespaceAsync(true, "pxe", rig => RunAsync(peers, perPeer, new EbpfProxyFactory(), rig)));
                }

                if (iperf)
                {
                    lo.Add(await LoopbackTcpAsync(loSeconds, attachedFirst: round % 2 == 1));
                }
            }

            Report(peers, perPeer, rounds, loSeconds, results, lo, inNamespaces, iperf);
        }
        finally
        {
            Directory.Delete(pluginsDir, recursive: true);
        }
    }

    private static int IntSetting(string name, int fallback)
        => Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? int.Parse(value, CultureInfo.InvariantCulture) : fallback;

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private static string Each(IEnumerable<double> values, string format)
        => "[" + string.Join(", ", values.Select(v => v.ToString(format, CultureInfo.InvariantCulture))) + "]";

    /// <summary>Runs <paramref name="run"/> with a fresh namespace (deleted afterwards, also on failure), or with none.</summary>
    private static async Task<T> InOwnNamespaceAsync<T>(bool wanted, string prefix, Func<NamespacedWireGuard?, Task<T>> run)
    {
        if (!wanted)
        {
            return await run(null);
        }

        using var rig = NamespacedWireGuard.Create(prefix, receiveBufferBytes: 8 << 20);
        return await run(rig);
    }

    private void Report(int peers, int perPeer, int rounds, int loSeconds, Dictionary<string, List<Round>> results, List<(double Detached, double Attached)> lo, bool inNamespaces, bool iperf)
    {
        var load = File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "?";
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{peers} relayed peers, {perPeer} datagrams of {DatagramBytes} bytes each per round, median of {rounds} interleaved rounds, {Environment.ProcessorCount} cores, load average at the end {load}; udp {(inNamespaces ? "and ebpf each in a namespace of their own" : "in the test's namespace, ebpf left out (needs root; PROXY_BENCH_EBPF=0)")}:"));
        output.WriteLine("| proxy | set up (ms) | sockets | managed MB | eBPF kernel MB | relay -> WireGuard (Mbit/s) | per peer (kbit/s) | CPU µs per datagram | CPU ms per peer | delivered | WireGuard -> relay (Mbit/s) | CPU µs per datagram | delivered |");
        output.WriteLine("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        foreach (var (kind, list) in results)
        {
            var mbps = Median(list.Select(r => r.Mbps));
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {kind} | {Median(list.Select(r => r.SetupMs)):F0} | {Median(list.Select(r => r.Sockets)):F0} | {Median(list.Select(r => r.ManagedMb)):F1} | {Median(list.Select(r => r.KernelMb)):F2} | {mbps:F0} | {mbps * 1000 / peers:F1} | {Median(list.Select(r => r.CpuUsPerDatagram)):F1} | {Median(list.Select(r => r.CpuMsPerPeer)):F2} | {Median(list.Select(r => r.Delivered * 100)):F0}% | {Median(list.Select(r => r.BackMbps)):F0} | {Median(list.Select(r => r.BackCpuUsPerDatagram)):F1} | {Median(list.Select(r => r.BackDelivered * 100)):F0}% |"));
        }

        output.WriteLine("Per round:");
        foreach (var (kind, list) in results)
        {
            output.WriteLine($"  {kind}: set up ms {Each(list.Select(r => r.SetupMs), "F0")}; Mbit/s {Each(list.Select(r => r.Mbps), "F0")}; CPU µs/datagram {Each(list.Select(r => r.CpuUsPerDatagram), "F1")}; delivered {Each(list.Select(r => r.Delivered * 100), "F0")}%; back Mbit/s {Each(list.Select(r => r.BackMbps), "F0")}, CPU µs/datagram {Each(list.Select(r => r.BackCpuUsPerDatagram), "F1")}, delivered {Each(list.Select(r => r.BackDelivered * 100), "F0")}%");
        }

        Ratio(results, Bind, Udp);
        if (results.ContainsKey(Ebpf))
        {
            Ratio(results, Ebpf, Udp);
        }

        if (iperf)
        {
            var ratios = lo.Select(r => r.Attached / r.Detached).ToList();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"Host TCP over lo (iperf3 -t {loSeconds} in a namespace): program detached {Median(lo.Select(r => r.Detached)):F0} Mbit/s {Each(lo.Select(r => r.Detached), "F0")}, attached {Median(lo.Select(r => r.Attached)):F0} Mbit/s {Each(lo.Select(r => r.Attached), "F0")}; attached/detached median {Median(ratios):F2} {Each(ratios, "F2")}"));
        }
    }

    /// <summary>Prints <paramref name="a"/>/<paramref name="b"/> throughput per round (each round's pair ran back to back) and the ratio of CPU per datagram.</summary>
    private void Ratio(Dictionary<string, List<Round>> results, string a, string b)
    {
        var throughput = results[a].Zip(results[b], (x, y) => x.Mbps / y.Mbps).ToList();
        var cpu = results[a].Zip(results[b], (x, y) => x.CpuUsPerDatagram / y.CpuUsPerDatagram).ToList();
        var back = results[a].Zip(results[b], (x, y) => x.BackMbps / y.BackMbps).ToList();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{a}/{b}: relay -> WireGuard throughput median {Median(throughput):F2}x {Each(throughput, "F2")}; CPU per datagram median {Median(cpu):F2}x {Each(cpu, "F2")}; WireGuard -> relay throughput median {Median(back):F2}x {Each(back, "F2")}"));
    }

    /// <summary>
    /// The host's own TCP over lo (iperf3 client and server in a fresh namespace) without and with the eBPF proxy's
    /// program attached to that lo (one relayed peer, as an agent with relayed peers has it); returns Mbit/s of each.
    /// </summary>
    private static async Task<(double Detached, double Attached)> LoopbackTcpAsync(int seconds, bool attachedFirst)
    {
        using var rig = NamespacedWireGuard.Create("pxl");
        double detached = 0, attached = 0;
        for (var pass = 0; pass < 2; pass++)
        {
            if ((pass == 0) == attachedFirst)
            {
                var proxy = rig.CreateProxy(new EbpfProxyFactory());
                try
                {
                    await proxy.AddRelayedConnAsync(new InMemoryRelayedConnection(), new WgKey(new byte[32]), CancellationToken.None);
                    proxy.Work();
                    Assert.Single(BpfObjects.HeldBy(Environment.ProcessId).Links); // attached to the namespace's lo
                    attached = Iperf(rig.Namespace, seconds);
                }
                finally
                {
                    await proxy.CloseAsync();
                }
            }
            else
            {
                Assert.Empty(BpfObjects.HeldBy(Environment.ProcessId).Links);
                detached = Iperf(rig.Namespace, seconds);
            }
        }

        return (detached, attached);
    }

    private static double Iperf(NetworkNamespace ns, int seconds)
    {
        const int Port = 5201;
        using var server = ns.Start($"iperf3 -s -1 -p {Port}");
        ns.WaitForTcpListener(Port, TimeSpan.FromSeconds(30));
        var json = ns.Exec($"iperf3 -c 127.0.0.1 -p {Port} -t {seconds} -J", TimeSpan.FromSeconds(seconds + 60));
        using var document = JsonDocument.Parse(json);
        return document.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble() / 1e6;
    }

    /// <summary>
    /// One form, one round. <paramref name="factory"/> null: bind with a counting hook. With <paramref name="rig"/>,
    /// WireGuard is its stand-in and the first proxy is created and given its peer inside the namespace (that opens the
    /// shared socket, or loads and attaches the program); the rest share them, as in an agent.
    /// </summary>
    private static async Task<Round> RunAsync(int peers, int datagramsPerPeer, IProxyFactory? factory, NamespacedWireGuard? rig)
    {
        using var ownWireGuard = rig is null ? new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveBufferSize = 8 << 20 } : null;
        ownWireGuard?.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var wireGuard = rig?.WireGuard ?? ownWireGuard!;
        var port = ((IPEndPoint)wireGuard.LocalEndPoint!).Port;
        long received = 0;
        var receiver = new Thread(() =>
        {
            var buffer = new byte[65536];
            try
            {
                while (true)
                {
                    if (wireGuard.Receive(buffer) == 0)
                    {
                        return;
                    }

                    Interlocked.Increment(ref received);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
        }) { IsBackground = true };
        receiver.Start();

        var hook = factory is null ? new CountingBindHook() : null;
        GC.Collect();
        var socketsBefore = Sockets();
        var memoryBefore = GC.GetTotalMemory(forceFullCollection: true);
        var kernelBefore = BpfObjects.MemlockBytesHeldBy(Environment.ProcessId);
        IWgInterfaceView iface = rig?.Interface ?? new FakeWgIface(hook is null ? WgInterfaceMode.Kernel : WgInterfaceMode.Userspace, port, hook);
        var relays = new List<BurstRelay>(peers);
        var proxies = new List<IProxy>(peers);
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < peers; i++)
        {
            var relay = new BurstRelay(datagramsPerPeer);
            var key = new byte[32];
            BitConverter.TryWriteBytes(key, i);
            IProxy proxy;
            if (factory is null)
            {
                proxy = new BindProxy(hook!, NullLogger.Instance);
                await proxy.AddRelayedConnAsync(relay, new WgKey(key), CancellationToken.None);
            }
            else if (rig is not null && i == 0)
            {
                proxy = rig.Run(() =>
                {
                    var first = factory.CreateAsync(iface, new FakePluginContext(), CancellationToken.None).AsTask().GetAwaiter().GetResult();
                    first.AddRelayedConnAsync(relay, new WgKey(key), CancellationToken.None).AsTask().GetAwaiter().GetResult();
                    return first;
                });
            }
            else
            {
                proxy = await factory.CreateAsync(iface, new FakePluginContext(), CancellationToken.None);
                await proxy.AddRelayedConnAsync(relay, new WgKey(key), CancellationToken.None);
            }

            proxy.Work();
            relays.Add(relay);
            proxies.Add(proxy);
        }

        var setupMs = clock.Elapsed.TotalMilliseconds;
        var sockets = Sockets() - socketsBefore;
        var managedMb = (GC.GetTotalMemory(forceFullCollection: false) - memoryBefore) / 1e6;
        var kernelMb = (BpfObjects.MemlockBytesHeldBy(Environment.ProcessId) - kernelBefore) / 1e6;

        // Every peer's relay releases its burst at once; the round ends when all were taken and WireGuard stopped
        // receiving for 200 ms (what a full socket buffer dropped is not coming).
        long Delivered() => hook?.Injected ?? Interlocked.Read(ref received);
        var cpuBefore = ProcessCpu();
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
        var cpu = ProcessCpu() - cpuBefore;
        var delivered = Delivered();

        // The other way: WireGuard sends as many datagrams to the peers' endpoints (round-robin over the peers, one
        // thread, as one WireGuard device would), until the relays stop receiving for 200 ms.
        long Returned() => relays.Sum(r => r.Sent);
        var endpoints = proxies.Select(p => p.EndpointAddr).ToArray();
        cpuBefore = ProcessCpu();
        clock.Restart();
        var sender = new Thread(() => SendFromWireGuard(wireGuard, hook, endpoints, datagramsPerPeer)) { IsBackground = true };
        sender.Start();
        await Task.Run(() => sender.Join(TimeSpan.FromMinutes(2)));
        last = -1L;
        while (Returned() != last)
        {
            last = Returned();
            await Task.Delay(200);
        }

        var backSeconds = (clock.Elapsed - TimeSpan.FromMilliseconds(200)).TotalSeconds;
        var backCpu = ProcessCpu() - cpuBefore;
        var returned = Returned();
        foreach (var proxy in proxies)
        {
            await proxy.CloseAsync();
        }

        Assert.True(delivered > 0 && returned > 0, "the proxies carried traffic both ways");
        Assert.True(Sockets() <= socketsBefore, "closing every proxy gave its sockets back");
        var offered = (double)((long)peers * datagramsPerPeer);
        return new Round(setupMs, sockets, managedMb, kernelMb, delivered * DatagramBytes * 8 / seconds / 1e6,
            cpu.TotalMicroseconds / delivered, cpu.TotalMilliseconds / peers, delivered / offered,
            returned * DatagramBytes * 8 / backSeconds / 1e6, backCpu.TotalMicroseconds / returned, returned / offered);
    }

    /// <summary>WireGuard's side of the way back: to each peer's endpoint in turn, through the socket or the Bind hook's claimed sinks.</summary>
    private static void SendFromWireGuard(Socket wireGuard, CountingBindHook? hook, IPEndPoint[] endpoints, int datagramsPerPeer)
    {
        var datagram = WgFrames.AsTransport(new byte[DatagramBytes]);
        var addresses = endpoints.Select(e => e.Serialize()).ToArray();
        var sinks = hook is null ? null : endpoints.Select(hook.SinkFor).ToArray();
        for (var n = 0; n < datagramsPerPeer; n++)
        {
            for (var i = 0; i < endpoints.Length; i++)
            {
                if (sinks is not null)
                {
                    sinks[i].Send(datagram);
                    continue;
                }

                try
                {
                    wireGuard.SendTo(datagram, SocketFlags.None, addresses[i]);
                }
                catch (SocketException)
                {
                    // A full buffer or an ICMP error for an earlier datagram: that one is lost, as it would be for WireGuard.
                }
            }
        }
    }

    /// <summary>User plus system CPU of this process so far (every thread: proxies, relays, the counting WireGuard).</summary>
    private static TimeSpan ProcessCpu()
    {
        using var process = Process.GetCurrentProcess();
        return process.TotalProcessorTime;
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

    /// <summary>One form's round: "Back" is WireGuard -> relay, the rest relay -> WireGuard or set-up.</summary>
    private sealed record Round(
        double SetupMs, double Sockets, double ManagedMb, double KernelMb, double Mbps, double CpuUsPerDatagram, double CpuMsPerPeer, double Delivered,
        double BackMbps, double BackCpuUsPerDatagram, double BackDelivered);

    /// <summary>A relay that hands out a burst of transport-framed datagrams after <see cref="Go"/>, then waits until closed.</summary>
    private sealed class BurstRelay(int count) : IRelayedConnection
    {
        private static readonly byte[] Datagram = WgFrames.AsTransport(new byte[DatagramBytes]);
        private readonly TaskCompletionSource _go = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _left = count;
    private long _sent;

        public string RelayAddress => "rels://burst.test:443";

        public Task Drained => _drained.Task;

        public void Go() => _go.TrySetResult();

        /// <summary>Datagrams the proxy sent to the relay (from WireGuard).</summary>
        public long Sent => Interlocked.Read(ref _sent);

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

        public ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref _sent);
            return ValueTask.CompletedTask;
        }

        public ValueTask DisposeAsync()
        {
            _closed.TrySetResult();
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A Bind hook that counts what the bind proxy injects and keeps the sinks it claims (WireGuard's way back).</summary>
    private sealed class CountingBindHook : IWgBindHook
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<IPEndPoint, IDatagramSink> _sinks = new();
        private long _injected;

        public long Injected => Interlocked.Read(ref _injected);

        public IDatagramSink SinkFor(IPEndPoint endpoint) => _sinks[endpoint];

        public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink)
        {
            _sinks[endpoint] = sink;
            return new Nothing();
        }

        public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from) => Interlocked.Increment(ref _injected);

        private sealed class Nothing : IDisposable
        {
            public void Dispose()
            {
            }
        }
    }
}
