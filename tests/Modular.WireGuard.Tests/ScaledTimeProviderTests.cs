using Microsoft.Extensions.Time.Testing;
using Modular.WireGuard.Device;
using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Tests;

/// <summary>The test-only fast clock modular-wg uses under MODULAR_WG_TEST_TIME_SCALE.</summary>
public class ScaledTimeProviderTests
{
    private static readonly DateTimeOffset Start = DateTimeOffset.Parse("2026-03-01T12:00:00Z", System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public void TimeAndTimestampsRunScaleTimesFaster()
    {
        var real = new FakeTimeProvider(Start);
        var clock = new ScaledTimeProvider(real, 20);
        var before = clock.GetTimestamp();

        real.Advance(TimeSpan.FromSeconds(6));

        Assert.Equal(Start + TimeSpan.FromSeconds(120), clock.GetUtcNow());
        Assert.Equal(TimeSpan.FromSeconds(120), clock.GetElapsedTime(before));
    }

    [Fact]
    public void TimersFireAfterTheScaledDownRealInterval()
    {
        var real = new FakeTimeProvider(Start);
        var clock = new ScaledTimeProvider(real, 20);
        var fired = 0;
        using var timer = clock.CreateTimer(_ => Interlocked.Increment(ref fired), null, TimeSpan.FromSeconds(120), Timeout.InfiniteTimeSpan);

        real.Advance(TimeSpan.FromSeconds(5.9));
        Assert.Equal(0, fired);
        real.Advance(TimeSpan.FromSeconds(0.1));
        Assert.Equal(1, fired);

        // Change scales too, periods included; infinite stays infinite.
        timer.Change(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(20));
        real.Advance(TimeSpan.FromSeconds(0.5));
        Assert.Equal(2, fired);
        real.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(3, fired);
        timer.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        real.Advance(TimeSpan.FromMinutes(10));
        Assert.Equal(3, fired);
    }

    [Fact]
    public void Tai64NTimestampsStayMonotonicAndRunAheadOfRealTime()
    {
        var real = new FakeTimeProvider(Start);
        var clock = new ScaledTimeProvider(real, 20);
        var previous = new byte[Tai64N.Size];
        Tai64N.Write(previous, clock.GetUtcNow());
        for (var i = 0; i < 50; i++)
        {
            // A rekey every 6 s of real time, as in the interop test.
            real.Advance(TimeSpan.FromSeconds(6));
            var next = new byte[Tai64N.Size];
            Tai64N.Write(next, clock.GetUtcNow());
            Assert.True(Tai64N.IsAfter(next, previous), $"timestamp {i} is after the previous one");
            previous = next;
        }

        var realStamp = new byte[Tai64N.Size];
        Tai64N.Write(realStamp, real.GetUtcNow());
        Assert.True(Tai64N.IsAfter(previous, realStamp), "the scaled clock is ahead of real time");
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0)]
    [InlineData(-3)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void RejectsScalesBelowOneOrNotFinite(double scale)
        => Assert.Throws<ArgumentOutOfRangeException>(() => new ScaledTimeProvider(TimeProvider.System, scale));
}
