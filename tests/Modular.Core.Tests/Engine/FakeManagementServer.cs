using System.Collections.Concurrent;
using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Core.Tests.Routing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Management in process, as the engine's <see cref="ManagementClient"/> calls it (a <see cref="CallInvoker"/>): it
/// announces <see cref="AnnouncedKey"/>, seals its replies with <paramref name="serverKey"/>, logs every agent in, and
/// on each Sync stream sends <see cref="Map"/> and then does what <see cref="AfterMap"/> says. Records the calls made.
/// </summary>
internal sealed class FakeManagementServer(X25519KeyPair serverKey) : CallInvoker
{
    public ConcurrentQueue<string> Calls { get; } = new();

    /// <summary>The key GetServerKey announces (by default the one replies are sealed with).</summary>
    public WgKey AnnouncedKey { get; set; } = serverKey.PublicKey;

    public NetworkMap Map { get; set; } = RouteMaps.Map();

    /// <summary>Whether the n-th Sync stream (from 1) sends <see cref="Map"/> at all (false: a server slow to send it).</summary>
    public Func<int, bool> SendsMap { get; set; } = _ => true;

    /// <summary>
    /// What the n-th Sync stream (from 1) does once the map is sent, given the Sync request: throw the exception
    /// returned, or (null) wait until the agent goes away.
    /// </summary>
    public Func<int, EncryptedMessage, Exception?> AfterMap { get; set; } = (_, _) => null;

    public int Count(string method) => Calls.Count(c => c == method);

    public override TResponse BlockingUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
        => throw new NotSupportedException();

    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        Calls.Enqueue(method.Name);
        object reply = method.Name switch
        {
            "GetServerKey" => new ServerKeyResponse { Key = ByteString.CopyFrom(AnnouncedKey.ToArray()) },
            "Login" => Seal((EncryptedMessage)(object)request!, new LoginResponse { PeerConfig = new PeerConfig { Address = "100.64.0.1/10" }, Services = new ServiceAddresses() }),
            _ => throw new RpcException(new Grpc.Core.Status(StatusCode.Unimplemented, method.Name)),
        };
        return new AsyncUnaryCall<TResponse>(Task.FromResult((TResponse)reply), Task.FromResult(new Metadata()), () => Grpc.Core.Status.DefaultSuccess, () => [], () => { });
    }

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options, TRequest request)
    {
        Calls.Enqueue(method.Name);
        var sync = (EncryptedMessage)(object)request!;
        var n = Count("Sync");
        var reader = new SyncStream(SendsMap(n) ? Seal(sync, new SyncResponse { NetworkMap = Map }) : null, AfterMap(n, sync), options.CancellationToken);
        return new AsyncServerStreamingCall<TResponse>((IAsyncStreamReader<TResponse>)(object)reader, Task.FromResult(new Metadata()), () => Grpc.Core.Status.DefaultSuccess, () => [], () => { });
    }

    public override AsyncClientStreamingCall<TRequest, TResponse> AsyncClientStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options)
        => throw new NotSupportedException();

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string? host, CallOptions options)
        => throw new NotSupportedException();

    private EncryptedMessage Seal(EncryptedMessage request, IMessage reply) => new()
    {
        WgPubKey = ByteString.CopyFrom(serverKey.PublicKey.ToArray()),
        Body = ByteString.CopyFrom(Envelope.Seal(serverKey, new WgKey(request.WgPubKey.Span), Envelope.Purposes.Management, reply.ToByteArray())),
    };

    /// <summary>One map, then the end the test chose.</summary>
    private sealed class SyncStream(EncryptedMessage? map, Exception? end, CancellationToken callToken) : IAsyncStreamReader<EncryptedMessage>
    {
        private int _read;

        public EncryptedMessage Current { get; private set; } = new();

        public async Task<bool> MoveNext(CancellationToken cancellationToken)
        {
            if (_read++ == 0 && map is not null)
            {
                Current = map;
                return true;
            }

            if (end is not null)
            {
                throw end;
            }

            using var both = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, callToken);
            await Task.Delay(Timeout.Infinite, both.Token);
            return false;
        }
    }
}
