using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Plugins.Netflow.Ipfix;

namespace Modular.Plugins.Netflow;

/// <summary>How the shipping loop paces itself; <see cref="Default"/> outside tests.</summary>
/// <param name="FlushDelay">How long the loop gathers events into a batch (unless a full batch is waiting already).</param>
/// <param name="BackoffBase">The wait after the first failed upload; it doubles with each failure in a row.</param>
/// <param name="BackoffMax">The longest wait between tries.</param>
/// <param name="Jitter">A factor in [0.5, 1] applied to each wait, so many agents do not retry in step.</param>
internal sealed record ShippingOptions(TimeSpan FlushDelay, TimeSpan BackoffBase, TimeSpan BackoffMax, Func<double> Jitter)
{
    public static ShippingOptions Default { get; } = new(
        TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1), () => 0.5 + (Random.Shared.NextDouble() / 2));

    /// <summary>The wait after <paramref name="failures"/> failed uploads in a row (1 or more).</summary>
    public TimeSpan Backoff(int failures)
    {
        var nominal = BackoffBase * Math.Pow(2, Math.Min(failures - 1, 30));
        return (nominal < BackoffMax ? nominal : BackoffMax) * Math.Clamp(Jitter(), 0.5, 1);
    }
}

/// <summary>
/// The built-in flow sink: keeps events in a bounded store until the management server acknowledges them (through the
/// host's <see cref="IFlowUploader"/>), and exports them as IPFIX when a collector is set.
/// </summary>
/// <remarks>
/// <see cref="Emit"/> (the packet path, any thread) only counts, stores and queues: it never waits on the network and
/// allocates nothing beyond the event it gets. A background loop ships the oldest events in batches of at most
/// <see cref="IFlowUploader.MaxBatchEvents"/>, deletes only the acknowledged ones, and after a failure waits with
/// jittered exponential backoff (on the plugin context's clock) before it tries again. A batch the server refuses for
/// its content is dropped and counted. When the store is full the oldest event makes room and is counted as dropped;
/// events still unacknowledged at <see cref="DisposeAsync"/> are counted as dropped too. Without an uploader (no
/// management server) the store keeps the newest events and only the IPFIX export sends anything.
/// </remarks>
public sealed class NetflowSink : IFlowSink, IFlowSinkStatus
{
    private readonly PendingFlowStore _store;
    private readonly IFlowUploader? _uploader;
    private readonly IpfixExporter? _exporter;
    private readonly ShippingOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly WakeSignal _wake = new();
    private readonly CancellationTokenSource _stop = new();
    private Task _shipping = Task.CompletedTask;
    private int _disposed;

    private long _recorded;
    private long _sent;
    private long _acknowledged;
    private long _dropped;
    private volatile string? _shippingError;

    // Guards the step from an upload's result to the store and counters against a half-done read of them.
    private readonly Lock _outcomeLock = new();

    internal NetflowSink(int capacity, IFlowUploader? uploader, IpfixExporter? exporter, ShippingOptions options, TimeProvider time, ILogger logger)
    {
        _store = new PendingFlowStore(capacity);
        _uploader = uploader;
        _exporter = exporter;
        _options = options;
        _time = time;
        _logger = logger;
    }

    /// <summary>Events kept because the server has not acknowledged them (yet).</summary>
    public int Pending
    {
        get
        {
            lock (_outcomeLock)
            {
                return _store.Count;
            }
        }
    }

    /// <summary>How many events the store keeps at most.</summary>
    public int Capacity => _store.Capacity;

    /// <summary>True when a server ships the events (the host gave an uploader).</summary>
    public bool Ships => _uploader is not null;

    /// <summary>True when the events are also exported as IPFIX.</summary>
    public bool Exports => _exporter is not null;

    public FlowSinkCounters Counters
    {
        get
        {
            lock (_outcomeLock)
            {
                var exportError = _exporter?.LastError;
                var shippingError = _shippingError;
                var error = shippingError is null ? exportError : exportError is null ? shippingError : $"{shippingError}; {exportError}";
                return new FlowSinkCounters(
                    Interlocked.Read(ref _recorded),
                    Interlocked.Read(ref _sent),
                    Interlocked.Read(ref _acknowledged),
                    Interlocked.Read(ref _dropped),
                    _exporter?.Exported ?? 0,
                    error);
            }
        }
    }

    /// <summary>Starts the shipping loop and the exporter.</summary>
    internal void Start()
    {
        _exporter?.Start();
        if (_uploader is not null)
        {
            _shipping = Task.Run(() => ShipAsync(_uploader, _stop.Token));
        }
    }

