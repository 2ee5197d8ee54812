using System.Runtime;

namespace Modular.Agent.Daemon;

/// <summary>The full collections a <see cref="HeapTrimmer"/> watches and asks for (the runtime's GC, or a test double).</summary>
internal interface IFullCollector
{
    /// <summary>Full (generation 2) collections so far, of any cause.</summary>
    int FullCollections { get; }

    /// <summary>One blocking, compacting full collection that hands the memory it frees back to the OS.</summary>
    void CollectAndRelease();
}

/// <summary>
/// Keeps a long-running daemon's managed heap at its live size. The daemon runs the workstation GC, non-concurrent,
/// on a small heap (~30 MB, most of it the WireGuard device's pinned batch buffers), so generation 2 is collected only
/// when its budget fills: in the fault soak none ran for many minutes, and objects that lived a little too long
/// (per-connection state of peers that woke and went idle again) piled up as gen2 garbage, ~200 kB a minute, with the
/// committed memory and RSS following (bench/README.md, "Fault soak"). When no full collection has happened for
/// <see cref="Interval"/>, this asks for one that compacts and releases: a pause of a few milliseconds every five
/// minutes at most, none while the runtime collects gen2 by itself.
/// </summary>
internal sealed class HeapTrimmer(IFullCollector collector, TimeProvider time)
{
    /// <summary>How long the heap may go without a full collection.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(5);

    private int _seen = collector.FullCollections;
    private int _trims;

    /// <summary>Full collections this trimmer asked for.</summary>
    public int Trims => Volatile.Read(ref _trims);

    /// <summary>Checks every <see cref="Interval"/> until <paramref name="cancellationToken"/> is cancelled (then returns without throwing).</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await Task.Delay(Interval, time, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            Check();
        }
    }

    /// <summary>
    /// One check, an interval after the last: collects unless a full collection happened since the previous check.
    /// True when it collected.
    /// </summary>
    public bool Check()
    {
        var now = collector.FullCollections;
        var collect = now == _seen;
        if (collect)
        {
            collector.CollectAndRelease();
            Interlocked.Increment(ref _trims);
            now = collector.FullCollections;
        }

        _seen = now;
        return collect;
    }
}

/// <summary>The runtime's garbage collector.</summary>
internal sealed class RuntimeFullCollector : IFullCollector
{
    public int FullCollections => GC.CollectionCount(2);

    public void CollectAndRelease()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        // Aggressive: blocking and compacting, and the freed regions are decommitted at once rather than kept for reuse.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }
}
