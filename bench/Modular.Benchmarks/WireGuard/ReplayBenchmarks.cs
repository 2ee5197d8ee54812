using BenchmarkDotNet.Attributes;
using Modular.WireGuard.Noise;

namespace Modular.Benchmarks.WireGuard;

/// <summary>The replay window check per received packet.</summary>
public class ReplayBenchmarks
{
    private readonly ReplayFilter _filter = new();
    private ulong _counter;

    [Benchmark]
    public bool InOrder() => _filter.Validate(_counter++);

    [Benchmark]
    public bool SlightlyReordered()
    {
        var counter = _counter++;
        return _filter.Validate((counter & 1) == 0 ? counter + 1 : counter - 1);
    }
}
