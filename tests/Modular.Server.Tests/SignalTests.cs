using Google.Protobuf;
using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Signal;
using Modular.Server.Signal;

namespace Modular.Server.Tests;

public sealed class SignalTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    /// <summary>Sits between the service and the real router: records what the server sees, optionally rewrites it.</summary>
    private sealed class InterceptingRouter(Func<SignalMessage, SignalMessage>? rewrite = null) : ISignalRouter
    {
        private readonly InProcessSignalRouter _inner = new();

        public List<byte[]> SeenBodies { get; } = [];

        public IDisposable Attach(WgKey peer, Func<SignalMessage, bool> deliver) => _inner.Attach(peer, deliver);

        public ValueTask<bool> RouteAsync(SignalMessage message, CancellationToken cancellationToken)
        {
            lock (SeenBodies)
            {
                SeenBodies.Add(message.Body.ToByteArray());
            }

            return _inner.RouteAsync(rewrite?.Invoke(message.Clone()) ?? message, cancellationToken);
        }
    }

    private static async Task<X25519KeyPair> RegisteredAsync(TestServer server, string name)
    {
        var (key, client) = server.NewAgent();
        await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta(name), CancellationToken.None);
        return key;
    }

    private static SignalBody Offer() => new()
    {
        Type = SignalBody.Types.Type.Offer,
        Ufrag = "ufrag-secret-marker",
        Pwd = "pwd-1234567890",
        Candidates = { "198.18.0.1:51820", "100.64.0.9:51820" },
        SessionId = 42,
    };

    [Fact]
    public async Task Two_peers_exchange_an_offer_and_the_server_sees_only_ciphertext()
    {
        var router = new InterceptingRouter();
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton<ISignalRouter>(router));
        using var a = await RegisteredAsync(server, "a");
        using var b = await RegisteredAsync(server, "b");
        using var cts = new CancellationTokenSource(Wait);
        await using var clientA = await SignalClient.ConnectAsync(server.Channel(), a, cts.Token);
        await using var clientB = await SignalClient.ConnectAsync(server.Channel(), b, cts.Token);

        await clientA.SendAsync(b.PublicKey, Offer(), cts.Token);
        var received = await clientB.Inbound.ReadAsync(cts.Token);

        Assert.Equal(a.PublicKey, received.Peer);
        Assert.NotNull(received.Body);
        Assert.Equal(SignalBody.Types.Type.Offer, received.Body.Type);
        Assert.Equal("ufrag-secret-marker", received.Body.Ufrag);
        Assert.Equal(["198.18.0.1:51820", "100.64.0.9:51820"], received.Body.Candidates);

        // The answer goes back the other way.
        await clientB.SendAsync(a.PublicKey, new SignalBody { Type = SignalBody.Types.Type.Answer, Ufrag = "answer", SessionId = 42 }, cts.Token);
        var answer = await clientA.Inbound.ReadAsync(cts.Token);
        Assert.Equal(b.PublicKey, answer.Peer);
        Assert.Equal(SignalBody.Types.Type.Answer, answer.Body!.Type);

        var marker = System.Text.Encoding.UTF8.GetBytes("ufrag-secret-marker");
        lock (router.SeenBodies)
        {
            Assert.NotEmpty(router.SeenBodies);
            Assert.All(router.SeenBodies, body => Assert.True(body.AsSpan().IndexOf(marker) < 0, "the server saw plaintext"));
        }
    }

    [Fact]
    public async Task Item11_signal_bodies_older_than_two_minutes_or_from_the_future_are_dropped()
    {
        await using var server = await TestServer.StartAsync();
        using var a = await RegisteredAsync(server, "a");
        using var b = await RegisteredAsync(server, "b");
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow);
        using var cts = new CancellationTokenSource(Wait);
        await using var clientA = await SignalClient.ConnectAsync(server.Channel(), a, cts.Token);
        await using var clientB = await SignalClient.ConnectAsync(server.Channel(), b, cts.Token, time: clock);

        // Each as A sealed it at that time (a replay carries the time of the original, sealed with it).
        var now = clock.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var (sealedAt, ufrag) in new[] { (now - 121_000, "replayed"), (now + 31_000, "future"), (now - 119_000, "late"), (now + 29_000, "skewed") })
        {
            var offer = Offer();
            offer.Ufrag = ufrag;
            offer.TimestampUnixMs = sealedAt;
            await clientA.SendAsync(b.PublicKey, offer, cts.Token);
        }

        var marker = Offer();
        marker.Ufrag = "marker";
        await clientA.SendAsync(b.PublicKey, marker, cts.Token);

        // In order: within two minutes back and 30 s ahead only.
        Assert.Equal("late", (await clientB.Inbound.ReadAsync(cts.Token)).Body!.Ufrag);
        Assert.Equal("skewed", (await clientB.Inbound.ReadAsync(cts.Token)).Body!.Ufrag);
        Assert.Equal("marker", (await clientB.Inbound.ReadAsync(cts.Token)).Body!.Ufrag);
        Assert.Equal(2, clientB.StaleCount);
        Assert.Equal(0, clientB.RejectedCount);
    }

    [Fact]
    public async Task A_body_sealed_by_a_third_key_is_rejected_by_the_recipient()
    {
        using var a = X25519KeyPair.Generate();
        using var mallory = X25519KeyPair.Generate();
        WgKey? bKey = null;
        // A compromised server claims the message came from A, but Mallory sealed it.
        var router = new InterceptingRouter(m =>
        {
            var forged = Envelope.Seal(mallory, bKey!.Value, Envelope.Purposes.Signal, new SignalBody { Type = SignalBody.Types.Type.GoIdle }.ToByteArray());
            m.Sender = ByteString.CopyFrom(a.PublicKey.ToArray());
            m.Body = ByteString.CopyFrom(forged);
            return m;
        });
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton<ISignalRouter>(router));
        using var b = await RegisteredAsync(server, "b");
        using var c = await RegisteredAsync(server, "c");
        bKey = b.PublicKey;
        using var cts = new CancellationTokenSource(Wait);
        await using var clientB = await SignalClient.ConnectAsync(server.Channel(), b, cts.Token);
        await using var clientC = await SignalClient.ConnectAsync(server.Channel(), c, cts.Token);

        await clientC.SendAsync(b.PublicKey, Offer(), cts.Token);
        await WaitUntilAsync(() => clientB.RejectedCount > 0, cts.Token);
        Assert.Equal(1, clientB.RejectedCount);
        Assert.False(clientB.Inbound.TryRead(out _));
    }

    [Fact]
    public async Task A_tampered_body_is_rejected_and_the_next_genuine_one_still_arrives()
    {
        var tamperNext = 1;
        var router = new InterceptingRouter(m =>
        {
            if (Interlocked.Exchange(ref tamperNext, 0) == 1)
            {
                var body = m.Body.ToByteArray();
                body[^5] ^= 0x01;
                m.Body = ByteString.CopyFrom(body);
            }

            return m;
        });
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton<ISignalRouter>(router));
        using var a = await RegisteredAsync(server, "a");
        using var b = await RegisteredAsync(server, "b");
        using var cts = new CancellationTokenSource(Wait);
        await using var clientA = await SignalClient.ConnectAsync(server.Channel(), a, cts.Token);
        await using var clientB = await SignalClient.ConnectAsync(server.Channel(), b, cts.Token);

        await clientA.SendAsync(b.PublicKey, Offer(), cts.Token);
        await clientA.SendAsync(b.PublicKey, new SignalBody { Type = SignalBody.Types.Type.Candidate, Candidates = { "198.18.0.7:1" } }, cts.Token);
        var genuine = await clientB.Inbound.ReadAsync(cts.Token);
        Assert.Equal(SignalBody.Types.Type.Candidate, genuine.Body!.Type);
        Assert.Equal(1, clientB.RejectedCount);
    }

    /// <summary>Holds the first message it routes until its sender's stream is aborted or a moment passes: a busy server.</summary>
    private sealed class SlowFirstRouter : ISignalRouter
    {
        private readonly InProcessSignalRouter _inner = new();
        private int _held;

        public IDisposable Attach(WgKey peer, Func<SignalMessage, bool> deliver) => _inner.Attach(peer, deliver);

        public async ValueTask<bool> RouteAsync(SignalMessage message, CancellationToken cancellationToken)
        {
            if (Interlocked.Exchange(ref _held, 1) == 0)
            {
                // Released at once when the sender resets its stream (the defect), else after half a second.
                var aborted = new TaskCompletionSource();
                using (cancellationToken.Register(() => aborted.TrySetResult()))
                {
                    await Task.WhenAny(aborted.Task, Task.Delay(TimeSpan.FromMilliseconds(500), CancellationToken.None));
                }
            }

            return await _inner.RouteAsync(message, CancellationToken.None);
        }
    }

    [Fact]
    public async Task A_message_sent_just_before_the_client_closes_is_delivered_though_the_server_has_not_read_it_yet()
    {
        // What a stopping agent does: its goodbye is the last thing it sends, then it closes the stream at once. The
        // server is still busy with an earlier message, so the goodbye waits unread on the stream. Closing must let the
        // server read it: a reset stream loses it, and the peer keeps routing through an agent that is gone.
        await using var server = await TestServer.StartAsync(services: s => s.AddSingleton<ISignalRouter>(new SlowFirstRouter()));
        using var a = await RegisteredAsync(server, "a");
        using var b = await RegisteredAsync(server, "b");
        using var cts = new CancellationTokenSource(Wait);
        await using var clientB = await SignalClient.ConnectAsync(server.Channel(), b, cts.Token);
        var clientA = await SignalClient.ConnectAsync(server.Channel(), a, cts.Token);

        await clientA.SendAsync(b.PublicKey, Offer(), cts.Token);
        await clientA.SendAsync(b.PublicKey, new SignalBody { Type = SignalBody.Types.Type.Goodbye, SessionId = 42 }, cts.Token);
        await clientA.DisposeAsync();

        Assert.Equal(SignalBody.Types.Type.Offer, (await clientB.Inbound.ReadAsync(cts.Token)).Body!.Type);
        var last = await clientB.Inbound.ReadAsync(cts.Token);
        Assert.Equal(a.PublicKey, last.Peer);
        Assert.Equal(SignalBody.Types.Type.Goodbye, last.Body!.Type);
    }

    [Fact]
    public async Task Sending_to_an_absent_peer_returns_a_delivery_error()
    {
        await using var server = await TestServer.StartAsync();
        using var a = await RegisteredAsync(server, "a");
        using var absent = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        await using var clientA = await SignalClient.ConnectAsync(server.Channel(), a, cts.Token);
        await clientA.SendAsync(absent.PublicKey, Offer(), cts.Token);
        var error = await clientA.Inbound.ReadAsync(cts.Token);
        Assert.Equal(absent.PublicKey, error.Peer);
        Assert.Null(error.Body);
        Assert.Contains("not connected", error.DeliveryError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unregistered_keys_and_bad_proofs_are_refused()
    {
        await using var server = await TestServer.StartAsync();
        using var stranger = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var refused = await Assert.ThrowsAsync<RpcException>(() => SignalClient.ConnectAsync(server.Channel(), stranger, cts.Token));
        Assert.Equal(StatusCode.PermissionDenied, refused.StatusCode);

        // Claim a registered key but prove with another.
        using var a = await RegisteredAsync(server, "a");
        using var impostor = X25519KeyPair.Generate();
        using var call = new SignalExchange.SignalExchangeClient(server.Channel()).Connect(cancellationToken: cts.Token);
        await call.RequestStream.WriteAsync(new SignalFrame { Hello = new Hello { WgPubKey = ByteString.CopyFrom(a.PublicKey.ToArray()) } }, cts.Token);
        Assert.True(await call.ResponseStream.MoveNext(cts.Token));
        var challenge = call.ResponseStream.Current.Challenge;
        var nonce = challenge.Nonce.ToByteArray();
        var proof = Envelope.Seal(impostor, new WgKey(challenge.ServerKey.Span), Envelope.Purposes.SignalAuth, nonce, nonce);
        await call.RequestStream.WriteAsync(new SignalFrame { Proof = new Proof { Box = ByteString.CopyFrom(proof) } }, cts.Token);
        var e = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
    }

    private static async Task WaitUntilAsync(Func<bool> condition, CancellationToken cancellationToken)
    {
        while (!condition())
        {
            await Task.Delay(20, cancellationToken);
        }
    }
}

public sealed class SignalRevocationTests
{
    [Fact]
    public async Task Removing_a_peer_closes_its_signal_stream()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;
        await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("leaver"), CancellationToken.None);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        await using var signal = await SignalClient.ConnectAsync(server.Channel(), key, cts.Token);

        await server.Store.RemovePeersAsync("leaver", CancellationToken.None);

        var closed = await Assert.ThrowsAsync<System.Threading.Channels.ChannelClosedException>(async () => await signal.Inbound.ReadAsync(cts.Token));
        var e = Assert.IsType<RpcException>(closed.InnerException);
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
    }
}
