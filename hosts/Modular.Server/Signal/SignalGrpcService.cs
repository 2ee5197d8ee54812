using System.Security.Cryptography;
using System.Threading.Channels;
using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Signal;
using Modular.Server.Hosting;
using Modular.Server.Store;

namespace Modular.Server.Signal;

/// <summary>
/// The signal exchange. A connection proves possession of its WireGuard private key by sealing a fresh
/// server challenge to the server key; from then on its messages are routed by recipient key with the
/// sender set to the proven key. Bodies are end-to-end sealed between the peers: the server only
/// sees ciphertext and cannot forge a body.
/// </summary>
public sealed class SignalGrpcService : SignalExchange.SignalExchangeBase
{
    /// <summary>Largest sealed body accepted (offers carry candidates and a Rosenpass fingerprint, never a key).</summary>
    public const int MaxBodySize = 16 * 1024;

    /// <summary>
    /// A stream must have proven its key within this time (Hello, then Proof): an unauthenticated stream holds
    /// server resources and is closed with DeadlineExceeded.
    /// </summary>
    public static readonly TimeSpan AuthenticationTimeout = TimeSpan.FromSeconds(10);

    private readonly ISignalRouter _router;
    private readonly ServerSecrets _secrets;
    private readonly IStore _store;
    private readonly ILogger<SignalGrpcService> _logger;
    private readonly TimeProvider _time;

    private readonly Management.NetworkState? _network;
    private readonly Management.PeerSessions<SignalGrpcService> _sessions;
    private readonly Metrics.ServerCounters _counters;

    /// <param name="services">Gives the management <see cref="Management.NetworkState"/> when it runs in this process,
    /// so a removed or expired peer's signal stream is closed at once.</param>
    /// <param name="sessions">One signal stream per key: the same agent's newer one replaces it, another agent's is refused.</param>
    public SignalGrpcService(ISignalRouter router, ServerSecrets secrets, IStore store, TimeProvider time, ILogger<SignalGrpcService> logger, IServiceProvider services, Management.PeerSessions<SignalGrpcService> sessions, Metrics.ServerCounters counters)
    {
        _counters = counters;
        _sessions = sessions;
        _time = time;
        _network = services.GetService(typeof(Management.NetworkState)) as Management.NetworkState;
        _router = router;
        _secrets = secrets;
        _store = store;
        _logger = logger;
    }

