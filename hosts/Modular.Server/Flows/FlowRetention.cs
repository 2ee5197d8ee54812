using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Server.Config;
using Modular.Server.Store;

namespace Modular.Server.Flows;

/// <summary>
/// Deletes flow events older than <c>[account.flows] retention</c>: once at start, then every
/// <see cref="Interval"/> on the server's clock (a fake one in tests).
/// </summary>
public sealed class FlowRetention : BackgroundService
{
    /// <summary>How often the sweep runs; an event outlives its retention by at most this much.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(10);

    private readonly IStore _store;
    private readonly TimeSpan _retention;
    private readonly TimeProvider _time;
    private readonly ILogger<FlowRetention> _logger;
    private long _sweeps;

    public FlowRetention(IStore store, ServerConfig config, TimeProvider time, ILogger<FlowRetention> logger)
    {
        ArgumentNullException.ThrowIfNull(config);
        _store = store;
        _retention = config.Account.Flows.Retention;
        _time = time;
        _logger = logger;
    }

    /// <summary>How many sweeps finished (for tests: a sweep after a clock step is observable without sleeping).</summary>
    public long Sweeps => Interlocked.Read(ref _sweeps);

    /// <summary>One sweep now; returns how many events it deleted.</summary>
    public async Task<int> SweepAsync(CancellationToken cancellationToken)
    {
        var deleted = await _store.DeleteFlowEventsBeforeAsync(_time.GetUtcNow() - _retention, cancellationToken);
        if (deleted > 0)
        {
            _logger.LogInformation("Flow retention: deleted {Count} events older than {Retention}", deleted, _retention);
        }

        Interlocked.Increment(ref _sweeps);
        return deleted;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            // The next round's timer starts before this sweep: sweeps stay Interval apart however long one takes, and
            // a test that saw a sweep finish can step the clock knowing the next timer is set.
            var next = Task.Delay(Interval, _time, stoppingToken);
            try
            {
                await SweepAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // A failed sweep (a locked or full disk) is tried again next time; the server goes on.
            catch (Exception e)
#pragma warning restore CA1031
            {
                _logger.LogWarning("Flow retention sweep failed: {Problem}; trying again in {Interval}", e.Message, Interval);
            }

            try
            {
                await next;
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
