using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Flows;
using Modular.Server.Config;
using Modular.Server.Hosting;
using Modular.Server.Management;
using Modular.Server.Store;

namespace Modular.Server.Flows;

/// <summary>How big a batch the Flow API takes; a larger one is refused whole (tests lower them).</summary>
public sealed record FlowApiLimits(int MaxBatchEvents = FlowLimits.MaxBatchEvents, int MaxBatchBytes = FlowLimits.MaxBatchBytes);

/// <summary>
/// The <c>flow</c> component: agents' flow batches over one gRPC stream each, authenticated per peer as management
/// requests are (sealed with the agent's WireGuard key to the server key; registered, unexpired peers only). Each
/// batch is checked whole (size, count, every field) before anything is stored, stored in one transaction (insert or
/// ignore on (peer, event ID)), and acknowledged only after the commit, with an answer sealed to the agent and bound
/// to that batch. A refused batch gets a sealed refusal and the stream goes on; a body that does not open ends it.
/// </summary>
public sealed class FlowGrpcService : FlowService.FlowServiceBase
{
    private readonly IStore _store;
    private readonly ServerSecrets _secrets;
    private readonly ServerConfig _config;
    private readonly FlowApiLimits _limits;
    private readonly RedisFlowCache _cache;
    private readonly TimeProvider _time;
    private readonly ILogger<FlowGrpcService> _logger;
    private readonly IHostApplicationLifetime _lifetime;

    public FlowGrpcService(IStore store, ServerSecrets secrets, ServerConfig config, FlowApiLimits limits, RedisFlowCache cache, TimeProvider time, ILogger<FlowGrpcService> logger, IHostApplicationLifetime lifetime)
    {
        _lifetime = lifetime;
        _store = store;
        _secrets = secrets;
        _config = config;
        _limits = limits;
        _cache = cache;
        _time = time;
        _logger = logger;
    }

    public override async Task Upload(IAsyncStreamReader<SealedFlowBatch> requestStream, IServerStreamWriter<SealedFlowAck> responseStream, ServerCallContext context)
    {
        // A stopping server ends its streams at once (agents send again to the next one) instead of holding shutdown.
        using var stream = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _lifetime.ApplicationStopping);
        var ct = stream.Token;
        while (await NextAsync(requestStream, ct))
        {
            var request = requestStream.Current;
            if (request.WgPubKey.Length != WgKey.Size)
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, $"wg_pub_key must be {WgKey.Size} bytes, got {request.WgPubKey.Length}"));
            }

            var peerKey = new WgKey(request.WgPubKey.Span);
            if (!Envelope.TryOpen(_secrets.ServerKey, peerKey, Envelope.Purposes.Flow, request.Body.Span, out var plaintext))
            {
                // Nobody proved holding this key, so nothing is said to it: a bare status the agent takes as transient.
                throw new RpcException(new Status(StatusCode.InvalidArgument, "the batch does not open with wg_pub_key and the server key (wrong key, tampered or truncated)"));
            }

            var (ack, added, peerId) = await HandleAsync(peerKey, plaintext, ct);
            var body = Envelope.Seal(_secrets.ServerKey, peerKey, Envelope.Purposes.FlowAck, ack.ToByteArray(), request.Body.Span[..Envelope.NonceSize]);
            await responseStream.WriteAsync(new SealedFlowAck { Body = UnsafeByteOperations.UnsafeWrap(body) }, ct);
            if (added.Count > 0)
            {
                // After the acknowledgement: the cache never delays it, and its failure never costs the batch.
                await _cache.AddAsync(peerId, added, ct);
            }
        }
    }

    private static async Task<bool> NextAsync(IAsyncStreamReader<SealedFlowBatch> requests, CancellationToken ct)
    {
        try
        {
            return await requests.MoveNext(ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Checks, stores and answers one opened batch: the ack (or refusal), the events it added, and the peer's ID.</summary>
    private async Task<(FlowAck Ack, IReadOnlyList<FlowEvent> Added, string PeerId)> HandleAsync(WgKey peerKey, byte[] plaintext, CancellationToken ct)
    {
        if (plaintext.Length > _limits.MaxBatchBytes)
        {
            return Refuse(peerKey, StatusCode.ResourceExhausted, $"the batch is {plaintext.Length} bytes; at most {_limits.MaxBatchBytes} are taken");
        }

        FlowBatch batch;
        try
        {
            batch = FlowBatch.Parser.ParseFrom(plaintext);
        }
        catch (InvalidProtocolBufferException)
        {
            return Refuse(peerKey, StatusCode.InvalidArgument, "the batch is not a valid FlowBatch");
        }

        var skew = _time.GetUtcNow() - DateTimeOffset.FromUnixTimeSeconds(Math.Clamp(batch.TimestampUnix, 0, 253402300799));
        if (skew.Duration() > ManagementGrpcService.MaxClockSkew)
        {
            return Refuse(peerKey, StatusCode.InvalidArgument, "the batch timestamp is too far from the server's clock (check the agent's time)");
        }

        if (batch.Events.Count > _limits.MaxBatchEvents)
        {
            return Refuse(peerKey, StatusCode.ResourceExhausted, $"the batch has {batch.Events.Count} events; at most {_limits.MaxBatchEvents} are taken");
        }

        var events = new List<FlowEvent>(batch.Events.Count);
        for (var i = 0; i < batch.Events.Count; i++)
        {
            if (FlowRecords.TryFromRecord(batch.Events[i], out var error) is not { } flowEvent)
            {
                return Refuse(peerKey, StatusCode.InvalidArgument, $"event {i}: {error}");
            }

            events.Add(flowEvent);
        }

        var peer = await _store.GetPeerAsync(peerKey, ct);
        if (peer is null || peer.IsExpired(_time.GetUtcNow()))
        {
            return Refuse(peerKey, StatusCode.PermissionDenied, peer is null ? "this key is not registered" : "this peer's login has expired");
        }

        var added = await _store.AddFlowEventsAsync(peer.Id, events, _time.GetUtcNow() - _config.Account.Flows.Retention, ct);
        var ack = new FlowAck();
        ack.Acknowledged.AddRange(events.Select(e => e.Id).Distinct().Select(FlowRecords.GuidBytes));
        return (ack, added, peer.Id);
    }

    private (FlowAck, IReadOnlyList<FlowEvent>, string) Refuse(WgKey peerKey, StatusCode code, string detail)
    {
        _logger.LogWarning("Flow batch of {Peer} refused: {Reason}", peerKey.ToShortString(), detail);
        return (new FlowAck { Refusal = new FlowRefusal { Code = (int)code, Detail = detail } }, [], "");
    }
}
