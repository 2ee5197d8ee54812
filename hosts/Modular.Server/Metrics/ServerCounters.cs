namespace Modular.Server.Metrics;

/// <summary>
/// Events the server counts as they happen, for its Prometheus endpoint (<see cref="ServerMetrics"/>): one interlocked
/// add per map pushed or signal message routed, whether or not metrics are served. Everything else the endpoint shows
/// is read at scrape time from state the services keep anyway (sessions, the network snapshot, the relay's counters).
/// </summary>
public sealed class ServerCounters
{
    private long _mapPushes;
    private long _signalMessages;
    private long _signalUndeliverable;

    /// <summary>Network maps (full or delta) and service refreshes written to Sync streams.</summary>
    public long MapPushes => Interlocked.Read(ref _mapPushes);

    /// <summary>Signal messages handed to a connected recipient.</summary>
    public long SignalMessages => Interlocked.Read(ref _signalMessages);

    /// <summary>Signal messages whose recipient was not connected (the sender got an error frame).</summary>
    public long SignalUndeliverable => Interlocked.Read(ref _signalUndeliverable);

    public void MapPushed() => Interlocked.Increment(ref _mapPushes);

    public void SignalRouted(bool delivered)
    {
        if (delivered)
        {
            Interlocked.Increment(ref _signalMessages);
        }
        else
        {
            Interlocked.Increment(ref _signalUndeliverable);
        }
    }
}
