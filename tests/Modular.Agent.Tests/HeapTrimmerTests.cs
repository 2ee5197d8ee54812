using Microsoft.Extensions.Time.Testing;
using Modular.Agent.Daemon;

namespace Modular.Agent.Tests;

public sealed class HeapTrimmerTests
{
    private static readonly DateTimeOffset Start = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void A_check_collects_unless_the_runtime_collected_gen2_since_the_last_check()
    {
        var gc = new CountingCollector();
        var trimmer = new HeapTrimmer(gc, new FakeTimeProvider(Start));
        Assert.True(trimmer.Check()); // nothing since start: collect
        Assert.True(trimmer.Check()); // only its own collection since: collect again

        gc.Collections++; // a natural full collection
        Assert.False(trimmer.Check());
        Assert.True(trimmer.Check());
        Assert.Equal(3, gc.Requested);
        Assert.Equal(3, trimmer.Trims);
    }

    [Fact]
    public async Task It_checks_once_an_interval_and_returns_when_cancelled()
    {
        var time = new FakeTimeProvider(Start);
        var gc = new CountingCollector(time);
        using var stop = new CancellationTokenSource();
        var trimmer = new HeapTrimmer(gc, time);
        var run = trimmer.RunAsync(stop.Token); // its first delay is registered before RunAsync returns

        time.Advance(HeapTrimmer.Interval - TimeSpan.FromSeconds(1));
        Assert.Equal(0, gc.Requested);
        time.Advance(TimeSpan.FromSeconds(1));
        await gc.FirstRequest.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(Start + HeapTrimmer.Interval, gc.FirstRequestAt);

        await stop.CancelAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10)); // returns, does not throw
        Assert.Equal(1, trimmer.Trims);
    }

    [Fact]
    public void The_runtime_collector_runs_a_compacting_full_collection()
    {
        var collector = new RuntimeFullCollector();
        var before = collector.FullCollections;
        var lastFull = GC.GetGCMemoryInfo(GCKind.FullBlocking).Index;
        collector.CollectAndRelease();
        Assert.True(collector.FullCollections > before);
        var info = GC.GetGCMemoryInfo(GCKind.FullBlocking);
        Assert.True(info.Index > lastFull);
        Assert.True(info.Compacted);
    }

    private sealed class CountingCollector(TimeProvider? clock = null) : IFullCollector
    {
        private readonly TaskCompletionSource _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _requested;
        private DateTimeOffset _firstAt;

        public int Collections { get; set; }

        public int FullCollections => Collections;

        public int Requested => Volatile.Read(ref _requested);

        public Task FirstRequest => _first.Task;

        public DateTimeOffset FirstRequestAt => _firstAt;

        public void CollectAndRelease()
        {
            Collections++;
            if (Interlocked.Increment(ref _requested) == 1)
            {
                _firstAt = clock?.GetUtcNow() ?? default;
                _first.TrySetResult();
            }
        }
    }
}
