using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Control.Relay;
using Modular.Control.Stun;
using Modular.Server.Hosting;
using Modular.Server.Management;
using Modular.Server.Relay;
using Modular.Server.Stun;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>Issue 13 item 1: relay credentials are refreshed before they expire and live sessions take them.</summary>
public sealed class RelayTokenRefreshTests
{
    [Fact]
    public async Task Relay_token_is_refreshed_before_it_expires_and_a_live_session_takes_it()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await TestServer.StartAsync(time: time);
        // A relay of its own on the same secrets and clock, with an idle timeout longer than the test's steps.
        using var relay = new RelayServer(new IPEndPoint(IPAddress.Loopback, 0), server.App.Services.GetRequiredService<ServerSecrets>(), time,
            NullLogger.Instance, new RelayOptions(IdleTimeout: TimeSpan.FromHours(2)));
        await relay.StartAsync(default);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var setupKey = await server.CreateSetupKeyAsync();
        var (a, clientA) = server.NewAgent();
        var (b, clientB) = server.NewAgent();
        using var _ = a;
        using var __ = b;
        var credentialsA = RelayCredentials.From((await clientA.RegisterAsync(setupKey, TestServer.Meta("a"), cts.Token)).Services)!;
        var credentialsB = RelayCredentials.From((await clientB.RegisterAsync(setupKey, TestServer.Meta("b"), cts.Token)).Services)!;
        var firstExpiry = credentialsA.ExpiresUnix;
        // Not disposed: a pending MoveNext cannot be; the streams end with cts and the server.
        var syncA = clientA.SyncAsync(TestServer.Meta("a"), cts.Token).GetAsyncEnumerator(cts.Token);
        var syncB = clientB.SyncAsync(TestServer.Meta("b"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await syncA.MoveNextAsync());
        Assert.True(await syncB.MoveNextAsync());
        var nextA = syncA.MoveNextAsync().AsTask();
        var nextB = syncB.MoveNextAsync().AsTask();

        // Keepalives only when the test says (Refresh sends one at once): the fake clock alone decides.
        var never = TimeSpan.FromDays(30);
        await using var connA = await RelayClient.ConnectAsync(relay.LocalEndPoint!, a.PublicKey, b.PublicKey, credentialsA, cts.Token, never, time);
        await using var connB = await RelayClient.ConnectAsync(relay.LocalEndPoint!, b.PublicKey, a.PublicKey, credentialsB, cts.Token, never, time);
        Assert.True(connB.IsPaired);

        for (var hour = 1; hour <= 13; hour++)
        {
            time.Advance(TimeSpan.FromHours(1));
            if (hour == 6)
            {
                // Half-life, and nothing changed in the network: the Sync streams send fresh credentials on their own.
                Assert.True(await nextA.WaitAsync(cts.Token));
                Assert.True(await nextB.WaitAsync(cts.Token));
                credentialsA = RelayCredentials.From(syncA.Current.Services)!;
                credentialsB = RelayCredentials.From(syncB.Current.Services)!;
                Assert.True(credentialsA.ExpiresUnix > firstExpiry);
                Assert.True(credentialsA.Signed);
            }

            // A keepalive each hour (with the newest credentials once they came); the relay takes both.
            var accepted = relay.AcceptedBinds;
            connA.Refresh(credentialsA);
            connB.Refresh(credentialsB);
            while (relay.AcceptedBinds < accepted + 2)
            {
                await Task.Delay(10, cts.Token);
            }
        }

        // 13 h after binding, past the first credentials' expiry: the session lives on and carries data.
        Assert.True(time.GetUtcNow().ToUnixTimeSeconds() > firstExpiry);
        // The relay sweeps (idle and expired sessions) after the batch that follows a fake second: the first datagram
        // brings a sweep about, the second shows the session outlived it.
        time.Advance(TimeSpan.FromSeconds(2));
        var buffer = new byte[64];
        foreach (var payload in new[] { "sweep"u8.ToArray(), "after-12h"u8.ToArray() })
        {
            await connA.SendAsync(payload, cts.Token);
            var n = await connB.ReceiveAsync(buffer, cts.Token);
            Assert.Equal(payload, buffer.AsSpan(0, n).ToArray());
        }

        Assert.Equal(2, relay.SessionCount);
    }