    public void Emit(FlowEvent flowEvent)
    {
        ArgumentNullException.ThrowIfNull(flowEvent);
        if (Volatile.Read(ref _disposed) != 0)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        Interlocked.Increment(ref _recorded);
        if (_store.Add(flowEvent) is not null)
        {
            Interlocked.Increment(ref _dropped);
        }

        _exporter?.Enqueue(flowEvent);
        if (_uploader is not null)
        {
            _wake.Set();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // An upload in flight is cancelled: its events count as not acknowledged (the uploader's contract).
        await _stop.CancelAsync();
        await _shipping;
        var unacknowledged = _store.Clear();
        Interlocked.Add(ref _dropped, unacknowledged);
        if (unacknowledged > 0 && _uploader is not null)
        {
            _logger.LogWarning("Flow logging: {Count} flow event(s) not acknowledged by the server at stop are dropped", unacknowledged);
        }

        if (_exporter is not null)
        {
            await _exporter.DisposeAsync();
        }

        _stop.Dispose();
        _wake.Dispose();
    }

    private async Task ShipAsync(IFlowUploader uploader, CancellationToken cancellationToken)
    {
        var batch = new FlowEvent[Math.Clamp(uploader.MaxBatchEvents, 1, _store.Capacity)];
        var failures = 0;
        try
        {
            while (true)
            {
                _wake.Reset();
                if (_store.Count == 0)
                {
                    await _wake.WaitAsync(cancellationToken);
                    continue;
                }

                if (failures == 0 && _store.Count < batch.Length)
                {
                    // Let a batch gather instead of one call per event.
                    await Task.Delay(_options.FlushDelay, _time, cancellationToken);
                }

                var count = _store.CopyOldest(batch);
                if (count > 0 && await UploadAsync(uploader, batch.AsMemory(0, count), cancellationToken))
                {
                    failures = 0;
                }
                else if (count > 0)
                {
                    failures++;
                    await Task.Delay(_options.Backoff(failures), _time, cancellationToken);
                }

                Array.Clear(batch, 0, count);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (ObjectDisposedException)
        {
            // The host closed the uploader (the engine stops); what is left is counted at dispose.
            SetError("the host closed the flow uploader; nothing more is shipped");
        }
    }

    /// <summary>One try; true when the whole batch is settled (acknowledged, or refused and dropped).</summary>
    private async Task<bool> UploadAsync(IFlowUploader uploader, ReadOnlyMemory<FlowEvent> batch, CancellationToken cancellationToken)
    {
        Interlocked.Add(ref _sent, batch.Length);
        FlowUploadResult result;
        try
        {
            result = await uploader.UploadAsync(batch, cancellationToken);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // Cancelled by the host, not by this sink's stop (a timeout): the events stay, as for any transient failure.
            result = FlowUploadResult.Failed("the upload was cancelled before the server answered");
        }
        catch (Exception e) when (e is not (OperationCanceledException or ObjectDisposedException))
        {
            // The contract returns transient failures; a throw is treated as one, so the events stay.
            result = FlowUploadResult.Failed(e.Message);
        }

        // Deleting the events and counting the outcome is one step to readers (Pending, Counters): who sees the
        // events gone sees them counted, and the error of an earlier attempt with them cleared.
        lock (_outcomeLock)
        {
            var acknowledged = _store.Remove(batch.Span, result.Acknowledged);
            Interlocked.Add(ref _acknowledged, acknowledged);
            if (result.Rejected)
            {
                var refused = _store.Remove(batch.Span, ids: null);
                Interlocked.Add(ref _dropped, refused);
                SetError($"the server refused {refused} flow event(s), dropped: {result.Error ?? "no reason given"}");
                return true;
            }

            if (result.Error is null && AllAcknowledged(batch.Span, result.Acknowledged))
            {
                ClearError();
                return true;
            }

            SetError(result.Error is null
                ? $"the server acknowledged {result.Acknowledged.Count} of {batch.Length} flow event(s); retrying the rest"
                : $"shipping flow events failed: {result.Error}");
            return false;
        }
    }

    // Every event of the batch acknowledged (also one a full store pushed out meanwhile: counted dropped then, but the server has it).
    private static bool AllAcknowledged(ReadOnlySpan<FlowEvent> batch, IReadOnlyList<Guid> acknowledged)
    {
        if (acknowledged.Count < batch.Length)
        {
            return false;
        }

        var ids = acknowledged.ToHashSet();
        foreach (var flowEvent in batch)
        {
            if (!ids.Contains(flowEvent.Id))
            {
                return false;
            }
        }

        return true;
    }

    private void SetError(string error)
    {
        if (_shippingError != error)
        {
            _logger.LogWarning("Flow logging: {Error}", error);
        }

        _shippingError = error;
    }

    private void ClearError()
    {
        if (_shippingError is not null)
        {
            _logger.LogInformation("Flow logging: shipping flow events works again");
            _shippingError = null;
        }
    }
}
