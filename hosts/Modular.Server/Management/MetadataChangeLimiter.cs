using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Server.Store;

namespace Modular.Server.Management;

/// <summary>
/// Rate-limits the map changes a peer causes by itself: the metadata it reports at Login and Sync (hostname,
/// version, features, Rosenpass) is in every other peer's map, so each change bumps the serial and pushes a map to
/// everyone. A token bucket per peer (<see cref="Burst"/> changes at once, then one per <see cref="Interval"/>):
/// a change beyond it is not refused and not lost, the login succeeds and the newest metadata waits, replacing any
/// earlier waiting one, until the bucket has a token again.
/// </summary>
public sealed class MetadataChangeLimiter : IDisposable
{
    /// <summary>Changes a peer may make in a row.</summary>
    public const int DefaultBurst = 3;

    /// <summary>One more change per interval after the burst.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMinutes(1);

    private readonly IStore _store;
    private readonly NetworkState _network;
    private readonly TimeProvider _time;
    private readonly ILogger<MetadataChangeLimiter> _logger;
    private readonly Lock _lock = new();
    private readonly Dictionary<WgKey, Bucket> _buckets = [];

    public MetadataChangeLimiter(IStore store, NetworkState network, TimeProvider time, ILogger<MetadataChangeLimiter> logger)
    {
        _store = store;
        _network = network;
        _time = time;
        _logger = logger;
    }

    public int Burst { get; init; } = DefaultBurst;

    public TimeSpan Interval { get; init; } = DefaultInterval;

    /// <summary>
    /// Puts <paramref name="meta"/> in the store now if it changes <paramref name="current"/> and the peer has a
    /// token; otherwise keeps it for later. Returns the peer as stored.
    /// </summary>
    public async Task<PeerRecord> ApplyAsync(PeerRecord current, PeerMetadata meta, CancellationToken cancellationToken)
    {
        var key = current.PublicKey;
        bool now;
        lock (_lock)
        {
            _buckets.TryGetValue(key, out var bucket);
            if (!meta.DiffersFrom(current))
            {
                // Back to what is stored: nothing waits any more; a full bucket is forgotten (as good as a new one).
                if (bucket is not null)
                {
                    bucket.Pending = null;
                    Refill(bucket);
                    if (bucket.Tokens >= Burst && bucket.Timer is null)
                    {
                        _buckets.Remove(key);
                    }
                }

                return current;
            }

            bucket ??= _buckets[key] = new Bucket { Tokens = Burst, Updated = _time.GetUtcNow() };
            Refill(bucket);
            now = bucket.Pending is null && HasToken(bucket);
            if (now)
            {
                bucket.Tokens -= 1;
            }
            else
            {
                if (bucket.Pending is null)
                {
                    _logger.LogInformation("Peer {Peer} changes its metadata faster than {Burst} per {Interval}; the change waits", key.ToShortString(), Burst, Interval);
                }

                bucket.Pending = meta;
                bucket.Timer ??= _time.CreateTimer(_ => _ = FlushAsync(key), null, UntilToken(bucket), Timeout.InfiniteTimeSpan);
            }
        }

        return now ? await _store.UpdatePeerAsync(key, meta, cancellationToken) ?? current : current;
    }

    /// <summary>Puts a waiting change in the store once its peer has a token again, and tells the Sync streams.</summary>
    private async Task FlushAsync(WgKey key)
    {
        PeerMetadata? meta;
        lock (_lock)
        {
            if (!_buckets.TryGetValue(key, out var bucket))
            {
                return;
            }

            Refill(bucket);
            meta = bucket.Pending;
            if (meta is not null && !HasToken(bucket))
            {
                bucket.Timer?.Change(UntilToken(bucket), Timeout.InfiniteTimeSpan);
                return;
            }

            bucket.Timer?.Dispose();
            bucket.Timer = null;
            bucket.Pending = null;
            if (meta is null)
            {
                return;
            }

            bucket.Tokens -= 1;
        }

        try
        {
            await _store.UpdatePeerAsync(key, meta, CancellationToken.None);
            await _network.RefreshAsync(CancellationToken.None);
        }
#pragma warning disable CA1031 // A timer callback: log, the next login reports the metadata again.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogWarning(e, "Could not store the waiting metadata change of {Peer}", key.ToShortString());
        }
    }

    private void Refill(Bucket bucket)
    {
        var now = _time.GetUtcNow();
        bucket.Tokens = Math.Min(Burst, bucket.Tokens + ((now - bucket.Updated) / Interval));
        bucket.Updated = now;
    }

    // A whole token, give or take the rounding of the refill's division.
    private static bool HasToken(Bucket bucket) => bucket.Tokens >= 1 - 1e-9;

    private TimeSpan UntilToken(Bucket bucket) => HasToken(bucket) ? TimeSpan.Zero : (1 - bucket.Tokens) * Interval;

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var bucket in _buckets.Values)
            {
                bucket.Timer?.Dispose();
            }

            _buckets.Clear();
        }
    }

    private sealed class Bucket
    {
        public double Tokens { get; set; }

        public DateTimeOffset Updated { get; set; }

        public PeerMetadata? Pending { get; set; }

        public ITimer? Timer { get; set; }
    }
}