    [Fact]
    public async Task Relay_session_ends_when_its_newest_token_expires()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var dir = TestServer.NewDataDir();
        using var secrets = ServerSecrets.LoadOrCreate(dir);
        try
        {
            using var relay = new RelayServer(new IPEndPoint(IPAddress.Loopback, 0), secrets, time, NullLogger.Instance, new RelayOptions(IdleTimeout: TimeSpan.FromDays(2)));
            await relay.StartAsync(default);
            using var a = X25519KeyPair.Generate();
            using var b = X25519KeyPair.Generate();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await using var connA = await RelayClient.ConnectAsync(relay.LocalEndPoint!, a.PublicKey, b.PublicKey, RelaySecurityTests.Credentials(secrets, a.PublicKey, time), cts.Token, TimeSpan.FromDays(30), time);
            Assert.Equal(1, relay.SessionCount);
            time.Advance(ServiceAddressResolver.RelayTokenLifetime + TimeSpan.FromMinutes(1));
            while (relay.SessionCount > 0)
            {
                await Task.Delay(20, cts.Token); // the relay thread sweeps at least once a second
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}

/// <summary>Issue 13 item 7: signed Binds cannot be replayed or forged, and a refused Bind never removes a session.</summary>
public sealed class RelaySecurityTests : IAsyncLifetime
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly string _dir = TestServer.NewDataDir();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.UtcNow);
    private readonly ListLogger _log = new();
    private readonly List<Socket> _sockets = [];
    private ServerSecrets _secrets = null!;
    private RelayServer _relay = null!;

    public async Task InitializeAsync()
    {
        _secrets = ServerSecrets.LoadOrCreate(_dir);
        _relay = new RelayServer(new IPEndPoint(IPAddress.Loopback, 0), _secrets, _time, _log, new RelayOptions(IdleTimeout: TimeSpan.FromSeconds(30)));
        await _relay.StartAsync(default);
    }

    public async Task DisposeAsync()
    {
        _sockets.ForEach(s => s.Dispose());
        await _relay.StopAsync(default);
        _relay.Dispose();
        _secrets.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>What management hands an agent in its sealed Login/Sync reply.</summary>
    internal static RelayCredentials Credentials(ServerSecrets secrets, WgKey key, TimeProvider time)
    {
        var expires = time.GetUtcNow() + ServiceAddressResolver.RelayTokenLifetime;
        return new RelayCredentials(RelayToken.Issue(secrets.RelaySecret, key, expires), RelayToken.DeriveSecret(secrets.RelaySecret, key, expires.ToUnixTimeSeconds()), expires.ToUnixTimeSeconds());
    }

    private byte[] SignedBind(WgKey own, WgKey remote, ulong counter, RelayCredentials? credentials = null)
    {
        credentials ??= Credentials(_secrets, own, _time);
        var bind = new byte[RelayProtocol.SignedBindSize];
        RelayProtocol.WriteSignedBind(bind, own, remote, credentials.ExpiresUnix, counter, credentials.Secret);
        return bind;
    }

    private Socket NewSocket()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        socket.Connect(_relay.LocalEndPoint!);
        _sockets.Add(socket);
        return socket;
    }

    /// <summary>Sends <paramref name="bind"/> from <paramref name="socket"/> and returns the relay's answer.</summary>
    private static async Task<RelayProtocol.BindStatus> BindAsync(Socket socket, byte[] bind, CancellationToken cancellationToken)
    {
        var reply = new byte[RelayProtocol.MaxDatagram];
        while (socket.Available > 0)
        {
            socket.Receive(reply); // an earlier notice (e.g. "Paired" when the peer bound) is not the answer to this Bind
        }

        await socket.SendAsync(bind, SocketFlags.None, cancellationToken);
        while (true)
        {
            var n = await socket.ReceiveAsync(reply, SocketFlags.None, cancellationToken);
            if (n == RelayProtocol.BoundSize && reply[0] == RelayProtocol.Bound)
            {
                return (RelayProtocol.BindStatus)reply[1];
            }
        }
    }

    /// <summary>The next data datagram <paramref name="socket"/> receives (Bound replies skipped).</summary>
    private static async Task<byte[]> ReceiveDataAsync(Socket socket, CancellationToken cancellationToken)
    {
        var buffer = new byte[RelayProtocol.MaxDatagram];
        while (true)
        {
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (n >= 1 && buffer[0] == RelayProtocol.Data)
            {
                return buffer.AsSpan(1, n - 1).ToArray();
            }
        }
    }

