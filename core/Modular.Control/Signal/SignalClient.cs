using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;

namespace Modular.Control.Signal;

/// <summary>A verified, decrypted signal message, or the server's notice that one could not be delivered.</summary>
/// <param name="Peer">The authenticated sender (or, for a delivery error, the intended recipient).</param>
public sealed record SignalInbound(WgKey Peer, SignalBody? Body, string? DeliveryError);

/// <summary>
/// The agent's signal connection. Authenticates to the server by proving possession of its WireGuard
/// private key, seals every outgoing body to the recipient's WireGuard key and opens every incoming one
/// with the sender's: a body the server (or anyone but the claimed sender) made is rejected and counted,
/// never delivered; so is a body sealed too long ago or too far ahead (<see cref="IsFresh"/>), so a replayed one.
/// </summary>
public sealed class SignalClient : IAsyncDisposable
{
    private readonly AsyncDuplexStreamingCall<SignalFrame, SignalFrame> _call;
    private readonly X25519KeyPair _identity;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly Channel<SignalInbound> _inbound = Channel.CreateBounded<SignalInbound>(new BoundedChannelOptions(1024) { SingleReader = true, SingleWriter = true });
    private readonly CancellationTokenSource _stop = new();
    private Task _reader = Task.CompletedTask;
    private long _rejected;
    private long _stale;

    private SignalClient(AsyncDuplexStreamingCall<SignalFrame, SignalFrame> call, X25519KeyPair identity, TimeProvider time)
    {
        _call = call;
        _identity = identity;
        _time = time;
    }

    /// <summary>How long <see cref="DisposeAsync"/> waits for the server to end the call after this side closed its half.</summary>
    public static readonly TimeSpan CloseWait = TimeSpan.FromSeconds(2);

    /// <summary>
    /// A body sealed longer ago than this is dropped as stale: a replay (the envelope cannot tell a copy from the
    /// original), or clocks that are off. Two minutes covers a slow delivery; peers' clocks must agree within it.
    /// </summary>
    public static readonly TimeSpan MaxAge = TimeSpan.FromMinutes(2);

    /// <summary>A body stamped further ahead of this host's clock than this is dropped too (allowed clock skew).</summary>
    public static readonly TimeSpan MaxAhead = TimeSpan.FromSeconds(30);

    /// <summary>Messages that failed verification (forged, tampered, or for someone else) and were dropped.</summary>
    public long RejectedCount => Interlocked.Read(ref _rejected);

    /// <summary>Verified messages dropped as stale (see <see cref="IsFresh"/>): replays, or clocks that disagree.</summary>
    public long StaleCount => Interlocked.Read(ref _stale);

    /// <summary>
    /// Whether <paramref name="body"/> was sealed within <see cref="MaxAge"/> before <paramref name="now"/> and not more
    /// than <see cref="MaxAhead"/> after it. A body without a timestamp (0) is stale: every release stamps its bodies.
    /// </summary>
    public static bool IsFresh(SignalBody body, DateTimeOffset now)
    {
        var nowMs = now.ToUnixTimeMilliseconds();
        var sealedAt = body.TimestampUnixMs;
        return sealedAt >= nowMs - (long)MaxAge.TotalMilliseconds && sealedAt <= nowMs + (long)MaxAhead.TotalMilliseconds;
    }

    /// <summary>
    /// Verified messages and delivery errors, in arrival order. Completes when the stream ends; when the
    /// server ended it with an error (e.g. PermissionDenied: the peer was removed) reads throw
    /// <see cref="ChannelClosedException"/> with that <see cref="RpcException"/> as its inner exception.
    /// </summary>
    public ChannelReader<SignalInbound> Inbound => _inbound.Reader;

