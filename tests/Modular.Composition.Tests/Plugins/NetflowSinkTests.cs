using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Flows;
using Modular.Plugins.Netflow;

namespace Modular.Composition.Tests.Plugins;

/// <summary>The netflow plugin's store and shipping loop, against a fake uploader the test answers and a fake clock.</summary>
public sealed class NetflowSinkTests
{
    private static readonly ShippingOptions Pacing = new(
        FlushDelay: TimeSpan.FromSeconds(1), BackoffBase: TimeSpan.FromSeconds(1), BackoffMax: TimeSpan.FromSeconds(8), Jitter: () => 1.0);

    internal static FlowEvent Event(int n, FlowEventType type = FlowEventType.End) => new(
        Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UnixEpoch.AddSeconds(n), type, FlowDirection.Egress, 17,
        IPAddress.Parse("100.64.0.1"), (ushort)(10000 + n), IPAddress.Parse("100.64.0.2"), 53, 0, 0, 1, 60, 1, 60, null, null, null);

    private static (NetflowSink Sink, FakeUploader Uploader, CountingTime Time) Start(
        int capacity = 100, int maxBatch = 100, bool withUploader = true, IEnumerable<FlowEvent>? before = null)
    {
        var time = new CountingTime();
        var uploader = new FakeUploader(maxBatch);
        var sink = new NetflowSink(capacity, withUploader ? uploader : null, null, Pacing, time, NullLogger.Instance);
        foreach (var flowEvent in before ?? [])
        {
            // Emitted before the loop runs, so the test knows what its first look at the store sees.
            sink.Emit(flowEvent);
        }

        sink.Start();
        return (sink, uploader, time);
    }