    [Fact]
    public async Task Relay_bind_replayed_from_another_address_is_refused_and_cannot_take_the_session()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var victim = NewSocket();
        var attacker = NewSocket();
        var bind = SignedBind(a.PublicKey, b.PublicKey, 1000);
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(victim, bind, cts.Token));
        await using var connB = await RelayClient.ConnectAsync(_relay.LocalEndPoint!, b.PublicKey, a.PublicKey, Credentials(_secrets, b.PublicKey, _time), cts.Token);

        // The Bind seen on the wire, replayed from the attacker's address: refused, and B's data still goes to A.
        var rejected = _relay.RejectedBinds;
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(attacker, bind, cts.Token));
        Assert.Equal(rejected + 1, _relay.RejectedBinds);
        await connB.SendAsync("to-a"u8.ToArray(), cts.Token);
        Assert.Equal("to-a"u8.ToArray(), await ReceiveDataAsync(victim, cts.Token));

        // Nor once the session went idle and ended: the replay cannot bring it back elsewhere (the quota stays A's).
        _time.Advance(TimeSpan.FromMinutes(2));
        while (_relay.SessionCount > 0)
        {
            await Task.Delay(20, cts.Token); // both sessions idle on the fake clock; the relay sweeps once a second
        }

        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(attacker, bind, cts.Token));
        Assert.Equal(0, _relay.SessionCount);
        // A's own next Bind (a new counter) brings the session back.
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(victim, SignedBind(a.PublicKey, b.PublicKey, 1001), cts.Token));
    }

    [Fact]
    public async Task Relay_forged_bind_with_a_bad_token_or_mac_does_not_remove_the_session()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var victim = NewSocket();
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(victim, SignedBind(a.PublicKey, b.PublicKey, 2000), cts.Token));
        await using var connB = await RelayClient.ConnectAsync(_relay.LocalEndPoint!, b.PublicKey, a.PublicKey, Credentials(_secrets, b.PublicKey, _time), cts.Token);

        // Forged Binds with the victim's source address (spoofed; here simply sent from its socket).
        var badToken = new byte[RelayProtocol.BindSize];
        RelayProtocol.WriteBind(badToken, a.PublicKey, b.PublicKey, RelayToken.Issue(new byte[32], a.PublicKey, _time.GetUtcNow().AddHours(1)));
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(victim, badToken, cts.Token));
        var badMac = SignedBind(a.PublicKey, b.PublicKey, 2001);
        badMac[^1] ^= 1;
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(victim, badMac, cts.Token));
        var wrongSecret = SignedBind(a.PublicKey, b.PublicKey, 2002, new RelayCredentials([], new byte[RelayToken.SecretSize], _time.GetUtcNow().AddHours(1).ToUnixTimeSeconds()));
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(victim, wrongSecret, cts.Token));

        Assert.Equal(2, _relay.SessionCount);
        await connB.SendAsync("still-there"u8.ToArray(), cts.Token);
        Assert.Equal("still-there"u8.ToArray(), await ReceiveDataAsync(victim, cts.Token));
    }

    [Fact]
    public async Task Relay_bind_counter_replay_is_refused()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var socket = NewSocket();
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(socket, SignedBind(a.PublicKey, b.PublicKey, 3000), cts.Token));
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(socket, SignedBind(a.PublicKey, b.PublicKey, 3000), cts.Token));
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(socket, SignedBind(a.PublicKey, b.PublicKey, 2999), cts.Token));
        // The old form cannot take over a signed session either (it carries no counter).
        var old = new byte[RelayProtocol.BindSize];
        RelayProtocol.WriteBind(old, a.PublicKey, b.PublicKey, Credentials(_secrets, a.PublicKey, _time).Token);
        Assert.Equal(RelayProtocol.BindStatus.Rejected, await BindAsync(NewSocket(), old, cts.Token));
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(socket, SignedBind(a.PublicKey, b.PublicKey, 3001), cts.Token));
        Assert.Equal(1, _relay.SessionCount);
    }

    [Fact]
    public async Task Relay_signed_bind_from_a_new_source_port_follows_the_peer()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var before = NewSocket();
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(before, SignedBind(a.PublicKey, b.PublicKey, 4000), cts.Token));
        await using var connB = await RelayClient.ConnectAsync(_relay.LocalEndPoint!, b.PublicKey, a.PublicKey, Credentials(_secrets, b.PublicKey, _time), cts.Token);

        // NAT rebinding: A's next keepalive comes from another port. No source address check: the relay follows.
        var after = NewSocket();
        Assert.Equal(RelayProtocol.BindStatus.Paired, await BindAsync(after, SignedBind(a.PublicKey, b.PublicKey, 4001), cts.Token));
        await connB.SendAsync("moved"u8.ToArray(), cts.Token);
        Assert.Equal("moved"u8.ToArray(), await ReceiveDataAsync(after, cts.Token));
        Assert.Equal(2, _relay.SessionCount);
    }

    [Fact]
    public async Task Relay_old_form_bind_is_accepted_and_logged_once_per_session()
    {
        using var a = X25519KeyPair.Generate();
        using var b = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        var credentials = Credentials(_secrets, a.PublicKey, _time);
        // An agent of the previous release: token only, old Bind form, and keepalives with the same token.
        var socket = NewSocket();
        var old = new byte[RelayProtocol.BindSize];
        RelayProtocol.WriteBind(old, a.PublicKey, b.PublicKey, credentials.Token);
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(socket, old, cts.Token));
        Assert.Equal(RelayProtocol.BindStatus.Waiting, await BindAsync(socket, old, cts.Token));
        await using var connB = await RelayClient.ConnectAsync(_relay.LocalEndPoint!, b.PublicKey, a.PublicKey, RelayCredentials.Legacy(Credentials(_secrets, b.PublicKey, _time).Token), cts.Token);
        await connB.SendAsync("old-agents"u8.ToArray(), cts.Token);
        Assert.Equal("old-agents"u8.ToArray(), await ReceiveDataAsync(socket, cts.Token));

        var warnings = _log.Warnings.Where(w => w.Contains("old, unsigned Bind form", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, warnings.Count); // one per session (A's and B's), not one per Bind
        Assert.Single(warnings, w => w.Contains($"peer {a.PublicKey.ToShortString()}", StringComparison.Ordinal));
        // The token and secret never reach the log.
        Assert.DoesNotContain(_log.Entries, e => e.Message.Contains(Convert.ToBase64String(credentials.Token), StringComparison.Ordinal)
            || e.Message.Contains(Convert.ToHexString(credentials.Token), StringComparison.OrdinalIgnoreCase));
    }
}

