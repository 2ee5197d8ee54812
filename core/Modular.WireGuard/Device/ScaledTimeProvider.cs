namespace Modular.WireGuard.Device;

/// <summary>
/// TEST ONLY: a clock that runs <see cref="Scale"/> times faster than <paramref name="inner"/>,
/// so protocol timers (REKEY_AFTER_TIME is 120 s) fire within seconds in interop tests with real
/// peers. Wall-clock time (<see cref="GetUtcNow"/>) and timestamps advance Scale times faster
/// from the moment of construction, and timer due times and periods shrink by Scale. Time still
/// only moves forward, so TAI64N handshake timestamps stay monotonic; they run ahead of real time,
/// which peers accept (they only compare against the previous timestamp). Never use it in production:
/// sessions expire Scale times sooner and reported handshake times lie in the future.
/// </summary>
public sealed class ScaledTimeProvider : TimeProvider
{
    private readonly TimeProvider _inner;
    private readonly DateTimeOffset _startUtc;
    private readonly long _startTimestamp;

    /// <param name="inner">The real clock.</param>
    /// <param name="scale">How many times faster time runs; 1 or more.</param>
    public ScaledTimeProvider(TimeProvider inner, double scale)
    {
        ArgumentNullException.ThrowIfNull(inner);
        if (!(scale >= 1) || double.IsInfinity(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, "The time scale must be a finite number of at least 1.");
        }

        _inner = inner;
        Scale = scale;
        _startUtc = inner.GetUtcNow();
        _startTimestamp = inner.GetTimestamp();
    }

    /// <summary>How many times faster than the inner clock this one runs.</summary>
    public double Scale { get; }

    public override TimeZoneInfo LocalTimeZone => _inner.LocalTimeZone;

    public override long TimestampFrequency => _inner.TimestampFrequency;

    public override long GetTimestamp() => _startTimestamp + (long)((_inner.GetTimestamp() - _startTimestamp) * Scale);

    public override DateTimeOffset GetUtcNow()
    {
        // Derived from the monotonic timestamp, so a wall-clock step on the host cannot send it backwards.
        var elapsedTicks = (GetTimestamp() - _startTimestamp) * (double)TimeSpan.TicksPerSecond / TimestampFrequency;
        return _startUtc.AddTicks((long)elapsedTicks);
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        => new ScaledTimer(_inner.CreateTimer(callback, state, Shrink(dueTime), Shrink(period)), this);

    /// <summary>The real interval that passes while <paramref name="interval"/> passes on this clock.</summary>
    private TimeSpan Shrink(TimeSpan interval)
        => interval == Timeout.InfiniteTimeSpan || interval <= TimeSpan.Zero ? interval : TimeSpan.FromTicks(Math.Max(1, (long)(interval.Ticks / Scale)));

    private sealed class ScaledTimer(ITimer inner, ScaledTimeProvider clock) : ITimer
    {
        public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(clock.Shrink(dueTime), clock.Shrink(period));

        public void Dispose() => inner.Dispose();

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
