using System.Runtime;
using Prometheus;

namespace Modular.Agent.Metrics;

/// <summary>
/// The daemon's own process and .NET runtime on the agent's endpoint: prometheus-net's standard <c>process_*</c> and
/// <c>dotnet_*</c> set (resident and virtual memory, open fds, threads, CPU, collections per generation) and, from
/// <see cref="GC.GetGCMemoryInfo()"/>, the managed heap after the last collection and the memory the GC holds
/// committed. A daemon that runs for months is watched for leaks: RSS alone cannot tell a growing managed heap (a
/// leak) from memory the runtime keeps for reuse; these two can. Unlabelled apart from the generation, so cheap.
/// </summary>
internal static class RuntimeMetrics
{
    /// <summary>Adds the runtime metrics to <paramref name="registry"/>; their values are read at each scrape.</summary>
    public static void Register(CollectorRegistry registry)
    {
        DotNetStats.Register(registry);
        var f = Prometheus.Metrics.WithCustomRegistry(registry);
        var heap = f.CreateGauge("dotnet_gc_heap_size_bytes", "Managed heap size after the last garbage collection.");
        var committed = f.CreateGauge("dotnet_gc_committed_bytes", "Memory the garbage collector holds committed (heap, free space it keeps, bookkeeping).");
        var server = f.CreateGauge("dotnet_gc_server", "1 when the process runs the server garbage collector, 0 for the workstation one.");
        server.Set(GCSettings.IsServerGC ? 1 : 0);
        registry.AddBeforeCollectCallback(() =>
        {
            var info = GC.GetGCMemoryInfo();
            heap.Set(info.HeapSizeBytes);
            committed.Set(info.TotalCommittedBytes);
        });
    }
}
