using System.Diagnostics;
using System.Globalization;
using Modular.Abstractions.Flows;
using Modular.Control.Crypto;
using Xunit.Abstractions;

namespace Modular.Server.Tests;

/// <summary>
/// Flow API throughput on loopback: the agent's uploader (<see cref="Core.Engine.ManagementFlowUploader"/>, what the
/// netflow plugin ships through: sealed per peer, one gRPC stream, acknowledgements) sends batches of fresh events
/// back to back to an in-process server storing them in SQLite (the unique (peer, event ID) insert), with Redis off
/// and on (a real redis-server). Reports acknowledged events per second. A measurement, not a test: it runs only with
/// MODULAR_BENCH=1 and asserts only that every event was acknowledged and stored.
/// </summary>
public sealed class FlowUploadBenchmark(ITestOutputHelper output)
{
    private const int BatchSize = 500;

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Flow_api_events_per_second_with_acknowledgements(bool redis)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1 to run");
        var seconds = int.TryParse(Environment.GetEnvironmentVariable("MODULAR_BENCH_SECONDS"), out var s) ? s : 5;
        using var cache = redis ? await RedisProcess.StartAsync() : null;
        await using var server = await TestServer.StartAsync(tweak: c => cache is null ? c : c with { RedisUrl = cache.Url });
        using var key = X25519KeyPair.Generate();
        var serverKey = await FlowUploaderTests.RegisterAsync(server, key);
        await using var uploader = FlowUploaderTests.Uploader(server, key, () => new Core.Engine.FlowTarget(server.Address, serverKey));

        // Warm-up (JIT, the stream, the SQLite statement), not counted.
        Assert.Equal(BatchSize, (await uploader.UploadAsync(Batch(), CancellationToken.None)).Acknowledged.Count);

        long acknowledged = 0;
        var batches = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(seconds))
        {
            var result = await uploader.UploadAsync(Batch(), CancellationToken.None);
            Assert.Null(result.Error);
            acknowledged += result.Acknowledged.Count;
            batches++;
        }

        clock.Stop();
        Assert.Equal((long)batches * BatchSize, acknowledged);
        Assert.Equal(acknowledged + BatchSize, await server.Store.CountFlowEventsAsync(CancellationToken.None));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Flow API, Redis {(redis ? "on" : "off")}: {acknowledged} events in {batches} batches of {BatchSize} in {clock.Elapsed.TotalSeconds:F1} s = {acknowledged / clock.Elapsed.TotalSeconds:F0} events/s acknowledged ({clock.Elapsed.TotalMilliseconds / batches:F1} ms per batch)"));
    }

    private static FlowEvent[] Batch()
    {
        var now = DateTimeOffset.UtcNow;
        return [.. Enumerable.Range(0, BatchSize).Select(i => FlowSamples.Tcp(now, i))];
    }
}
