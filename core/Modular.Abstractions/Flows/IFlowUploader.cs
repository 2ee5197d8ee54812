namespace Modular.Abstractions.Flows;

/// <summary>
/// The server's answer to one <see cref="IFlowUploader.UploadAsync"/> call.
/// </summary>
/// <param name="Acknowledged">
/// The IDs of the events the server has stored (now or on an earlier try: it keeps each event once per peer and
/// event ID). Only these may be deleted from the plugin's store.
/// </param>
/// <param name="Error">Why the batch was not (fully) acknowledged; null on success. Never contains a key.</param>
/// <param name="Rejected">
/// The server refused the batch for its content (malformed, oversized, not allowed): sending it again unchanged
/// fails again, so the plugin drops those events and counts them as dropped. False for transient failures
/// (unreachable, timed out, shutting down), after which the plugin keeps the events and retries later.
/// </param>
public sealed record FlowUploadResult(IReadOnlyList<Guid> Acknowledged, string? Error, bool Rejected)
{
    /// <summary>Every event of the batch acknowledged.</summary>
    public static FlowUploadResult Success(IReadOnlyList<Guid> acknowledged) => new(acknowledged, null, false);

    /// <summary>A transient failure: nothing acknowledged, try again later.</summary>
    public static FlowUploadResult Failed(string error) => new([], error, false);

    /// <summary>The server refused the batch for its content: do not send it again.</summary>
    public static FlowUploadResult Refused(string error) => new([], error, true);
}

/// <summary>
/// Ships flow events to the management server's Flow API on a plugin's behalf. The host serialises the batch,
/// authenticates it as this peer (the way management calls are: the plugin never holds a key), sends it and
/// returns what the server acknowledged.
/// </summary>
/// <remarks>
/// Threading: thread-safe, but one call is in flight per uploader; a second call waits for the first.
/// Never call it from <see cref="IFlowSink.Emit"/> (the packet path): ship from the plugin's own background loop.
/// Close: the host ends the uploader after it disposed the sink that uses it; a call after that, or while the
/// engine stops, throws <see cref="ObjectDisposedException"/>. Cancelling a call throws
/// <see cref="OperationCanceledException"/>; the events of that call count as not acknowledged.
/// </remarks>
public interface IFlowUploader
{
    /// <summary>The most events one call may carry; a larger batch throws <see cref="ArgumentException"/>.</summary>
    int MaxBatchEvents { get; }

    /// <summary>
    /// Sends <paramref name="batch"/> and waits for the server's acknowledgement. Transient failures are returned
    /// (<see cref="FlowUploadResult.Failed"/>), not thrown, so the caller can back off and retry.
    /// </summary>
    ValueTask<FlowUploadResult> UploadAsync(ReadOnlyMemory<FlowEvent> batch, CancellationToken cancellationToken);
}

/// <summary>A flow sink's counters, for `status`; all totals since the sink was created.</summary>
/// <param name="Recorded">Events taken by <see cref="IFlowSink.Emit"/>.</param>
/// <param name="Sent">Events sent to the server (each try of an event counts once).</param>
/// <param name="Acknowledged">Events the server acknowledged and the sink deleted.</param>
/// <param name="Dropped">Events lost: the store was full, the server refused them, or they were still unacknowledged at stop.</param>
/// <param name="Exported">Events exported elsewhere (IPFIX records sent, a file line written).</param>
/// <param name="LastError">Why shipping or exporting fails now; null while it works.</param>
public readonly record struct FlowSinkCounters(long Recorded, long Sent, long Acknowledged, long Dropped, long Exported, string? LastError);

/// <summary>
/// Optional: a <see cref="IFlowSink"/> that also implements this shows its counters in `status`. Read from any
/// thread at any time (also after dispose began); it must not block.
/// </summary>
public interface IFlowSinkStatus
{
    /// <summary>The counters now.</summary>
    FlowSinkCounters Counters { get; }
}
