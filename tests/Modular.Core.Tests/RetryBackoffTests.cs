using Modular.Core;

namespace Modular.Core.Tests;

public sealed class RetryBackoffTests
{
    [Fact]
    public void Delays_double_up_to_the_cap_and_a_reset_starts_over()
    {
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1), random: () => 0.5); // 0.5: no jitter
        var waits = Enumerable.Range(0, 7).Select(_ => backoff.Next(TimeSpan.FromSeconds(30))).ToList();
        Assert.Equal([1, 2, 4, 8, 16, 30, 30], waits.Select(w => w.TotalSeconds));

        backoff.Reset();
        Assert.Equal(TimeSpan.FromSeconds(1), backoff.Next(TimeSpan.FromSeconds(30)));

        // A smaller cap (a loop whose reason changed) takes effect at the next doubling.
        for (var i = 0; i < 5; i++)
        {
            backoff.Next(TimeSpan.FromSeconds(30));
        }

        backoff.Next(TimeSpan.FromSeconds(10));
        Assert.Equal(TimeSpan.FromSeconds(10), backoff.Current);
    }

    [Fact]
    public void Started_without_root_every_retry_loop_backs_off_a_session_that_breaks_at_once_is_no_success()
    {
        // Issue 13: a login followed at once by a failure reset the delay every round: one attempt a second for ever.
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1), random: () => 0.5);
        var waits = new List<double>();
        for (var i = 0; i < 6; i++)
        {
            backoff.ResetIfLasted(TimeSpan.FromMilliseconds(200), healthy: TimeSpan.FromSeconds(30));
            waits.Add(backoff.Next(TimeSpan.FromSeconds(30)).TotalSeconds);
        }

        Assert.Equal([1, 2, 4, 8, 16, 30], waits);

        // A session that held is a success: the next failure starts over.
        backoff.ResetIfLasted(TimeSpan.FromSeconds(30), healthy: TimeSpan.FromSeconds(30));
        Assert.Equal(TimeSpan.FromSeconds(1), backoff.Next(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void Jitter_spreads_a_delay_by_a_quarter_either_way()
    {
        Assert.Equal(TimeSpan.FromSeconds(7.5), RetryBackoff.Jitter(TimeSpan.FromSeconds(10), () => 0.0));
        Assert.Equal(TimeSpan.FromSeconds(12.5), RetryBackoff.Jitter(TimeSpan.FromSeconds(10), () => 1.0));
        for (var i = 0; i < 1000; i++)
        {
            Assert.InRange(RetryBackoff.Jitter(TimeSpan.FromSeconds(10)), TimeSpan.FromSeconds(7.5), TimeSpan.FromSeconds(12.5));
        }
    }

    [Fact]
    public void A_peer_retries_within_the_relay_budget_however_long_the_outage_was()
    {
        // Issue 17: a relayed tunnel carries traffic again within 30 s of the relay's return. The worst case: the longest
        // jittered wait began just before the relay came back, then one attempt (offer, checks, pairing at the relay).
        var backoff = new RetryBackoff(TimeSpan.FromSeconds(1), random: () => 1.0); // the longest jitter every time
        var waits = Enumerable.Range(0, 100).Select(_ => backoff.Next(Modular.Core.Peers.PeerConnOptions.MaxRetryDelay)).ToList();
        Assert.Equal([1.25, 2.5, 5, 10, 12.5], waits.Take(5).Select(w => w.TotalSeconds)); // exponential, then capped
        Assert.All(waits, wait => Assert.True(wait <= TimeSpan.FromSeconds(12.5), $"waited {wait}"));

        var options = new Modular.Core.Peers.PeerConnOptions();
        var attempt = options.Offers + options.Checks + Modular.Core.Peers.PeerConnOptions.PairingWait;
        Assert.True(waits.Max() + attempt <= TimeSpan.FromSeconds(30), $"longest wait {waits.Max()} + attempt {attempt} fits in 30 s");
    }
}
