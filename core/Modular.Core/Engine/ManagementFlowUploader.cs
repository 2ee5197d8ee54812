using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Modular.Abstractions.Flows;
using Modular.Abstractions.WireGuard;
using Modular.Control;
using Modular.Control.Crypto;
using Modular.Control.Flows;

namespace Modular.Core.Engine;

/// <summary>Where flow batches go: the management URL this agent is logged in at, and the server key it proved there.</summary>
public readonly record struct FlowTarget(Uri Url, WgKey ServerKey);

/// <summary>
/// The host's <see cref="IFlowUploader"/>: serialises a plugin's batch (<see cref="FlowRecords"/>), seals it as this peer
/// and sends it over the Flow API stream of the management server the agent is logged in to (<see cref="FlowClient"/>),
/// and returns what the server acknowledged. Transient trouble (not logged in yet, server unreachable or gone, no
/// answer within <see cref="AckTimeout"/>, an answer that fails verification) is <see cref="FlowUploadResult.Failed"/>;
/// a refusal the server sealed for this batch (malformed, over a limit, this key not registered) is
/// <see cref="FlowUploadResult.Refused"/>. The plugin never sees a key.
/// </summary>
/// <remarks>
/// One call in flight (a second waits). The engine disposes it after the sinks that use it; from then on (and for a
/// call it interrupts) every call throws <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class ManagementFlowUploader : IFlowUploader, IAsyncDisposable
{
    /// <summary>How long a batch waits for its acknowledgement before the call returns Failed.</summary>
    public static readonly TimeSpan AckTimeout = TimeSpan.FromSeconds(30);

    private readonly X25519KeyPair _identity;
    private readonly Func<FlowTarget?> _target;
    private readonly Func<Uri, CallInvoker>? _calls;
    private readonly string _tlsCa;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();

    // Guarded by _gate: the stream's client and the channel it runs on, for one target.
    private FlowTarget? _connected;
    private GrpcChannel? _channel;
    private FlowClient? _client;
    private volatile bool _disposed;

    /// <param name="identity">This agent's WireGuard key pair (the engine's; it outlives the uploader).</param>
    /// <param name="target">The current management URL and proven server key; null while not logged in.</param>
    /// <param name="calls">gRPC calls for a URL (tests); null opens a <see cref="ControlChannel"/> to it.</param>
    /// <param name="tlsCa">The agent's <c>tls_ca</c> for channels it opens.</param>
    public ManagementFlowUploader(X25519KeyPair identity, Func<FlowTarget?> target, Func<Uri, CallInvoker>? calls, string tlsCa, TimeProvider time)
    {
        _identity = identity;
        _target = target;
        _calls = calls;
        _tlsCa = tlsCa;
        _time = time;
    }

    public int MaxBatchEvents => FlowLimits.MaxBatchEvents;

    public async ValueTask<FlowUploadResult> UploadAsync(ReadOnlyMemory<FlowEvent> batch, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (batch.Length > MaxBatchEvents)
        {
            throw new ArgumentException($"A batch carries at most {MaxBatchEvents} events; this one has {batch.Length}.", nameof(batch));
        }

        var records = new List<FlowRecord>(batch.Length);
        foreach (var e in batch.Span)
        {
            records.Add(FlowRecords.ToRecord(e));
        }

        using var call = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token);
        try
        {
            await _gate.WaitAsync(call.Token);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            throw new ObjectDisposedException(nameof(ManagementFlowUploader));
        }

        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return await SendAsync(records, call, cancellationToken);
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _stopping.CancelAsync();
        // The call in flight (if any) ends at once on the cancellation; then nothing else runs on the stream.
        await _gate.WaitAsync();
        Disconnect();
        _gate.Release();
        _stopping.Dispose();
    }

    private async Task<FlowUploadResult> SendAsync(List<FlowRecord> records, CancellationTokenSource call, CancellationToken callerToken)
    {
        if (records.Count == 0)
        {
            return FlowUploadResult.Success([]);
        }

        // As the server measures it: the whole encoded FlowBatch (the timestamp adds at most 11 bytes).
        var size = records.Sum(r => 1 + CodedOutputStream.ComputeMessageSize(r)) + 11;
        if (size > FlowLimits.MaxBatchBytes)
        {
            return FlowUploadResult.Refused($"the batch is {size} bytes encoded; the Flow API takes at most {FlowLimits.MaxBatchBytes}");
        }

        if (_target() is not { } target)
        {
            return FlowUploadResult.Failed("not logged in to management yet");
        }

        var client = ClientFor(target);
        using var timeout = new CancellationTokenSource(AckTimeout, _time);
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(call.Token, timeout.Token);
        try
        {
            var ack = await client.SendAsync(records, wait.Token);
            if (ack.Refusal is { } refusal)
            {
                return FlowUploadResult.Refused($"the server refused the batch ({(StatusCode)refusal.Code}): {refusal.Detail}");
            }

            var sent = records.Select(r => r.Id).ToHashSet();
            var acknowledged = new List<Guid>(ack.Acknowledged.Count);
            foreach (var id in ack.Acknowledged)
            {
                // Only IDs of this batch count: the answer is bound to it, but the plugin deletes what this list names.
                if (sent.Contains(id) && FlowRecords.TryGuid(id, out var guid))
                {
                    acknowledged.Add(guid);
                }
            }

            return FlowUploadResult.Success(acknowledged);
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException && call.IsCancellationRequested)
        {
            // The caller gave up, or the engine stops: never a result, so the events stay pending.
            Disconnect();
            callerToken.ThrowIfCancellationRequested();
            throw new ObjectDisposedException(nameof(ManagementFlowUploader));
        }
        catch (Exception e) when (e is OperationCanceledException or RpcException && timeout.IsCancellationRequested)
        {
            Disconnect();
            return FlowUploadResult.Failed($"no acknowledgement from {target.Url.Host}:{target.Url.Port} within {AckTimeout.TotalSeconds:0} s");
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
        {
            return FlowUploadResult.Failed($"{target.Url.Host}:{target.Url.Port} does not serve the flow API (its `flow` component is off)");
        }
        catch (RpcException e)
        {
            return FlowUploadResult.Failed($"flow upload failed: {ConnectionProblem.Describe(e, target.Url)}");
        }
        catch (InvalidDataException e)
        {
            return FlowUploadResult.Failed(e.Message);
        }
#pragma warning disable CA1031 // The contract returns failures rather than throwing them into a plugin's loop.
        catch (Exception e) when (e is not OperationCanceledException)
#pragma warning restore CA1031
        {
            Disconnect();
            return FlowUploadResult.Failed($"flow upload failed: {e.Message}");
        }
    }

    /// <summary>The stream client for <paramref name="target"/>; a new login elsewhere (or a new key) starts afresh.</summary>
    private FlowClient ClientFor(FlowTarget target)
    {
        if (_client is { } existing && _connected == target)
        {
            return existing;
        }

        Disconnect();
        CallInvoker calls;
        if (_calls is not null)
        {
            calls = _calls(target.Url);
        }
        else
        {
            _channel = ControlChannel.Create(target.Url.ToString(), _tlsCa);
            calls = _channel.CreateCallInvoker();
        }

        _client = new FlowClient(calls, _identity, target.ServerKey, _time);
        _connected = target;
        return _client;
    }

    private void Disconnect()
    {
        _client?.Dispose();
        _client = null;
        _channel?.Dispose();
        _channel = null;
        _connected = null;
    }
}
