using Grpc.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Control.Signal;
using Modular.Server.Management;
using Modular.Server.Signal;

namespace Modular.Server.Tests;

/// <summary>
/// Issue 13 item 9: one registered peer must not force network-wide churn. Metadata changes are rate-limited
/// (the excess waits, coalesced, never lost), a key holds one Sync and one signal stream, and a signal stream
/// that never proves its key is closed. Time is a fake clock.
/// </summary>
public sealed class PeerChurnLimitTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    private static Task<TestServer> StartAsync(FakeTimeProvider time) => TestServer.StartAsync(services: s => s.AddSingleton<TimeProvider>(time));

    private static PeerMeta Version(string hostname, string version)
    {
        var meta = TestServer.Meta(hostname);
        meta.AgentVersion = version;
        return meta;
    }

    [Fact]
    public async Task Churn_metadata_changes_beyond_the_burst_wait_coalesced_and_are_not_lost()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await StartAsync(time);
        var setupKey = await server.CreateSetupKeyAsync();
        var watcher = await server.RegisterAgentAsync(setupKey, "watcher");
        var (key, churner) = server.NewAgent();
        using var _ = key;
        await churner.RegisterAsync(setupKey, Version("churner", "v0"), CancellationToken.None);

        using var cts = new CancellationTokenSource(Wait);
        await using var stream = watcher.SyncAsync(TestServer.Meta("watcher"), cts.Token).GetAsyncEnumerator(cts.Token);
        var map = new NetworkMapState();
        async Task<string> SeenVersionAsync(string wanted)
        {
            while (map.ToMap().RemotePeers.Single(p => p.Hostname == "churner").AgentVersion != wanted)
            {
                Assert.True(await stream.MoveNextAsync());
                Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
            }

            return wanted;
        }

        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));

        // The burst: each change is stored and pushed at once.
        var start = await server.Store.GetNetworkSerialAsync(CancellationToken.None);
        for (var i = 1; i <= MetadataChangeLimiter.DefaultBurst; i++)
        {
            await churner.LoginAsync(Version("churner", $"v{i}"), CancellationToken.None);
            Assert.Equal(start + (ulong)i, await server.Store.GetNetworkSerialAsync(CancellationToken.None));
        }

        await SeenVersionAsync($"v{MetadataChangeLimiter.DefaultBurst}");
        var afterBurst = await server.Store.GetNetworkSerialAsync(CancellationToken.None);

        // Beyond it: the logins succeed, nothing changes for anyone yet.
        var login = await churner.LoginAsync(Version("churner", "v-late-1"), CancellationToken.None);
        Assert.Equal("100.64.0.2/10", login.PeerConfig.Address);
        await churner.LoginAsync(Version("churner", "v-late-2"), CancellationToken.None);
        Assert.Equal(afterBurst, await server.Store.GetNetworkSerialAsync(CancellationToken.None));
        Assert.Equal($"v{MetadataChangeLimiter.DefaultBurst}", (await server.Store.GetPeerAsync(key.PublicKey, CancellationToken.None))!.AgentVersion);

        // A token later the newest waiting change lands, as one change (the one in between is coalesced away).
        time.Advance(MetadataChangeLimiter.DefaultInterval);
        await SeenVersionAsync("v-late-2");
        Assert.Equal(afterBurst + 1, await server.Store.GetNetworkSerialAsync(CancellationToken.None));
        Assert.Equal("v-late-2", (await server.Store.GetPeerAsync(key.PublicKey, CancellationToken.None))!.AgentVersion);
    }

    [Fact]
    public async Task Churn_a_new_sync_stream_of_the_same_agent_replaces_its_older_one()
    {
        await using var server = await TestServer.StartAsync();
        var (key, first) = server.NewAgent();
        using var _ = key;
        await first.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("alpha"), CancellationToken.None);
        var reconnect = new ManagementClient(server.Channel(), key) { InstanceId = "agent-1" };
        var original = new ManagementClient(server.Channel(), key) { InstanceId = "agent-1" };

        using var cts = new CancellationTokenSource(Wait);
        await using var older = original.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await older.MoveNextAsync());
        await using var newer = reconnect.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await newer.MoveNextAsync());

        var e = await Assert.ThrowsAsync<RpcException>(async () => await older.MoveNextAsync());
        Assert.Equal(StatusCode.Aborted, e.StatusCode);
        Assert.Equal(1, server.App.Services.GetRequiredService<PeerSessions<ManagementGrpcService>>().Count);
    }

    [Fact]
    public async Task Churn_a_new_signal_stream_of_the_same_agent_replaces_its_older_one()
    {
        await using var server = await TestServer.StartAsync();
        var (key, client) = server.NewAgent();
        using var _ = key;
        await client.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("alpha"), CancellationToken.None);

        using var cts = new CancellationTokenSource(Wait);
        await using var older = await SignalClient.ConnectAsync(server.Channel(), key, cts.Token, instanceId: "agent-1");
        await using var newer = await SignalClient.ConnectAsync(server.Channel(), key, cts.Token, instanceId: "agent-1");

        // The older stream ends (its inbound completes) rather than living on beside the newer one.
        while (await older.Inbound.WaitToReadAsync(cts.Token))
        {
            older.Inbound.TryRead(out var _);
        }

        Assert.Equal(1, server.App.Services.GetRequiredService<PeerSessions<SignalGrpcService>>().Count);
    }

    [Fact]
    public async Task Churn_a_signal_stream_that_never_proves_its_key_is_closed_after_the_timeout()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var server = await StartAsync(time);
        using var key = X25519KeyPair.Generate();
        using var cts = new CancellationTokenSource(Wait);
        using var call = new SignalExchange.SignalExchangeClient(server.Channel()).Connect(cancellationToken: cts.Token);
        await call.RequestStream.WriteAsync(new SignalFrame { Hello = new Hello { WgPubKey = Google.Protobuf.ByteString.CopyFrom(key.PublicKey.ToArray()) } }, cts.Token);
        Assert.True(await call.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(SignalFrame.KindOneofCase.Challenge, call.ResponseStream.Current.KindCase);

        // No Proof follows: once the timeout passes on the server's clock, the server ends the stream.
        time.Advance(SignalGrpcService.AuthenticationTimeout);
        var e = await Assert.ThrowsAsync<RpcException>(() => call.ResponseStream.MoveNext(cts.Token));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
    }
}
