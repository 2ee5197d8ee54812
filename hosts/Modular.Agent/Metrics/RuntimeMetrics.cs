using System.Runtime;
using Prometheus;

namespace Modular.Agent.Metrics;

/// <summary>
/// The daemon's own process and .NET runtime on the agent's endpoint: prometheus-net's standard <c>process_*</c> and
/// <c>dotnet_*</c> set (resident and virtual memory, open fds, threads, CPU, collections per generation) and, from
/// <see cref="GC.GetGCMemoryInfo()"/>, the managed heap after the last collection, what survived the last full one,
/// its fragmentation and the memory the GC holds committed. A daemon that runs for months is watched for leaks: RSS
/// alone cannot tell live objects that keep growing (a leak) from garbage not yet collected or memory the runtime keeps
/// for reuse; these can. Unlabelled apart from the generation, so cheap.
/// </summary>
internal static class RuntimeMetrics
{
    /// <summary>Adds the runtime metrics to <paramref name="registry"/>; their values are read at each scrape.</summary>
    public static void Register(CollectorRegistry registry)
    {
        DotNetStats.Register(registry);
        var f = Prometheus.Metrics.WithCustomRegistry(registry);
        var heap = f.CreateGauge("dotnet_gc_heap_size_bytes", "Managed heap size after the last garbage collection.");
        var live = f.CreateGauge("dotnet_gc_live_bytes", "Bytes that survived the last full blocking collection: a leak is this rising from one full collection to the next.");
        var fragmented = f.CreateGauge("dotnet_gc_fragmented_bytes", "Free space inside the heap's generations at the last collection.");
        var committed = f.CreateGauge("dotnet_gc_committed_bytes", "Memory the garbage collector holds committed (heap, free space it keeps, bookkeeping).");
        var server = f.CreateGauge("dotnet_gc_server", "1 when the process runs the server garbage collector, 0 for the workstation one.");
        server.Set(GCSettings.IsServerGC ? 1 : 0);
        registry.AddBeforeCollectCallback(() =>
        {
            var info = GC.GetGCMemoryInfo();
            heap.Set(info.HeapSizeBytes);
            fragmented.Set(info.FragmentedBytes);
            if (GC.GetGCMemoryInfo(GCKind.FullBlocking) is { Index: > 0 } full)
            {
                live.Set(full.PromotedBytes);
            }
            committed.Set(info.TotalCommittedBytes);
        });
    }
}
