using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Modular.Core.Engine;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>A peer management refuses (removed from the account): said once an hour, retried with growing waits.</summary>
public sealed class RefusedPeerBackoffTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-12-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private readonly ListLogger _logger = new();

    private int ErrorCount => _logger.Entries.Count(e => e.Level >= LogLevel.Error);

    [Fact]
    public void A_removed_peer_is_reported_once_then_at_most_hourly_and_waits_grow_to_an_hour()
    {
        var backoff = new RefusedPeerBackoff(_logger, _time, random: () => 0.5); // no jitter
        var start = _time.GetUtcNow();
        var waits = new List<TimeSpan>();
        for (var attempt = 0; attempt < 12; attempt++)
        {
            var wait = backoff.OnRefused(StatusCode.NotFound, "this peer was removed from the network");
            waits.Add(wait);
            if (_time.GetUtcNow() - start < TimeSpan.FromHours(1))
            {
                Assert.Equal(1, ErrorCount); // said once in the first hour, however many attempts
            }

            _time.Advance(wait);
        }

        Assert.Equal(TimeSpan.FromSeconds(5), waits[0]);
        Assert.Equal(TimeSpan.FromSeconds(10), waits[1]);
        Assert.All(waits.Zip(waits.Skip(1)), pair => Assert.True(pair.Second >= pair.First, $"{pair.Second} after {pair.First}"));
        Assert.Equal(RefusedPeerBackoff.MaxDelay, waits[^1]);
        Assert.True(backoff.IsRefused);

        // 12 attempts span more than a day: at most one report per started hour, never one per attempt.
        var elapsed = waits.Aggregate(TimeSpan.Zero, (a, b) => a + b);
        Assert.InRange(ErrorCount, 2, (int)elapsed.TotalHours + 1);
        var first = _logger.Entries.First(e => e.Level >= LogLevel.Error).Message;
        Assert.Contains("this peer was removed from the account; re-register it with a setup key", first, StringComparison.Ordinal);
        // Issue 13: a new setup key re-adds the peer; no file needs deleting any more.
        Assert.Contains("put a new one (not the one it registered with) in setup_key", first, StringComparison.Ordinal);
        Assert.DoesNotContain("delete", first, StringComparison.Ordinal);
    }

    [Fact]
    public void Jitter_stays_within_a_quarter_and_the_cap_holds()
    {
        var low = new RefusedPeerBackoff(_logger, _time, random: () => 0.0);
        var high = new RefusedPeerBackoff(_logger, _time, random: () => 0.999);

        Assert.Equal(TimeSpan.FromSeconds(3.75), low.OnRefused(StatusCode.NotFound, ""));
        Assert.InRange(high.OnRefused(StatusCode.NotFound, ""), TimeSpan.FromSeconds(6.2), TimeSpan.FromSeconds(6.25));
        for (var i = 0; i < 20; i++)
        {
            Assert.True(high.OnRefused(StatusCode.NotFound, "") <= RefusedPeerBackoff.MaxDelay);
        }
    }

    [Fact]
    public void Accepted_again_resets_the_backoff_and_a_new_refusal_is_reported_at_once()
    {
        var backoff = new RefusedPeerBackoff(_logger, _time, random: () => 0.5);
        backoff.OnRefused(StatusCode.PermissionDenied, "this peer's login has expired");
        backoff.OnRefused(StatusCode.PermissionDenied, "this peer's login has expired");
        Assert.Equal(1, ErrorCount);

        backoff.OnAccepted();
        var wait = backoff.OnRefused(StatusCode.PermissionDenied, "this peer's login has expired");

        Assert.True(backoff.IsRefused);
        Assert.Equal(TimeSpan.FromSeconds(5), wait);
        Assert.Equal(2, ErrorCount);
        Assert.Contains(_logger.Entries, e => e.Message == "Management accepts this peer again");
    }
}
