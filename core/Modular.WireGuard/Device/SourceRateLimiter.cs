using Modular.WireGuard.Conn;

namespace Modular.WireGuard.Device;

/// <summary>
/// Token buckets per source address for handshake initiations under load (20 per second,
/// bursts of 5), so one address cannot monopolise the CPU spent on handshakes. Thread-safe.
/// </summary>
internal sealed class SourceRateLimiter
{
    private const int PacketsPerSecond = 20;
    private const int Burst = 5;
    private static readonly long TokenCost = TimeSpan.TicksPerSecond / PacketsPerSecond;
    private static readonly long MaxTokens = TokenCost * Burst;

    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<UInt128, Bucket> _buckets = [];
    private long _lastSweep;

    private sealed class Bucket
    {
        public long Tokens;
        public long LastTime;
    }

    public SourceRateLimiter(TimeProvider time)
    {
        _time = time;
        _lastSweep = time.GetTimestamp();
    }

    /// <summary>Takes a token for the sender's address (the port is ignored); false when it has none left.</summary>
    public bool Allow(WgEndpoint source)
    {
        var now = _time.GetTimestamp();
        lock (_lock)
        {
            SweepIfDue(now);
            if (!_buckets.TryGetValue(source.Address, out var bucket))
            {
                _buckets[source.Address] = new Bucket { Tokens = MaxTokens - TokenCost, LastTime = now };
                return true;
            }

            var elapsed = _time.GetElapsedTime(bucket.LastTime, now).Ticks;
            bucket.LastTime = now;
            bucket.Tokens = Math.Min(MaxTokens, bucket.Tokens + elapsed);
            if (bucket.Tokens < TokenCost)
            {
                return false;
            }

            bucket.Tokens -= TokenCost;
            return true;
        }
    }

    public int TrackedSources
    {
        get
        {
            lock (_lock)
            {
                return _buckets.Count;
            }
        }
    }

    private void SweepIfDue(long now)
    {
        if (_time.GetElapsedTime(_lastSweep, now) < TimeSpan.FromSeconds(1))
        {
            return;
        }

        _lastSweep = now;
        var stale = _buckets.Where(pair => _time.GetElapsedTime(pair.Value.LastTime, now) >= TimeSpan.FromSeconds(1)).Select(pair => pair.Key).ToList();
        foreach (var key in stale)
        {
            _buckets.Remove(key);
        }
    }
}