    [Fact]
    public async Task Acknowledged_events_are_deleted_and_counted()
    {
        var (sink, uploader, time) = Start();
        await using var _ = sink;
        var events = Enumerable.Range(0, 3).Select(n => Event(n)).ToList();
        events.ForEach(sink.Emit);

        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1)); // the batch gathers for FlushDelay
        var call = await uploader.NextAsync();
        Assert.Equal(events, call.Batch);
        call.Reply(FlowUploadResult.Success([.. events.Select(e => e.Id)]));

        await Bounded.UntilAsync(() => sink.Pending == 0, "the acknowledged events to be deleted");
        Assert.Equal(new FlowSinkCounters(Recorded: 3, Sent: 3, Acknowledged: 3, Dropped: 0, Exported: 0, LastError: null), sink.Counters);
    }

    [Fact]
    public async Task Unacknowledged_events_stay_and_are_retried_with_exponential_backoff()
    {
        var (sink, uploader, time) = Start();
        await using var _ = sink;
        var events = new[] { Event(1), Event(2) };
        Array.ForEach(events, sink.Emit);
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));

        (await uploader.NextAsync()).Reply(FlowUploadResult.Failed("management unreachable"));
        await time.WaitForTimersAsync(2); // the loop waits out its backoff
        Assert.Equal(2, sink.Pending);
        Assert.Contains("management unreachable", sink.Counters.LastError, StringComparison.Ordinal);

        time.Advance(TimeSpan.FromSeconds(1) - TimeSpan.FromTicks(1));
        Assert.False(uploader.HasCall, "retried before the first backoff (1 s) was over");
        time.Advance(TimeSpan.FromTicks(1));
        var second = await uploader.NextAsync();
        Assert.Equal(events, second.Batch);
        second.Reply(FlowUploadResult.Failed("management unreachable"));

        await time.WaitForTimersAsync(3);
        time.Advance(TimeSpan.FromSeconds(2) - TimeSpan.FromTicks(1));
        Assert.False(uploader.HasCall, "retried before the second backoff (2 s, doubled) was over");
        time.Advance(TimeSpan.FromTicks(1));
        var third = await uploader.NextAsync();
        Assert.Equal(events, third.Batch);
        third.Reply(FlowUploadResult.Success([.. events.Select(e => e.Id)]));

        await Bounded.UntilAsync(() => sink.Pending == 0, "the events to be deleted once acknowledged");
        Assert.Equal(new FlowSinkCounters(2, Sent: 6, Acknowledged: 2, Dropped: 0, Exported: 0, LastError: null), sink.Counters);
    }

    [Fact]
    public async Task A_partial_acknowledgement_deletes_only_the_acknowledged_events()
    {
        var (sink, uploader, time) = Start();
        await using var _ = sink;
        var events = Enumerable.Range(0, 3).Select(n => Event(n)).ToArray();
        Array.ForEach(events, sink.Emit);
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));

        (await uploader.NextAsync()).Reply(FlowUploadResult.Success([events[0].Id, events[2].Id]));
        await time.WaitForTimersAsync(2);
        Assert.Equal(1, sink.Pending);
        Assert.Equal(2, sink.Counters.Acknowledged);
        Assert.Contains("acknowledged 2 of 3", sink.Counters.LastError, StringComparison.Ordinal);

        time.Advance(TimeSpan.FromSeconds(1));
        var retry = await uploader.NextAsync();
        Assert.Equal([events[1]], retry.Batch);
        retry.Reply(FlowUploadResult.Success([events[1].Id]));
        await Bounded.UntilAsync(() => sink.Pending == 0, "the last event to be deleted");
        Assert.Null(sink.Counters.LastError);
    }

    [Fact]
    public async Task An_uploader_that_throws_is_a_transient_failure_and_the_events_stay()
    {
        var (sink, uploader, time) = Start();
        await using var _ = sink;
        var flowEvent = Event(1);
        sink.Emit(flowEvent);
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));

        (await uploader.NextAsync()).Throw(new OperationCanceledException()); // the host gave up (a timeout), not our stop
        await time.WaitForTimersAsync(2);
        Assert.Contains("cancelled before the server answered", sink.Counters.LastError, StringComparison.Ordinal);
        time.Advance(TimeSpan.FromSeconds(1));

        (await uploader.NextAsync()).Throw(new InvalidOperationException("stream broken"));
        await time.WaitForTimersAsync(3);
        Assert.Contains("stream broken", sink.Counters.LastError, StringComparison.Ordinal);
        Assert.Equal(1, sink.Pending);
        time.Advance(TimeSpan.FromSeconds(2));

        var third = await uploader.NextAsync();
        Assert.Equal([flowEvent], third.Batch);
        third.Reply(FlowUploadResult.Success([flowEvent.Id]));
        await Bounded.UntilAsync(() => sink.Pending == 0, "the event to be deleted");
        Assert.Equal(new FlowSinkCounters(1, 3, 1, 0, 0, null), sink.Counters);
    }

    [Fact]
    public async Task A_refused_batch_is_dropped_and_counted()
    {
        var (sink, uploader, time) = Start();
        await using var _ = sink;
        sink.Emit(Event(1));
        sink.Emit(Event(2));
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));

        (await uploader.NextAsync()).Reply(FlowUploadResult.Refused("batch too large"));

        await Bounded.UntilAsync(() => sink.Pending == 0, "the refused events to be dropped");
        var counters = sink.Counters;
        Assert.Equal((2L, 2L, 0L, 2L), (counters.Recorded, counters.Sent, counters.Acknowledged, counters.Dropped));
        Assert.Contains("refused 2", counters.LastError, StringComparison.Ordinal);
        Assert.Contains("batch too large", counters.LastError, StringComparison.Ordinal);

        // Refused is settled, not retried: the next events go out after the usual gathering delay, not a backoff.
        var next = Event(3);
        sink.Emit(next);
        await time.AdvanceWhenWaitingAsync(2, TimeSpan.FromSeconds(1));
        Assert.Equal([next], (await uploader.NextAsync()).Batch);
    }

    [Fact]
    public async Task A_full_store_drops_the_oldest_event_and_counts_it()
    {
        var events = Enumerable.Range(0, 5).Select(n => Event(n)).ToList();
        var (sink, uploader, _) = Start(capacity: 3, before: events);
        await using var disposeSink = sink;

        Assert.Equal(3, sink.Pending);
        Assert.Equal(5, sink.Counters.Recorded);
        Assert.Equal(2, sink.Counters.Dropped);

        // The capacity caps the batch too, so the loop ships at once: the three newest, oldest first.
        var call = await uploader.NextAsync();
        Assert.Equal(events[2..], call.Batch);
        call.Reply(FlowUploadResult.Success([.. events[2..].Select(e => e.Id)]));
        await Bounded.UntilAsync(() => sink.Pending == 0, "the kept events to be deleted");
        Assert.Equal(new FlowSinkCounters(5, 3, 3, 2, 0, null), sink.Counters);
    }

    [Fact]
    public async Task Batches_carry_at_most_the_uploaders_limit()
    {
        var events = Enumerable.Range(0, 5).Select(n => Event(n)).ToList();
        var (sink, uploader, time) = Start(maxBatch: 2, before: events);
        await using var _ = sink;

        // A full batch is waiting: no gathering delay.
        var first = await uploader.NextAsync();
        Assert.Equal(events[..2], first.Batch);
        first.Reply(FlowUploadResult.Success([.. first.Batch.Select(e => e.Id)]));
        var second = await uploader.NextAsync();
        Assert.Equal(events[2..4], second.Batch);
        second.Reply(FlowUploadResult.Success([.. second.Batch.Select(e => e.Id)]));

        // One left, less than a batch: it waits for more for FlushDelay.
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));
        var third = await uploader.NextAsync();
        Assert.Equal([events[4]], third.Batch);
        third.Reply(FlowUploadResult.Success([events[4].Id]));
        await Bounded.UntilAsync(() => sink.Pending == 0, "every event to be deleted");
        Assert.Equal(5, sink.Counters.Acknowledged);
    }

    [Fact]
    public async Task Events_unacknowledged_at_dispose_are_counted_as_dropped()
    {
        var (sink, uploader, time) = Start();
        sink.Emit(Event(1));
        sink.Emit(Event(2));
        await time.AdvanceWhenWaitingAsync(1, TimeSpan.FromSeconds(1));
        var inFlight = await uploader.NextAsync(); // never answered

        await sink.DisposeAsync();

        Assert.True(inFlight.Cancelled, "the upload in flight was not cancelled at dispose");
        Assert.Equal(0, sink.Pending);
        Assert.Equal(new FlowSinkCounters(2, 2, 0, 2, 0, null), sink.Counters);
        sink.Emit(Event(3)); // too late: counted, not kept
        Assert.Equal(3, sink.Counters.Dropped);
        Assert.Equal(2, sink.Counters.Recorded);
    }

    [Fact]
    public async Task Without_an_uploader_the_store_keeps_the_newest_events()
    {
        var (sink, uploader, _) = Start(capacity: 2, withUploader: false);
        Array.ForEach([Event(1), Event(2), Event(3)], sink.Emit);
        Assert.False(sink.Ships);
        Assert.Equal(2, sink.Pending);
        Assert.Equal(new FlowSinkCounters(3, 0, 0, 1, 0, null), sink.Counters);
        Assert.False(uploader.HasCall);

        await sink.DisposeAsync();
        Assert.Equal(3, sink.Counters.Dropped);
    }

    [Fact]
    public void Backoff_doubles_up_to_the_cap_and_jitter_shortens_it_by_at_most_half()
    {
        Assert.Equal(
            [1, 2, 4, 8, 8, 8],
            new[] { 1, 2, 3, 4, 5, 40 }.Select(failures => Pacing.Backoff(failures).TotalSeconds));
        var halved = Pacing with { Jitter = () => 0.0 };
        Assert.Equal(TimeSpan.FromSeconds(2), halved.Backoff(3));
        var defaults = ShippingOptions.Default;
        for (var i = 0; i < 100; i++)
        {
            var wait = defaults.Backoff(2);
            Assert.InRange(wait, defaults.BackoffBase, defaults.BackoffBase * 2);
        }
    }

    [Fact]
    public async Task The_factory_reads_capacity_and_ships_through_the_hosts_uploader()
    {
        var factory = new NetflowSinkFactory();
        Assert.DoesNotContain("Placeholder", factory.Description, StringComparison.Ordinal);
        await using var withDefaults = (NetflowSink)await factory.CreateAsync(new FakePluginContext(), CancellationToken.None);
        Assert.Equal(NetflowSinkFactory.DefaultCapacity, withDefaults.Capacity);
        Assert.False(withDefaults.Ships);
        Assert.False(withDefaults.Exports);

        var uploader = new FakeUploader(10);
        await using var shipping = (NetflowSink)await factory.CreateAsync(
            new FakePluginContext(new Dictionary<string, object?> { ["capacity"] = 7L }, flowUploader: uploader), CancellationToken.None);
        Assert.Equal(7, shipping.Capacity);
        Assert.True(shipping.Ships);
    }

    [Theory]
    [InlineData("capacity", "big", "capacity must be an integer between 1 and 10000000")]
    [InlineData("capacity", 0L, "capacity must be an integer between 1 and 10000000")]
    [InlineData("ipfix_collector", "collector", "ipfix_collector must be \"host:port\"")]
    [InlineData("ipfix_collector", "c.example:70000", "ipfix_collector must be \"host:port\"")]
    [InlineData("template_refresh", "10 minutes", "template_refresh must be a duration")]
    [InlineData("template_refresh", "0s", "template_refresh must be a duration")]
    [InlineData("capacty", 5L, "unknown setting \"capacty\"")]
    public async Task Bad_settings_are_refused_naming_the_key(string key, object value, string message)
    {
        var ex = await Assert.ThrowsAsync<ArgumentException>(async () =>
            await new NetflowSinkFactory().CreateAsync(new FakePluginContext(new Dictionary<string, object?> { [key] = value }), CancellationToken.None));
        Assert.Contains(message, ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("90s", 90)]
    [InlineData("10m", 600)]
    [InlineData("1h30m", 5400)]
    public void Template_refresh_takes_a_duration(string text, int seconds)
        => Assert.Equal(TimeSpan.FromSeconds(seconds), NetflowSettings.Parse(new Dictionary<string, object?> { ["template_refresh"] = text }).TemplateRefresh);

    /// <summary>The host's uploader as the test plays it: each call waits for the test's reply (or its cancellation).</summary>
    internal sealed class FakeUploader(int maxBatchEvents) : IFlowUploader
    {
        private readonly Channel<Call> _calls = Channel.CreateUnbounded<Call>();

        public int MaxBatchEvents => maxBatchEvents;

        /// <summary>A call arrived that the test has not taken yet.</summary>
        public bool HasCall => _calls.Reader.TryPeek(out _);

        public async Task<Call> NextAsync() => await _calls.Reader.ReadAsync(Bounded.Wait);

        public async ValueTask<FlowUploadResult> UploadAsync(ReadOnlyMemory<FlowEvent> batch, CancellationToken cancellationToken)
        {
            if (batch.Length > maxBatchEvents)
            {
                throw new ArgumentException("batch too large", nameof(batch));
            }

            var call = new Call(batch.ToArray());
            await using var registration = cancellationToken.Register(() => call.Cancel());
            _calls.Writer.TryWrite(call);
            return await call.Result;
        }

        internal sealed class Call(FlowEvent[] batch)
        {
            private readonly TaskCompletionSource<FlowUploadResult> _reply = new(TaskCreationOptions.RunContinuationsAsynchronously);

            public FlowEvent[] Batch => batch;

            public bool Cancelled => _reply.Task.IsCanceled;

            public Task<FlowUploadResult> Result => _reply.Task;

            public void Reply(FlowUploadResult result) => _reply.SetResult(result);

            public void Cancel() => _reply.TrySetCanceled();

            public void Throw(Exception exception) => _reply.SetException(exception);
        }
    }
}

/// <summary>A fake clock that counts the timers created on it, so a test advances time only once the loop is waiting on it.</summary>
internal sealed class CountingTime : FakeTimeProvider
{
    private int _timers;

    public CountingTime()
        : base(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero))
    {
    }

    public int Timers => Volatile.Read(ref _timers);

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = base.CreateTimer(callback, state, dueTime, period);
        Interlocked.Increment(ref _timers);
        return timer;
    }

    /// <summary>Waits until <paramref name="count"/> timers were created in all.</summary>
    public Task WaitForTimersAsync(int count) => Bounded.UntilAsync(() => Timers >= count, $"timer number {count} to be created");

    /// <summary>Waits for timer number <paramref name="count"/>, then moves the clock by <paramref name="by"/>.</summary>
    public async Task AdvanceWhenWaitingAsync(int count, TimeSpan by)
    {
        await WaitForTimersAsync(count);
        Advance(by);
    }
}
