using Google.Protobuf;
using Grpc.Core;
using Modular.Abstractions.WireGuard;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Server.Management;
using Microsoft.Extensions.DependencyInjection;

namespace Modular.Server.Tests;

public sealed class ManagementTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Register_with_a_good_key_assigns_an_address_and_tells_where_the_services_are()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;

        var reply = await client.RegisterAsync(setupKey, TestServer.Meta("alpha"), CancellationToken.None);

        Assert.Equal("100.64.0.1/10", reply.PeerConfig.Address);
        Assert.Equal("alpha.modular.internal", reply.PeerConfig.Fqdn);
        Assert.Equal($"http://127.0.0.1:{server.Address.Port}", reply.Services.SignalUrl);
        Assert.Equal($"127.0.0.1:{server.Relay.LocalEndPoint!.Port}", reply.Services.RelayAddress);
        Assert.Equal($"127.0.0.1:{server.Stun.LocalEndPoint!.Port}", reply.Services.StunAddress);
        Assert.Equal(Modular.Control.Relay.RelayToken.Size, reply.Services.RelayToken.Length);

        // Login afterwards needs no setup key and returns the same address.
        var login = await client.LoginAsync(TestServer.Meta("alpha"), CancellationToken.None);
        Assert.Equal("100.64.0.1/10", login.PeerConfig.Address);
    }

    [Fact]
    public async Task Public_urls_override_the_derived_addresses()
    {
        await using var server = await TestServer.StartAsync(tweak: c => c with { PublicUrl = new Config.PublicUrls("https://signal.example:443", "relay.example:33080", "stun.example:3478") });
        var (key, client) = server.NewAgent();
        using var _ = key;
        var reply = await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("a"), CancellationToken.None);
        Assert.Equal("https://signal.example:443", reply.Services.SignalUrl);
        Assert.Equal("relay.example:33080", reply.Services.RelayAddress);
        Assert.Equal("stun.example:3478", reply.Services.StunAddress);
    }

    [Fact]
    public async Task Wrong_setup_keys_are_permission_denied_with_a_reason()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;

        var unknown = await Assert.ThrowsAsync<ManagementRefusedException>(() => client.RegisterAsync("mdl-wrong", TestServer.Meta("a"), CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, unknown.StatusCode);
        Assert.Contains("setup key is not valid", unknown.Status.Detail, StringComparison.Ordinal);

        var (record, revoked) = await server.Store.CreateSetupKeyAsync(new Store.NewSetupKey("r", true, 0, null), CancellationToken.None);
        await server.Store.RevokeSetupKeyAsync(record.Id, CancellationToken.None);
        var e = await Assert.ThrowsAsync<ManagementRefusedException>(() => client.RegisterAsync(revoked, TestServer.Meta("a"), CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Contains("revoked", e.Status.Detail, StringComparison.Ordinal);

        var once = await server.CreateSetupKeyAsync(reusable: false);
        await client.RegisterAsync(once, TestServer.Meta("a"), CancellationToken.None);
        var (key2, client2) = server.NewAgent();
        using var __ = key2;
        var exhausted = await Assert.ThrowsAsync<ManagementRefusedException>(() => client2.RegisterAsync(once, TestServer.Meta("b"), CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, exhausted.StatusCode);
        Assert.Contains("usage limit", exhausted.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Login_of_an_unregistered_key_is_permission_denied()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;
        var e = await Assert.ThrowsAsync<ManagementRefusedException>(() => client.LoginAsync(TestServer.Meta("a"), CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
    }

    [Fact]
    public async Task Item8_a_refusal_carries_an_error_sealed_to_the_agent_and_bound_to_its_request()
    {
        await using var server = await TestServer.StartAsync();
        var raw = new ManagementService.ManagementServiceClient(server.Channel());
        var serverKey = new WgKey((await raw.GetServerKeyAsync(new Empty())).Key.Span);
        using var agent = X25519KeyPair.Generate();
        var body = Envelope.Seal(agent, serverKey, Envelope.Purposes.Management, new LoginRequest { TimestampUnix = DateTimeOffset.UtcNow.ToUnixTimeSeconds() }.ToByteArray());

        var refused = await Assert.ThrowsAsync<RpcException>(async () => await raw.LoginAsync(new EncryptedMessage { WgPubKey = ByteString.CopyFrom(agent.PublicKey.ToArray()), Body = ByteString.CopyFrom(body) }));

        Assert.Equal(StatusCode.PermissionDenied, refused.StatusCode);
        var box = refused.Trailers.GetValueBytes("modular-sealed-error-bin");
        Assert.NotNull(box);
        var purpose = "modular/management-error/v1"u8;
        Assert.True(Envelope.TryOpen(agent, serverKey, purpose, box, out _, body.AsSpan(0, Envelope.NonceSize)), "the agent opens it with the server key");
        // Bound to this request (a copy replayed against another request does not open), and for this agent only.
        Assert.False(Envelope.TryOpen(agent, serverKey, purpose, box, out _, new byte[Envelope.NonceSize]));
        using var other = X25519KeyPair.Generate();
        Assert.False(Envelope.TryOpen(other, serverKey, purpose, box, out _, body.AsSpan(0, Envelope.NonceSize)));
    }

    [Fact]
    public async Task Malformed_encrypted_messages_are_invalid_argument()
    {
        await using var server = await TestServer.StartAsync();
        var raw = new ManagementService.ManagementServiceClient(server.Channel());
        var serverKey = new WgKey((await raw.GetServerKeyAsync(new Empty())).Key.Span);
        using var agent = X25519KeyPair.Generate();
        using var impostor = X25519KeyPair.Generate();

        async Task<RpcException> Call(EncryptedMessage m) => await Assert.ThrowsAsync<RpcException>(async () => await raw.RegisterAsync(m));

        // Short public key.
        var shortKey = await Call(new EncryptedMessage { WgPubKey = ByteString.CopyFrom(new byte[5]), Body = ByteString.CopyFrom(new byte[64]) });
        Assert.Equal(StatusCode.InvalidArgument, shortKey.StatusCode);

        // Garbage body.
        var garbage = await Call(new EncryptedMessage { WgPubKey = ByteString.CopyFrom(agent.PublicKey.ToArray()), Body = ByteString.CopyFrom(new byte[100]) });
        Assert.Equal(StatusCode.InvalidArgument, garbage.StatusCode);

        // Sealed by a different key than the one claimed: not the agent, so not accepted.
        var body = new RegisterRequest { SetupKey = "x", TimestampUnix = DateTimeOffset.UtcNow.ToUnixTimeSeconds() }.ToByteArray();
        var forged = await Call(new EncryptedMessage
        {
            WgPubKey = ByteString.CopyFrom(agent.PublicKey.ToArray()),
            Body = ByteString.CopyFrom(Envelope.Seal(impostor, serverKey, Envelope.Purposes.Management, body)),
        });
        Assert.Equal(StatusCode.InvalidArgument, forged.StatusCode);

        // Decrypts fine but is not a RegisterRequest.
        var notProto = await Call(new EncryptedMessage
        {
            WgPubKey = ByteString.CopyFrom(agent.PublicKey.ToArray()),
            Body = ByteString.CopyFrom(Envelope.Seal(agent, serverKey, Envelope.Purposes.Management, [0xff, 0xff, 0xff, 0xff])),
        });
        Assert.Equal(StatusCode.InvalidArgument, notProto.StatusCode);

        // Replayed from long ago.
        var stale = await Call(new EncryptedMessage
        {
            WgPubKey = ByteString.CopyFrom(agent.PublicKey.ToArray()),
            Body = ByteString.CopyFrom(Envelope.Seal(agent, serverKey, Envelope.Purposes.Management, new RegisterRequest { SetupKey = "x", TimestampUnix = 1000 }.ToByteArray())),
        });
        Assert.Equal(StatusCode.InvalidArgument, stale.StatusCode);

        // The server still serves after all that.
        Assert.Equal(32, (await raw.GetServerKeyAsync(new Empty())).Key.Length);
    }

    [Fact]
    public async Task Sync_sends_the_map_then_new_maps_on_join_and_removal()
    {
        await using var server = await TestServer.StartAsync(tweak: c => c with { Account = c.Account with { Psk = Convert.ToBase64String(new byte[32]).Replace("AAAA", "AQID", StringComparison.Ordinal), LazyConnections = true } });
        var setupKey = await server.CreateSetupKeyAsync();
        var (keyA, a) = server.NewAgent();
        var (keyB, b) = server.NewAgent();
        using var _ = keyA;
        using var __ = keyB;
        await a.RegisterAsync(setupKey, TestServer.Meta("alpha"), CancellationToken.None);

        using var cts = new CancellationTokenSource(Wait);
        await using var stream = a.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);

        Assert.True(await stream.MoveNextAsync());
        var first = stream.Current.NetworkMap;
        Assert.Equal("100.64.0.1/10", first.PeerConfig.Address);
        Assert.Empty(first.RemotePeers);
        Assert.Equal(32, first.AccountPsk.Length);
        Assert.True(first.Settings.LazyConnections);
        Assert.Empty(first.Routes);
        // The default policy (All <-> All) as two overlay-wide rules.
        Assert.Equal(["in 100.64.0.0/10", "out 100.64.0.0/10"], first.FirewallRules.Select(r => $"{r.Direction} {r.PeerIp}").Order(StringComparer.Ordinal));

        var rosenpassFingerprint = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        var metaB = TestServer.Meta("bravo");
        metaB.Rosenpass = new RosenpassConfig { PubKeyFingerprint = ByteString.CopyFrom(rosenpassFingerprint), Addr = "198.18.0.2:9999" };
        await b.RegisterAsync(setupKey, metaB, CancellationToken.None);

        // The join arrives as a delta holding just bravo, chained to the whole map's serial.
        Assert.True(await stream.MoveNextAsync());
        Assert.Null(stream.Current.NetworkMap);
        var second = stream.Current.NetworkMapDelta;
        Assert.Equal(first.Serial, second.PreviousSerial);
        Assert.True(second.Serial > first.Serial);
        Assert.Empty(second.RemovedPeerKeys);
        Assert.Null(second.Sections); // nothing but the peers changed
        var bravo = Assert.Single(second.UpsertedPeers);
        Assert.Equal("bravo", bravo.Hostname);
        Assert.Equal(keyB.PublicKey, new WgKey(bravo.WgPubKey.Span));
        Assert.Equal(["100.64.0.2/32"], bravo.AllowedIps);
        Assert.Equal(rosenpassFingerprint, bravo.Rosenpass.PubKeyFingerprint.ToByteArray());

        // Removal through the admin path: a separate store instance on the same file, as the CLI does.
        await using (var admin = new Store.SqliteStore(Path.Combine(server.Config.DataDir, "modular.db")))
        {
            await admin.InitializeAsync(CancellationToken.None);
            Assert.Single(await admin.RemovePeersAsync("bravo", CancellationToken.None));
        }

        Assert.True(await stream.MoveNextAsync());
        var third = stream.Current.NetworkMapDelta;
        Assert.NotNull(third);
        Assert.Equal(second.Serial, third.PreviousSerial);
        Assert.True(third.Serial > second.Serial);
        Assert.Empty(third.UpsertedPeers);
        Assert.Equal(keyB.PublicKey, new WgKey(Assert.Single(third.RemovedPeerKeys).Span));
    }

    [Fact]
    public async Task Deltas_over_joins_changes_and_removals_add_up_to_the_whole_map_a_new_stream_gets()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var agents = Enumerable.Range(0, 4).Select(_ => server.NewAgent()).ToList();
        try
        {
            var (_, watcher) = agents[0];
            await watcher.RegisterAsync(setupKey, TestServer.Meta("watcher"), CancellationToken.None);
            using var cts = new CancellationTokenSource(Wait);
            await using var stream = watcher.SyncAsync(TestServer.Meta("watcher"), cts.Token).GetAsyncEnumerator(cts.Token);
            var state = new NetworkMapState();
            Assert.True(await stream.MoveNextAsync());
            Assert.Equal(MapUpdateResult.Applied, state.Apply(stream.Current));

            // Each change is awaited through the stream so every step is one delta on the chain.
            async Task NextAsync()
            {
                Assert.True(await stream.MoveNextAsync());
                Assert.NotNull(stream.Current.NetworkMapDelta);
                Assert.Equal(MapUpdateResult.Applied, state.Apply(stream.Current));
            }

            for (var i = 1; i < 4; i++)
            {
                await agents[i].Client.RegisterAsync(setupKey, TestServer.Meta($"peer{i}"), CancellationToken.None);
                await NextAsync();
            }

            var upgraded = TestServer.Meta("peer2");
            upgraded.AgentVersion = "9.9.9";
            upgraded.Features.Add("rosenpass");
            await agents[2].Client.LoginAsync(upgraded, CancellationToken.None);
            await NextAsync();
            Assert.Equal("9.9.9", state.ToMap().RemotePeers.Single(p => p.Hostname == "peer2").AgentVersion);

            await server.Store.RemovePeersAsync("peer1", CancellationToken.None);
            await server.App.Services.GetRequiredService<NetworkState>().RefreshAsync(CancellationToken.None);
            await NextAsync();

            using var fresh = new CancellationTokenSource(Wait);
            await using var second = watcher.SyncAsync(TestServer.Meta("watcher"), fresh.Token).GetAsyncEnumerator(fresh.Token);
            Assert.True(await second.MoveNextAsync());
            var whole = second.Current.NetworkMap;
            var held = state.ToMap();
            Assert.Equal(whole.Serial, held.Serial);
            Assert.Equal(whole.RemotePeers.OrderBy(p => p.Hostname, StringComparer.Ordinal), held.RemotePeers.OrderBy(p => p.Hostname, StringComparer.Ordinal));
            Assert.Equal(["peer2", "peer3"], held.RemotePeers.Select(p => p.Hostname).Order(StringComparer.Ordinal));
            whole.RemotePeers.Clear();
            held.RemotePeers.Clear();
            Assert.Equal(whole, held);
        }
        finally
        {
            foreach (var (key, _) in agents)
            {
                key.Dispose();
            }
        }
    }

    [Fact]
    public async Task A_stream_whose_serial_fell_out_of_the_change_log_gets_a_whole_map()
    {
        await using var server = await TestServer.StartAsync();
        var setupKey = await server.CreateSetupKeyAsync();
        var (keyA, a) = server.NewAgent();
        var (keyB, b) = server.NewAgent();
        using var _ = keyA;
        using var __ = keyB;
        await a.RegisterAsync(setupKey, TestServer.Meta("alpha"), CancellationToken.None);

        using var cts = new CancellationTokenSource(Wait);
        await using var stream = a.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync());
        var first = stream.Current.NetworkMap;
        Assert.NotNull(first);

        // The log no longer links the stream's serial to the next one (as after an overflow while the
        // stream lagged): its oldest entry starts elsewhere. Then bravo joins.
        var network = server.App.Services.GetRequiredService<NetworkState>();
        network.Changes.Record(new NetworkSnapshot(first.Serial + 1000, []), new NetworkSnapshot(first.Serial + 1001, []), server.Config.Account);
        await b.RegisterAsync(setupKey, TestServer.Meta("bravo"), CancellationToken.None);

        Assert.True(await stream.MoveNextAsync());
        Assert.Null(stream.Current.NetworkMapDelta);
        var whole = stream.Current.NetworkMap;
        Assert.True(whole.Serial > first.Serial);
        Assert.Equal("bravo", Assert.Single(whole.RemotePeers).Hostname);
        Assert.Equal("100.64.0.1/10", whole.PeerConfig.Address);
    }

    [Fact]
    public async Task A_removed_peer_loses_its_sync_stream()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;
        await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("gone"), CancellationToken.None);
        using var cts = new CancellationTokenSource(Wait);
        await using var stream = client.SyncAsync(TestServer.Meta("gone"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await stream.MoveNextAsync());
        await server.Store.RemovePeersAsync("gone", CancellationToken.None);
        var e = await Assert.ThrowsAsync<ManagementRefusedException>(async () => await stream.MoveNextAsync());
        Assert.Equal(StatusCode.NotFound, e.StatusCode);
    }

    [Fact]
    public async Task Expired_logins_stay_in_other_maps_marked_expired_and_cannot_log_in()
    {
        // Long enough for the second server and the watcher's first map on a loaded machine: it must see "short" live first.
        await using var server = await TestServer.StartAsync(tweak: c => c with { Account = c.Account with { PeerLoginExpiration = TimeSpan.FromSeconds(8) } });
        var setupKey = await server.CreateSetupKeyAsync();
        var (keyA, a) = server.NewAgent();
        using var _ = keyA;
        await a.RegisterAsync(setupKey, TestServer.Meta("short"), CancellationToken.None);

        // A second peer registered with a long expiry watches the first one go.
        await using var longLived = await TestServer.StartAsync(server.Config.DataDir, c => c with { Listen = "127.0.0.1:0", Account = c.Account with { PeerLoginExpiration = TimeSpan.FromDays(1) } });
        var (keyB, b) = longLived.NewAgent();
        using var __ = keyB;
        await b.RegisterAsync(setupKey, TestServer.Meta("watcher"), CancellationToken.None);
        using var cts = new CancellationTokenSource(Wait);
        await using var stream = b.SyncAsync(TestServer.Meta("watcher"), cts.Token).GetAsyncEnumerator(cts.Token);
        var sawShort = false;
        var sawExpired = false;
        var map = new NetworkMapState();
        while (await stream.MoveNextAsync())
        {
            Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
            var shortPeer = map.ToMap().RemotePeers.SingleOrDefault(p => p.Hostname == "short");
            Assert.NotNull(shortPeer); // never dropped from the map
            sawShort |= !shortPeer.Expired;
            if (shortPeer.Expired)
            {
                sawExpired = true;
                break; // it was live and is marked expired now
            }
        }

        Assert.True(sawShort);
        Assert.True(sawExpired);
        var e = await Assert.ThrowsAsync<ManagementRefusedException>(() => a.LoginAsync(TestServer.Meta("short"), CancellationToken.None));
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Contains("expired", e.Status.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Restart_over_the_same_data_dir_keeps_peers_and_server_key()
    {
        var dir = TestServer.NewDataDir();
        try
        {
            WgKey serverKey;
            using var agent = X25519KeyPair.Generate();
            await using (var first = await TestServer.StartAsync(dir))
            {
                var client = new ManagementClient(first.Channel(), agent);
                serverKey = await client.GetServerKeyAsync(CancellationToken.None);
                await client.RegisterAsync(await first.CreateSetupKeyAsync(), TestServer.Meta("survivor"), CancellationToken.None);
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(dir, "server.key")));
            }

            await using var second = await TestServer.StartAsync(dir);
            var again = new ManagementClient(second.Channel(), agent);
            Assert.Equal(serverKey, await again.GetServerKeyAsync(CancellationToken.None));
            var login = await again.LoginAsync(TestServer.Meta("survivor"), CancellationToken.None);
            Assert.Equal("100.64.0.1/10", login.PeerConfig.Address);
            Assert.Single(await second.Store.ListPeersAsync(CancellationToken.None));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
    }
}

public sealed class ComponentSelectionTests
{
    [Fact]
    public async Task Only_the_selected_components_run_and_agents_are_told_only_of_those()
    {
        await using var server = await TestServer.StartAsync(tweak: c => c with { Components = new HashSet<string>(["management"]) });
        Assert.Null(server.App.Services.GetService(typeof(Modular.Server.Relay.RelayServer)));
        Assert.Null(server.App.Services.GetService(typeof(Modular.Server.Stun.StunServer)));
        var (key, client) = server.NewAgent();
        using var _ = key;
        var reply = await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("solo"), CancellationToken.None);
        Assert.Equal("", reply.Services.SignalUrl);
        Assert.Equal("", reply.Services.RelayAddress);
        Assert.Equal("", reply.Services.StunAddress);

        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var e = await Assert.ThrowsAsync<RpcException>(() => Modular.Control.Signal.SignalClient.ConnectAsync(server.Channel(), key, cts.Token));
        Assert.Equal(StatusCode.Unimplemented, e.StatusCode);
    }
}
