using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.MeshDns;
using Xunit.Abstractions;
using static Modular.Core.Tests.Dns.DnsTestMessages;

namespace Modular.Core.Tests.Dns;

/// <summary>
/// Zone answers allocate nothing (asserted, always). Throughput is a benchmark, not a timed test: it runs with
/// MODULAR_BENCH=1 (it loads both cores, which would disturb other tests) and prints its numbers.
/// </summary>
public sealed class DnsPerformanceTests(ITestOutputHelper output) : IDisposable
{
    private readonly DnsForwarder _forwarder = new(null, TimeProvider.System, NullLogger.Instance);

    public void Dispose() => _forwarder.Dispose();

    private static Modular.Control.Management.NetworkMap MapWith(int peers)
    {
        var map = Map();
        for (var i = 0; i < peers; i++)
        {
            map.RemotePeers.Add(new Modular.Control.Management.RemotePeer { Fqdn = $"peer{i}.modular.internal", AllowedIps = { $"100.65.{i / 256}.{i % 256}/32" } });
        }

        return map;
    }

    private DnsResolver Resolver(int peers) => new(_forwarder, NullLogger.Instance) { Records = DnsRecords.FromMap(MapWith(peers)) };

    [Fact]
    public void Answering_from_the_zone_allocates_nothing()
    {
        var resolver = Resolver(10_000);
        var response = new byte[512];
        var queries = new[] { DigQueryWithEdns, Query("peer9999.modular.internal", 1), Query("nobody.modular.internal", 28), Query("modular.internal", 6), Query("2.0.64.100.in-addr.arpa", 12) };
        foreach (var q in queries)
        {
            resolver.Answer(q, response, out _, out _); // warm up
        }

        var answered = 0;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 10_000; i++)
        {
            answered += resolver.Answer(queries[i % queries.Length], response, out _, out _) == DnsOutcome.Answered ? 1 : 0;
        }

        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(10_000, answered);
        Assert.Equal(0, allocated);
    }

    [SkippableFact]
    public async Task Measure_answers_per_second_in_process_and_over_loopback_udp()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        var big = MapWith(10_000);
        DnsRecords.FromMap(big);
        var watch = Stopwatch.StartNew();
        var records = DnsRecords.FromMap(big);
        output.WriteLine($"records from a 10,000-peer map: {watch.Elapsed.TotalMilliseconds:F1} ms ({records.HostCount} names)");

        var resolver = new DnsResolver(_forwarder, NullLogger.Instance) { Records = records };
        var response = new byte[512];
        var query = Query("peer1234.modular.internal", 1);
        watch.Restart();
        const int InProcess = 1_000_000;
        for (var i = 0; i < InProcess; i++)
        {
            resolver.Answer(query, response, out _, out _);
        }

        output.WriteLine($"in-process: {InProcess / watch.Elapsed.TotalSeconds:N0} answers/s ({watch.Elapsed.TotalNanoseconds / InProcess:N0} ns each) with 10,000 peers in the zone");

        await using var server = DnsServer.Start(resolver, new IPEndPoint(IPAddress.Loopback, 0), NullLogger.Instance);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        client.Connect(server.LocalEndPoint);
        var buffer = new byte[512];
        const int Window = 32;
        const int Total = 100_000;
        watch.Restart();
        var received = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        for (var i = 0; i < Window; i++)
        {
            await client.SendAsync(query);
        }

        var sent = Window;
        while (received < Total && !timeout.IsCancellationRequested)
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(timeout.Token);
            wait.CancelAfter(TimeSpan.FromSeconds(1));
            try
            {
                await client.ReceiveAsync(buffer, SocketFlags.None, wait.Token);
                received++;
            }
            catch (OperationCanceledException) when (!timeout.IsCancellationRequested)
            {
                // A datagram lost on a busy loopback: refill the window.
            }

            if (sent < Total)
            {
                await client.SendAsync(query);
                sent++;
            }
        }

        output.WriteLine($"loopback UDP, one client, {Window} in flight: {received / watch.Elapsed.TotalSeconds:N0} answers/s ({received} of {sent})");
        Assert.True(received > 0);
    }
}
