using System.Text.Json;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Server.Config;
using StackExchange.Redis;

namespace Modular.Server.Flows;

/// <summary>
/// Recent flows and per-peer aggregates in Redis when <c>redis_url</c> is set; the store stays the source of truth.
/// Per peer: <c>modular:flows:recent:{peer id}</c>, a list of the newest <see cref="RecentPerPeer"/> events as JSON
/// (newest first), and <c>modular:flows:totals:{peer id}</c>, a hash of counters (events, start, end, drop,
/// rx_bytes, tx_bytes, rx_packets, tx_packets, last_at in unix ms). Both expire after the retention, so a removed
/// peer's keys go too. Redis being down costs a warning (once until it works again), never a batch: the caller has
/// acknowledged the events already.
/// </summary>
public sealed class RedisFlowCache : IAsyncDisposable
{
    /// <summary>How many recent events each peer's list keeps.</summary>
    public const int RecentPerPeer = 1000;

    public const string RecentPrefix = "modular:flows:recent:";
    public const string TotalsPrefix = "modular:flows:totals:";

    private readonly RedisUrl? _url;
    private readonly TimeSpan _retention;
    private readonly ILogger<RedisFlowCache> _logger;
    private readonly SemaphoreSlim _connecting = new(1, 1);
    private ConnectionMultiplexer? _redis;
    private int _failing;

    public RedisFlowCache(ServerConfig config, ILogger<RedisFlowCache> logger)
    {
        ArgumentNullException.ThrowIfNull(config);
        _url = config.RedisUrl.Length > 0 && RedisUrl.TryParse(config.RedisUrl, out var url, out _) ? url : null;
        _retention = config.Account.Flows.Retention;
        _logger = logger;
    }

    /// <summary>Whether <c>redis_url</c> is set.</summary>
    public bool Enabled => _url is not null;

    /// <summary>Adds newly stored events of <paramref name="peerId"/>; a Redis failure is logged, not thrown.</summary>
    public async Task AddAsync(string peerId, IReadOnlyList<FlowEvent> events, CancellationToken cancellationToken)
    {
        if (_url is null || events.Count == 0)
        {
            return;
        }

        try
        {
            var redis = await ConnectAsync(cancellationToken);
            var db = redis.GetDatabase(_url.Database);
            var recent = (RedisKey)(RecentPrefix + peerId);
            var totals = (RedisKey)(TotalsPrefix + peerId);
            var batch = db.CreateBatch();
            var pending = new List<Task>
            {
                batch.ListLeftPushAsync(recent, [.. events.Select(e => (RedisValue)Json(e))]),
                batch.ListTrimAsync(recent, 0, RecentPerPeer - 1),
                batch.HashIncrementAsync(totals, "events", events.Count),
                batch.HashIncrementAsync(totals, "start", events.Count(e => e.Type == FlowEventType.Start)),
                batch.HashIncrementAsync(totals, "end", events.Count(e => e.Type == FlowEventType.End)),
                batch.HashIncrementAsync(totals, "drop", events.Count(e => e.Type == FlowEventType.Drop)),
                // Bytes and packets are a flow's final totals, so only End events add them (a Start carries the first packet's).
                batch.HashIncrementAsync(totals, "rx_bytes", Sum(events, e => e.RxBytes)),
                batch.HashIncrementAsync(totals, "tx_bytes", Sum(events, e => e.TxBytes)),
                batch.HashIncrementAsync(totals, "rx_packets", Sum(events, e => e.RxPackets)),
                batch.HashIncrementAsync(totals, "tx_packets", Sum(events, e => e.TxPackets)),
                batch.HashSetAsync(totals, "last_at", events.Max(e => e.Timestamp).ToUnixTimeMilliseconds()),
                batch.KeyExpireAsync(recent, _retention),
                batch.KeyExpireAsync(totals, _retention),
            };
            batch.Execute();
            await Task.WhenAll(pending).WaitAsync(cancellationToken);
            if (Interlocked.Exchange(ref _failing, 0) == 1)
            {
                _logger.LogInformation("Redis at {Redis} works again; the flow cache is updated", _url);
            }
        }
        catch (Exception e) when (e is RedisException or TimeoutException or ObjectDisposedException)
        {
            if (Interlocked.Exchange(ref _failing, 1) == 0)
            {
                _logger.LogWarning("Redis at {Redis} failed ({Problem}); flows are stored, but the Redis cache is behind until it works again", _url, e.Message);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_redis is { } redis)
        {
            await redis.CloseAsync(allowCommandsToComplete: false);
            redis.Dispose();
        }

        _connecting.Dispose();
    }

    // Saturating: counters are ulong, Redis's HINCRBY a signed 64-bit number.
    private static long Sum(IReadOnlyList<FlowEvent> events, Func<FlowEvent, ulong> counter)
    {
        ulong sum = 0;
        foreach (var e in events.Where(e => e.Type == FlowEventType.End))
        {
            var next = sum + counter(e);
            sum = next < sum ? ulong.MaxValue : next;
        }

        return sum > long.MaxValue ? long.MaxValue : (long)sum;
    }

    private async Task<ConnectionMultiplexer> ConnectAsync(CancellationToken cancellationToken)
    {
        if (_redis is { } existing)
        {
            return existing;
        }

        await _connecting.WaitAsync(cancellationToken);
        try
        {
            if (_redis is null)
            {
                var options = new ConfigurationOptions
                {
                    EndPoints = { { _url!.Host, _url.Port } },
                    Password = _url.Password.Length > 0 ? _url.Password : null,
                    Ssl = _url.Tls,
                    // Down at start is not fatal: the multiplexer reconnects in the background, and commands sent
                    // while it is down fail at once (no backlog) rather than hold up the Flow API.
                    AbortOnConnectFail = false,
                    BacklogPolicy = BacklogPolicy.FailFast,
                    ConnectTimeout = 2000,
                    AsyncTimeout = 2000,
                    SyncTimeout = 2000,
                };
                _redis = await ConnectionMultiplexer.ConnectAsync(options);
            }

            return _redis;
        }
        finally
        {
            _connecting.Release();
        }
    }

    private static string Json(FlowEvent e) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["id"] = e.Id.ToString("D"),
        ["flow_id"] = e.FlowId.ToString("D"),
        ["at"] = e.Timestamp.ToUnixTimeMilliseconds(),
        ["type"] = e.Type.ToString().ToLowerInvariant(),
        ["direction"] = e.Direction.ToString().ToLowerInvariant(),
        ["protocol"] = (int)e.Protocol,
        ["source"] = e.SourceAddress.ToString(),
        ["source_port"] = (int)e.SourcePort,
        ["destination"] = e.DestinationAddress.ToString(),
        ["destination_port"] = (int)e.DestinationPort,
        ["icmp_type"] = (int)e.IcmpType,
        ["icmp_code"] = (int)e.IcmpCode,
        ["rx_packets"] = e.RxPackets,
        ["rx_bytes"] = e.RxBytes,
        ["tx_packets"] = e.TxPackets,
        ["tx_bytes"] = e.TxBytes,
        ["rule_id"] = e.RuleId,
        ["source_resource_id"] = e.SourceResourceId,
        ["destination_resource_id"] = e.DestinationResourceId,
    });
}
