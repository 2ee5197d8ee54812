using System.Net;
using System.Net.Sockets;
using Modular.Control.Crypto;
using Modular.Control.Relay;

namespace Modular.Server.Tests;

public sealed class RelayTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    private static async Task<(X25519KeyPair Key, byte[] Token)> RegisteredAsync(TestServer server, string name)
    {
        var (key, client) = server.NewAgent();
        var reply = await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta(name), CancellationToken.None);
        return (key, reply.Services.RelayToken.ToByteArray());
    }

    [Fact]
    public async Task Two_peers_exchange_datagrams_through_the_relay()
    {
        await using var server = await TestServer.StartAsync();
        var (a, tokenA) = await RegisteredAsync(server, "a");
        var (b, tokenB) = await RegisteredAsync(server, "b");
        using var _ = a;
        using var __ = b;
        using var cts = new CancellationTokenSource(Wait);
        var relay = server.Relay.LocalEndPoint!;

        await using var connA = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, tokenA, cts.Token);
        Assert.False(connA.IsPaired);
        await using var connB = await RelayClient.ConnectAsync(relay, b.PublicKey, a.PublicKey, tokenB, cts.Token);
        Assert.True(connB.IsPaired);

        var buffer = new byte[2048];
        var payload = Enumerable.Range(0, 1400).Select(i => (byte)i).ToArray();
        await connA.SendAsync(payload, cts.Token);
        var n = await connB.ReceiveAsync(buffer, cts.Token);
        Assert.Equal(payload, buffer.AsSpan(0, n).ToArray());

        await connB.SendAsync("pong"u8.ToArray(), cts.Token);
        n = await connA.ReceiveAsync(buffer, cts.Token);
        Assert.Equal("pong"u8.ToArray(), buffer.AsSpan(0, n).ToArray());
        Assert.True(connA.IsPaired);
        Assert.Equal(2, server.Relay.ForwardedPackets);
    }

    [Fact]
    public async Task Wrong_token_is_rejected_and_unauthenticated_sources_get_nothing_forwarded()
    {
        await using var server = await TestServer.StartAsync();
        var (a, tokenA) = await RegisteredAsync(server, "a");
        var (b, tokenB) = await RegisteredAsync(server, "b");
        using var _ = a;
        using var __ = b;
        using var mallory = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var relay = server.Relay.LocalEndPoint!;

        // Mallory presents A's token for her own key: refused.
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => RelayClient.ConnectAsync(relay, mallory.PublicKey, b.PublicKey, tokenA, cts.Token));
        // A forged token: refused.
        var forged = RelayToken.Issue(new byte[32], mallory.PublicKey, DateTimeOffset.UtcNow.AddHours(1));
        await Assert.ThrowsAsync<UnauthorizedAccessException>(() => RelayClient.ConnectAsync(relay, mallory.PublicKey, b.PublicKey, forged, cts.Token));
        Assert.True(server.Relay.RejectedBinds >= 2);

        await using var connB = await RelayClient.ConnectAsync(relay, b.PublicKey, a.PublicKey, tokenB, cts.Token);

        // A raw socket that never bound sends data frames "to B": dropped.
        using var raw = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        raw.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        for (var i = 0; i < 5; i++)
        {
            await raw.SendToAsync(new byte[] { RelayProtocol.Data, 0xde, 0xad }, SocketFlags.None, relay);
        }

        // A bound peer whose partner has not bound is not forwarded either.
        using var c = X25519KeyPair.Generate();
        await using var connA = await RelayClient.ConnectAsync(relay, a.PublicKey, c.PublicKey, tokenA, cts.Token);
        await connA.SendAsync("unpaired"u8.ToArray(), cts.Token);

        // Then the genuine pair: the first thing B receives is A's genuine datagram, not the junk.
        await using var connA2 = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, tokenA, cts.Token);
        await connA2.SendAsync("genuine"u8.ToArray(), cts.Token);
        var buffer = new byte[2048];
        var n = await connB.ReceiveAsync(buffer, cts.Token);
        Assert.Equal("genuine"u8.ToArray(), buffer.AsSpan(0, n).ToArray());
        Assert.True(server.Relay.Dropped >= 6);
        // The relay counts a packet once sendmmsg returns, which can be just after B has it: wait (bounded by cts).
        while (server.Relay.ForwardedPackets == 0)
        {
            await Task.Delay(20, cts.Token);
        }

        Assert.Equal(1, server.Relay.ForwardedPackets);
    }

    [Fact]
    public void Tokens_verify_only_for_their_key_secret_and_lifetime()
    {
        var secret = new byte[32];
        secret[0] = 7;
        using var peer = X25519KeyPair.Generate();
        using var other = X25519KeyPair.Generate();
        var now = DateTimeOffset.UtcNow;
        var token = RelayToken.Issue(secret, peer.PublicKey, now.AddMinutes(5));
        Assert.True(RelayToken.Verify(secret, peer.PublicKey, token, now));
        Assert.False(RelayToken.Verify(secret, other.PublicKey, token, now));
        Assert.False(RelayToken.Verify(new byte[32], peer.PublicKey, token, now));
        Assert.False(RelayToken.Verify(secret, peer.PublicKey, token, now.AddMinutes(6)));
        token[^1] ^= 1;
        Assert.False(RelayToken.Verify(secret, peer.PublicKey, token, now));
        Assert.False(RelayToken.Verify(secret, peer.PublicKey, token.AsSpan(0, 10), now));
    }
}