    /// <summary>
    /// Connects and authenticates. When <paramref name="expectedServerKey"/> is given (from management),
    /// a server presenting another key is refused.
    /// </summary>
    /// <exception cref="RpcException">The server refused the proof (Unauthenticated).</exception>
    /// <param name="instanceId">This agent process's random id (Hello.instance_id): another process's stream for the key is refused while this one is live.</param>
    public static async Task<SignalClient> ConnectAsync(ChannelBase channel, X25519KeyPair identity, CancellationToken cancellationToken, WgKey? expectedServerKey = null, TimeProvider? time = null, string instanceId = "")
    {
        var call = new SignalExchange.SignalExchangeClient(channel).Connect(cancellationToken: CancellationToken.None);
        var client = new SignalClient(call, identity, time ?? TimeProvider.System);
        try
        {
            await call.RequestStream.WriteAsync(new SignalFrame { Hello = new Hello { WgPubKey = ByteString.CopyFrom(identity.PublicKey.ToArray()), InstanceId = instanceId } }, cancellationToken);
            var challenge = await ReadFrameAsync(call, SignalFrame.KindOneofCase.Challenge, cancellationToken);
            if (challenge.Challenge.ServerKey.Length != WgKey.Size || challenge.Challenge.Nonce.Length < 16)
            {
                throw new InvalidDataException("The signal server sent a malformed challenge.");
            }

            var serverKey = new WgKey(challenge.Challenge.ServerKey.Span);
            if (expectedServerKey is { } expected && expected != serverKey)
            {
                throw new InvalidDataException("The signal server's key differs from the one management announced.");
            }

            var nonce = challenge.Challenge.Nonce.Span;
            var proof = Envelope.Seal(identity, serverKey, Envelope.Purposes.SignalAuth, nonce, nonce);
            await call.RequestStream.WriteAsync(new SignalFrame { Proof = new Proof { Box = ByteString.CopyFrom(proof) } }, cancellationToken);
            await ReadFrameAsync(call, SignalFrame.KindOneofCase.Ready, cancellationToken);
            client._reader = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            return client;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && !cancellationToken.IsCancellationRequested)
        {
            // A server that rejects the call at once (signal not served there, say) may reset the
            // stream while the hello is still being written; the call's own status says why.
            var status = await FinalStatusAsync(call);
            await client.DisposeAsync();
            if (status is { StatusCode: not StatusCode.Cancelled and not StatusCode.OK } rejected)
            {
                throw new RpcException(rejected);
            }

            throw;
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    private static async Task<Status?> FinalStatusAsync(AsyncDuplexStreamingCall<SignalFrame, SignalFrame> call)
    {
        try
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            while (await call.ResponseStream.MoveNext(wait.Token))
            {
            }
        }
        catch (RpcException e)
        {
            return e.Status;
        }
        catch (Exception e) when (e is InvalidOperationException or OperationCanceledException or IOException)
        {
        }

        try
        {
            return call.GetStatus();
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>Seals <paramref name="body"/> to <paramref name="recipient"/> and sends it through the server.</summary>
    public async Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken)
    {
        if (body.TimestampUnixMs == 0)
        {
            body = body.Clone();
            body.TimestampUnixMs = _time.GetUtcNow().ToUnixTimeMilliseconds();
        }

        var sealedBody = Envelope.Seal(_identity, recipient, Envelope.Purposes.Signal, body.ToByteArray());
        var frame = new SignalFrame
        {
            Message = new SignalMessage
            {
                Recipient = ByteString.CopyFrom(recipient.ToArray()),
                Body = ByteString.CopyFrom(sealedBody),
            },
        };
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await _call.RequestStream.WriteAsync(frame, cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private static async Task<SignalFrame> ReadFrameAsync(AsyncDuplexStreamingCall<SignalFrame, SignalFrame> call, SignalFrame.KindOneofCase expected, CancellationToken cancellationToken)
    {
        if (!await call.ResponseStream.MoveNext(cancellationToken))
        {
            throw new InvalidDataException($"The signal server closed the stream before sending {expected}.");
        }

        var frame = call.ResponseStream.Current;
        return frame.KindCase == expected ? frame : throw new InvalidDataException($"The signal server sent {frame.KindCase}, expected {expected}.");
    }

    private async Task ReadLoopAsync()
    {
        Exception? error = null;
        try
        {
            while (await _call.ResponseStream.MoveNext(_stop.Token))
            {
                var frame = _call.ResponseStream.Current;
                SignalInbound? inbound = frame.KindCase switch
                {
                    SignalFrame.KindOneofCase.Message => TryOpen(frame.Message),
                    SignalFrame.KindOneofCase.DeliveryError when frame.DeliveryError.Recipient.Length == WgKey.Size =>
                        new SignalInbound(new WgKey(frame.DeliveryError.Recipient.Span), null, frame.DeliveryError.Reason),
                    _ => null,
                };
                if (inbound is not null)
                {
                    await _inbound.Writer.WriteAsync(inbound, _stop.Token);
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && _stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            error = e;
        }

        _inbound.Writer.TryComplete(error);
    }

    private SignalInbound? TryOpen(SignalMessage message)
    {
        if (message.Sender.Length != WgKey.Size
            || !Envelope.TryOpen(_identity, new WgKey(message.Sender.Span), Envelope.Purposes.Signal, message.Body.Span, out var plaintext))
        {
            Interlocked.Increment(ref _rejected);
            return null;
        }

        SignalBody body;
        try
        {
            body = SignalBody.Parser.ParseFrom(plaintext);
        }
        catch (InvalidProtocolBufferException)
        {
            Interlocked.Increment(ref _rejected);
            return null;
        }

        // Sealed by the sender, but maybe long ago: an old offer replayed would restart a working connection.
        if (!IsFresh(body, _time.GetUtcNow()))
        {
            Interlocked.Increment(ref _stale);
            return null;
        }

        return new SignalInbound(new WgKey(message.Sender.Span), body, null);
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

        try
        {
            await _call.RequestStream.CompleteAsync();

            // Close, don't reset: the server ends the call once it has read the end of what was sent. Cancelling the call at
            // once resets the stream, and the server drops every frame its service has not read yet, such as the goodbye a
            // stopping agent sends last (its peers then keep routing to it until they notice the silence). Bounded: a
            // server that does not answer is reset after CloseWait.
            await _reader.WaitAsync(CloseWait, _time);
        }
        catch (Exception e) when (e is RpcException or InvalidOperationException or ObjectDisposedException or TimeoutException)
        {
            // Already broken or completed, or the server did not end the call in time.
        }

        await _stop.CancelAsync();
        _call.Dispose();
        await _reader;
        _stop.Dispose();
        _writeLock.Dispose();
    }
}
