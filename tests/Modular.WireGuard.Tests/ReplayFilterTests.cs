using Modular.WireGuard.Noise;

namespace Modular.WireGuard.Tests;

public sealed class ReplayFilterTests
{
    [Fact]
    public void In_order_counters_are_accepted_once()
    {
        var filter = new ReplayFilter();
        for (ulong i = 0; i < 5000; i++)
        {
            Assert.True(filter.Validate(i));
        }

        for (ulong i = 4000; i < 5000; i++)
        {
            Assert.False(filter.Validate(i));
        }
    }

    [Fact]
    public void Reordering_within_the_window_is_accepted_and_duplicates_are_not()
    {
        var filter = new ReplayFilter();
        Assert.True(filter.Validate(3000));
        Assert.True(filter.Validate(3000 - ReplayFilter.WindowSize));
        Assert.True(filter.Validate(2999));
        Assert.True(filter.Validate(1500));
        Assert.False(filter.Validate(1500));
        Assert.False(filter.Validate(3000));
        Assert.False(filter.Validate(2999));
    }

    [Fact]
    public void Counters_older_than_the_window_are_rejected()
    {
        var filter = new ReplayFilter();
        Assert.True(filter.Validate(10_000));
        Assert.False(filter.Validate(10_000 - ReplayFilter.WindowSize - 1));
        Assert.False(filter.Validate(0));
        Assert.True(filter.Validate(10_000 - ReplayFilter.WindowSize));
    }

    [Fact]
    public void Zero_is_accepted_once_on_a_fresh_filter()
    {
        var filter = new ReplayFilter();
        Assert.True(filter.Validate(0));
        Assert.False(filter.Validate(0));
        Assert.True(filter.Validate(1));
    }

    [Fact]
    public void A_jump_beyond_the_window_clears_stale_bits()
    {
        var filter = new ReplayFilter();
        for (ulong i = 0; i < 64; i++)
        {
            Assert.True(filter.Validate(i));
        }

        // Jump far ahead: the ring slots that held 0..63 now stand for new counters.
        Assert.True(filter.Validate(1_000_000));
        Assert.True(filter.Validate(1_000_000 - 64 * 31)); // same ring block as 0..63 modulo the ring
        Assert.True(filter.Validate(999_999));
        Assert.False(filter.Validate(63));

        // A jump of exactly one window, then one block at a time.
        var second = new ReplayFilter();
        Assert.True(second.Validate(0));
        Assert.True(second.Validate(ReplayFilter.WindowSize));
        Assert.False(second.Validate(0));
        Assert.True(second.Validate(1));
        Assert.True(second.Validate(ReplayFilter.WindowSize + 64));
        Assert.False(second.Validate(1)); // now too old
    }

    [Fact]
    public void Counter_limits_are_enforced()
    {
        var filter = new ReplayFilter();
        Assert.False(filter.Validate(ReplayFilter.RejectAfterMessages));
        Assert.False(filter.Validate(ulong.MaxValue));
        Assert.True(filter.Validate(ReplayFilter.RejectAfterMessages - 1));
        Assert.False(filter.Validate(ReplayFilter.RejectAfterMessages - 1));
        Assert.True(filter.Validate(ReplayFilter.RejectAfterMessages - 2));
        Assert.Equal(ulong.MaxValue - 8192, ReplayFilter.RejectAfterMessages);
    }

    [Fact]
    public void Matches_a_simple_model_on_random_sequences()
    {
        var random = new Random(1234);
        var filter = new ReplayFilter();
        var seen = new HashSet<ulong>();
        ulong highest = 0;
        var any = false;
        for (var i = 0; i < 200_000; i++)
        {
            var counter = (ulong)Math.Max(0, (long)highest + random.Next(-2100, 60));
            var expected = !seen.Contains(counter) && (!any || counter > highest || highest - counter <= ReplayFilter.WindowSize);
            Assert.Equal(expected, filter.Validate(counter));
            if (expected)
            {
                seen.Add(counter);
                if (!any || counter > highest)
                {
                    highest = counter;
                }

                any = true;
            }
        }
    }
}