/// <summary>The relay on its own, with a fake clock, for session lifecycle rules.</summary>
public sealed class RelaySessionTests : IAsyncLifetime
{
    private readonly string _dir = TestServer.NewDataDir();
    private readonly Microsoft.Extensions.Time.Testing.FakeTimeProvider _time = new(DateTimeOffset.UtcNow);
    private Modular.Server.Hosting.ServerSecrets _secrets = null!;
    private Modular.Server.Relay.RelayServer _relay = null!;

    public async Task InitializeAsync()
    {
        _secrets = Modular.Server.Hosting.ServerSecrets.LoadOrCreate(_dir);
        _relay = new Modular.Server.Relay.RelayServer(
            new IPEndPoint(IPAddress.Loopback, 0), _secrets, _time,
            Microsoft.Extensions.Logging.Abstractions.NullLogger<Modular.Server.Relay.RelayServer>.Instance,
            new Modular.Server.Relay.RelayOptions(MaxSessionsPerKey: 2, IdleTimeout: TimeSpan.FromSeconds(30)));
        await _relay.StartAsync(default);
    }

    public async Task DisposeAsync()
    {
        await _relay.StopAsync(default);
        _relay.Dispose();
        _secrets.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private byte[] Token(Modular.Abstractions.WireGuard.WgKey key) => RelayToken.Issue(_secrets.RelaySecret, key, _time.GetUtcNow().AddMinutes(10));

    [Fact]
    public async Task A_peer_that_moves_to_a_new_port_keeps_receiving()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var relay = _relay.LocalEndPoint!;
        await using var oldA = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, Token(a.PublicKey), cts.Token);
        await using var connB = await RelayClient.ConnectAsync(relay, b.PublicKey, a.PublicKey, Token(b.PublicKey), cts.Token);
        // Same pair from a new socket (NAT rebinding): the relay follows.
        await using var newA = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, Token(a.PublicKey), cts.Token);
        Assert.True(newA.IsPaired);
        Assert.Equal(2, _relay.SessionCount);

        await connB.SendAsync("to-new"u8.ToArray(), cts.Token);
        var buffer = new byte[64];
        var n = await newA.ReceiveAsync(buffer, cts.Token);
        Assert.Equal("to-new"u8.ToArray(), buffer.AsSpan(0, n).ToArray());
    }

    [Fact]
    public async Task Idle_sessions_expire_and_then_nothing_is_forwarded()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var relay = _relay.LocalEndPoint!;
        // Keepalives far apart so only the fake clock decides.
        await using var connA = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, Token(a.PublicKey), cts.Token, TimeSpan.FromHours(1));
        await using var connB = await RelayClient.ConnectAsync(relay, b.PublicKey, a.PublicKey, Token(b.PublicKey), cts.Token, TimeSpan.FromHours(1));
        Assert.Equal(2, _relay.SessionCount);

        _time.Advance(TimeSpan.FromMinutes(2));
        while (_relay.SessionCount > 0)
        {
            await Task.Delay(50, cts.Token); // the relay thread sweeps at least once a second
        }

        var forwarded = _relay.ForwardedPackets;
        await connA.SendAsync("late"u8.ToArray(), cts.Token);
        await connB.SendAsync("late"u8.ToArray(), cts.Token);
        // Rebinding brings it back: the next datagram is forwarded, the late ones never were.
        await using var again = await RelayClient.ConnectAsync(relay, a.PublicKey, b.PublicKey, Token(a.PublicKey), cts.Token);
        await using var againB = await RelayClient.ConnectAsync(relay, b.PublicKey, a.PublicKey, Token(b.PublicKey), cts.Token);
        await again.SendAsync("fresh"u8.ToArray(), cts.Token);
        var buffer = new byte[64];
        var n = await againB.ReceiveAsync(buffer, cts.Token);
        Assert.Equal("fresh"u8.ToArray(), buffer.AsSpan(0, n).ToArray());
        Assert.Equal(forwarded + 1, _relay.ForwardedPackets);
    }

    [Fact]
    public async Task One_key_cannot_hold_more_than_its_share_of_sessions()
    {
        using var a = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var relay = _relay.LocalEndPoint!;
        var others = Enumerable.Range(0, 3).Select(_ => X25519KeyPair.Generate()).ToList();
        try
        {
            await using var one = await RelayClient.ConnectAsync(relay, a.PublicKey, others[0].PublicKey, Token(a.PublicKey), cts.Token);
            await using var two = await RelayClient.ConnectAsync(relay, a.PublicKey, others[1].PublicKey, Token(a.PublicKey), cts.Token);
            var e = await Assert.ThrowsAsync<UnauthorizedAccessException>(() => RelayClient.ConnectAsync(relay, a.PublicKey, others[2].PublicKey, Token(a.PublicKey), cts.Token));
            Assert.Contains("Full", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            others.ForEach(k => k.Dispose());
        }
    }
}

public sealed class RelayedConnectionTests
{
    [Fact]
    public async Task Disposing_ends_a_pending_receive_with_zero()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;
        using var other = X25519KeyPair.Generate();
        var token = (await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("r"), default)).Services.RelayToken.ToByteArray();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var conn = await RelayClient.ConnectAsync(server.Relay.LocalEndPoint!, key.PublicKey, other.PublicKey, token, cts.Token);
        var pending = conn.ReceiveAsync(new byte[64], cts.Token).AsTask();
        await conn.DisposeAsync();
        Assert.Equal(0, await pending.WaitAsync(cts.Token));
        Assert.Equal(0, await conn.ReceiveAsync(new byte[64], cts.Token));
    }
}