    public override async Task Connect(IAsyncStreamReader<SignalFrame> requestStream, IServerStreamWriter<SignalFrame> responseStream, ServerCallContext context)
    {
        var (peer, instanceId) = await AuthenticateAsync(requestStream, responseStream, context.CancellationToken);
        using var session = _sessions.Open(peer, instanceId, context.Peer, context.CancellationToken);
        var ct = session.Token;
        var record = await _store.GetPeerAsync(peer, ct)
            ?? throw new RpcException(new Status(StatusCode.PermissionDenied, "this key is not registered with management"));
        if (record.IsExpired(_time.GetUtcNow()))
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "this peer's login has expired; register again with a setup key"));
        }

        // One writer drains this outbox, so routed messages and delivery errors never write the stream concurrently.
        var outbox = Channel.CreateBounded<SignalFrame>(new BoundedChannelOptions(256) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        using var attachment = _router.Attach(peer, message => outbox.Writer.TryWrite(new SignalFrame { Message = message }));
        await responseStream.WriteAsync(new SignalFrame { Ready = new Ready() }, ct);
        _logger.LogInformation("Signal connected: {Peer}", peer.ToShortString());

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var revoked = false;
        var watcher = _network is null ? Task.CompletedTask : Task.Run(
            async () =>
            {
                using var subscription = _network.Subscribe();
                try
                {
                    await foreach (var snapshot in subscription.Reader.ReadAllAsync(stop.Token))
                    {
                        var self = snapshot.Peers.FirstOrDefault(p => p.PublicKey == peer);
                        if (self is null || self.IsExpired(_time.GetUtcNow()))
                        {
                            revoked = true;
                            await stop.CancelAsync();
                            return;
                        }
                    }
                }
                catch (OperationCanceledException)
                {
                }
            },
            CancellationToken.None);
        var writer = Task.Run(
            async () =>
            {
                await foreach (var frame in outbox.Reader.ReadAllAsync(stop.Token))
                {
                    await responseStream.WriteAsync(frame, stop.Token);
                }
            },
            CancellationToken.None);
        try
        {
            var senderBytes = ByteString.CopyFrom(peer.ToArray());
            while (await requestStream.MoveNext(stop.Token))
            {
                var frame = requestStream.Current;
                if (frame.KindCase != SignalFrame.KindOneofCase.Message)
                {
                    continue;
                }

                var message = frame.Message;
                if (message.Recipient.Length != WgKey.Size || message.Body.Length < Envelope.Overhead || message.Body.Length > MaxBodySize)
                {
                    outbox.Writer.TryWrite(Error(message.Recipient, "malformed message: recipient must be 32 bytes and body a sealed box of at most 16 KiB"));
                    continue;
                }

                // Never trust the client's claim: the sender is who proved their key on this stream.
                message.Sender = senderBytes;
                var delivered = await _router.RouteAsync(message, stop.Token);
                _counters.SignalRouted(delivered);
                if (!delivered)
                {
                    outbox.Writer.TryWrite(Error(message.Recipient, "recipient is not connected to signal"));
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (IOException) when (stop.IsCancellationRequested)
        {
        }
        finally
        {
            outbox.Writer.TryComplete();
            await stop.CancelAsync();
            await watcher;
            try
            {
                await writer;
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or InvalidOperationException)
            {
                // The stream ended while a frame was queued.
            }

            _logger.LogInformation("Signal disconnected: {Peer}", peer.ToShortString());
        }

        if (revoked)
        {
            throw new RpcException(new Status(StatusCode.PermissionDenied, "this peer was removed or its login expired"));
        }
    }

    private async Task<(WgKey Peer, string InstanceId)> AuthenticateAsync(IAsyncStreamReader<SignalFrame> requestStream, IServerStreamWriter<SignalFrame> responseStream, CancellationToken callToken)
    {
        using var deadline = new CancellationTokenSource(AuthenticationTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(callToken, deadline.Token);
        try
        {
            return await AuthenticateWithinAsync(requestStream, responseStream, linked.Token);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !callToken.IsCancellationRequested)
        {
            throw new RpcException(new Status(StatusCode.DeadlineExceeded, $"no Hello and Proof within {AuthenticationTimeout.TotalSeconds:0} s"));
        }
    }

    private async Task<(WgKey Peer, string InstanceId)> AuthenticateWithinAsync(IAsyncStreamReader<SignalFrame> requestStream, IServerStreamWriter<SignalFrame> responseStream, CancellationToken ct)
    {
        if (!await requestStream.MoveNext(ct) || requestStream.Current.KindCase != SignalFrame.KindOneofCase.Hello
            || requestStream.Current.Hello.WgPubKey.Length != WgKey.Size)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "the first frame must be Hello with a 32-byte wg_pub_key"));
        }

        var peer = new WgKey(requestStream.Current.Hello.WgPubKey.Span);
        var instanceId = requestStream.Current.Hello.InstanceId;
        var nonce = RandomNumberGenerator.GetBytes(32);
        await responseStream.WriteAsync(
            new SignalFrame
            {
                Challenge = new Challenge { Nonce = ByteString.CopyFrom(nonce), ServerKey = ByteString.CopyFrom(_secrets.ServerKey.PublicKey.ToArray()) },
            },
            ct);
        if (!await requestStream.MoveNext(ct) || requestStream.Current.KindCase != SignalFrame.KindOneofCase.Proof
            || !Envelope.TryOpen(_secrets.ServerKey, peer, Envelope.Purposes.SignalAuth, requestStream.Current.Proof.Box.Span, out var echoed, nonce)
            || !CryptographicOperations.FixedTimeEquals(echoed, nonce))
        {
            _logger.LogWarning("Signal authentication failed for {Peer}", peer.ToShortString());
            throw new RpcException(new Status(StatusCode.Unauthenticated, "the proof does not verify against wg_pub_key"));
        }

        return (peer, instanceId);
    }

    private static SignalFrame Error(ByteString recipient, string reason) => new() { DeliveryError = new DeliveryError { Recipient = recipient, Reason = reason } };
}
