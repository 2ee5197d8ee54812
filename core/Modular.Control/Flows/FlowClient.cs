using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Control.Flows;

/// <summary>
/// The agent's side of the Flow API: one long-lived Upload stream; each batch is sealed with the agent's WireGuard key
/// to the server key (as management requests are) and each answer is opened with the same keys and must be bound to
/// the batch it answers. A broken stream is dropped and the next call opens a new one.
/// </summary>
/// <remarks>Not thread-safe: one <see cref="SendAsync"/> at a time (the uploader serialises its callers).</remarks>
public sealed class FlowClient : IDisposable
{
    private readonly FlowService.FlowServiceClient _client;
    private readonly X25519KeyPair _identity;
    private readonly WgKey _serverKey;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _life = new();
    private AsyncDuplexStreamingCall<SealedFlowBatch, SealedFlowAck>? _call;

    /// <param name="calls">A channel's calls to the management server (the Flow API shares its listener).</param>
    /// <param name="serverKey">The server key management proved (the agent's pinned key).</param>
    public FlowClient(CallInvoker calls, X25519KeyPair identity, WgKey serverKey, TimeProvider? time = null)
    {
        _client = new FlowService.FlowServiceClient(calls);
        _identity = identity;
        _serverKey = serverKey;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The server key this client seals to.</summary>
    public WgKey ServerKey => _serverKey;

    /// <summary>
    /// Sends one batch and returns the server's verified answer: the acknowledged IDs, or a refusal
    /// (<see cref="FlowAck.Refusal"/>) for the batch's content or its sender.
    /// </summary>
    /// <exception cref="RpcException">The stream failed or the server ended it (a bare status: transient).</exception>
    /// <exception cref="InvalidDataException">The answer does not open with the server key for this batch.</exception>
    public async Task<FlowAck> SendAsync(IEnumerable<FlowRecord> events, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_life.IsCancellationRequested, this);
        var batch = new FlowBatch { TimestampUnix = _time.GetUtcNow().ToUnixTimeSeconds() };
        batch.Events.AddRange(events);
        var body = Envelope.Seal(_identity, _serverKey, Envelope.Purposes.Flow, batch.ToByteArray());
        var request = new SealedFlowBatch
        {
            WgPubKey = ByteString.CopyFrom(_identity.PublicKey.ToArray()),
            Body = UnsafeByteOperations.UnsafeWrap(body),
        };

        var call = _call ??= _client.Upload(cancellationToken: _life.Token);
        try
        {
            await call.RequestStream.WriteAsync(request, cancellationToken);
            if (!await call.ResponseStream.MoveNext(cancellationToken))
            {
                throw new RpcException(new Status(StatusCode.Unavailable, "the server ended the flow stream"));
            }

            return Open(call.ResponseStream.Current, body.AsSpan(0, Envelope.NonceSize));
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or HttpRequestException)
        {
            // Writing to a call the server already completed, or over a connection that broke: as a failed call.
            Drop();
            throw new RpcException(new Status(StatusCode.Unavailable, $"the flow stream broke: {e.Message}", e));
        }
        catch
        {
            // Whatever broke (a cancelled wait cancels the call too), the next batch starts a fresh stream.
            Drop();
            throw;
        }
    }

    public void Dispose()
    {
        if (!_life.IsCancellationRequested)
        {
            _life.Cancel();
            Drop();
            _life.Dispose();
        }
    }

    private FlowAck Open(SealedFlowAck answer, ReadOnlySpan<byte> batchNonce)
    {
        if (!Envelope.TryOpen(_identity, _serverKey, Envelope.Purposes.FlowAck, answer.Body.Span, out var plaintext, batchNonce))
        {
            Drop();
            throw new InvalidDataException("A flow acknowledgement failed verification against the server key.");
        }

        try
        {
            return FlowAck.Parser.ParseFrom(plaintext);
        }
        catch (InvalidProtocolBufferException e)
        {
            Drop();
            throw new InvalidDataException("A flow acknowledgement could not be decoded.", e);
        }
    }

    private void Drop()
    {
        var call = _call;
        _call = null;
        call?.Dispose();
    }
}