/// <summary>Issue 13 item 14: the relay and STUN receive loops log an unexpected error once and go on.</summary>
public sealed class ReceiveLoopTests
{
    [Fact]
    public async Task Relay_receive_loop_survives_an_unexpected_receive_error_and_logs_once()
    {
        var dir = TestServer.NewDataDir();
        using var secrets = ServerSecrets.LoadOrCreate(dir);
        var log = new ListLogger();
        try
        {
            using var relay = new RelayServer(new IPEndPoint(IPAddress.Loopback, 0), secrets, TimeProvider.System, log);
            var failures = 5;
            relay.InjectReceiveError = () => Interlocked.Decrement(ref failures) >= 0 ? 105 /* ENOBUFS */ : 0;
            await relay.StartAsync(default);
            using var a = X25519KeyPair.Generate();
            using var b = X25519KeyPair.Generate();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            await using var connA = await RelayClient.ConnectAsync(relay.LocalEndPoint!, a.PublicKey, b.PublicKey, RelaySecurityTests.Credentials(secrets, a.PublicKey, TimeProvider.System), cts.Token);
            await using var connB = await RelayClient.ConnectAsync(relay.LocalEndPoint!, b.PublicKey, a.PublicKey, RelaySecurityTests.Credentials(secrets, b.PublicKey, TimeProvider.System), cts.Token);
            await connA.SendAsync("served"u8.ToArray(), cts.Token);
            var buffer = new byte[64];
            var n = await connB.ReceiveAsync(buffer, cts.Token);
            Assert.Equal("served"u8.ToArray(), buffer.AsSpan(0, n).ToArray());
            Assert.Equal(5, relay.ReceiveErrors);
            Assert.Single(log.Errors, e => e.Contains("errno 105", StringComparison.Ordinal));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Stun_receive_loop_survives_an_unexpected_receive_error_and_logs_once()
    {
        var log = new ListLogger();
        using var stun = new StunServer(new IPEndPoint(IPAddress.Loopback, 0), log);
        var failures = 5;
        stun.InjectReceiveError = () => Interlocked.Decrement(ref failures) >= 0 ? SocketError.NoBufferSpaceAvailable : SocketError.Success;
        await stun.StartAsync(default);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var mapped = await StunClient.QueryAsync(stun.LocalEndPoint!, cts.Token);
        Assert.Equal(IPAddress.Loopback, mapped.Address);
        Assert.Equal(5, stun.ReceiveErrors);
        Assert.Single(log.Errors, e => e.Contains("NoBufferSpaceAvailable", StringComparison.Ordinal));
    }
}
