using Grpc.Core;
using Modular.Control.Management;
using Modular.Control.Signal;

namespace Modular.Server.Tests;

/// <summary>
/// Operator finding (issue 13): two agents with one identity (a machine cloned with its state_dir). The server
/// keeps the agent that is connected, refuses the newer one with AlreadyExists naming the other, and tells the
/// connected one on its Sync stream.
/// </summary>
public sealed class TwoAgentsOneIdentityTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Two_agents_one_identity_the_newer_sync_stream_is_refused_and_the_older_is_told()
    {
        await using var server = await TestServer.StartAsync();
        var (key, registrar) = server.NewAgent();
        using var _ = key;
        await registrar.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("alpha"), CancellationToken.None);
        var original = new ManagementClient(server.Channel(), key) { InstanceId = "original" };
        var copy = new ManagementClient(server.Channel(), key) { InstanceId = "copy" };

        using var cts = new CancellationTokenSource(Wait);
        await using var older = original.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        Assert.True(await older.MoveNextAsync());
        Assert.NotNull(older.Current.NetworkMap);

        await using var newer = copy.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        var refused = await Assert.ThrowsAsync<RpcException>(async () => await newer.MoveNextAsync());
        Assert.Equal(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.Contains("another agent with this identity is connected", refused.Status.Detail, StringComparison.Ordinal);
        Assert.Contains("state_dir", refused.Status.Detail, StringComparison.Ordinal);

        // Its login is refused too, before it can change the connected agent's metadata (hostname, version).
        var copyMeta = TestServer.Meta("the-copy");
        var loginRefused = await Assert.ThrowsAsync<RpcException>(() => copy.LoginAsync(copyMeta, CancellationToken.None));
        Assert.Equal(StatusCode.AlreadyExists, loginRefused.StatusCode);
        Assert.Equal("alpha", (await server.Store.GetPeerAsync(key.PublicKey, CancellationToken.None))!.Hostname);
        await original.LoginAsync(TestServer.Meta("alpha"), CancellationToken.None);

        // The connected one hears of it, and keeps its stream (and so its map).
        Assert.True(await older.MoveNextAsync());
        var conflict = older.Current.IdentityConflict;
        Assert.NotNull(conflict);
        Assert.Null(older.Current.NetworkMap);
        Assert.Contains("was refused", conflict.Detail, StringComparison.Ordinal);
        Assert.NotEmpty(conflict.RemoteAddress);

        // The newer one may come in once the older stream is gone (the machine really moved).
        await older.DisposeAsync();
        RpcException? stillRefused = null;
        for (var attempt = 0; attempt < 100; attempt++)
        {
            // The server sees the cancelled stream end shortly after; a refused attempt is retried as an agent does.
            try
            {
                await using var retry = copy.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
                Assert.True(await retry.MoveNextAsync());
                Assert.NotNull(retry.Current.NetworkMap);
                stillRefused = null;
                break;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.AlreadyExists)
            {
                stillRefused = e;
                await Task.Delay(TimeSpan.FromMilliseconds(100), cts.Token);
            }
        }

        Assert.Null(stillRefused);
    }

    [Fact]
    public async Task Two_agents_one_identity_the_newer_signal_stream_is_refused()
    {
        await using var server = await TestServer.StartAsync();
        var (key, registrar) = server.NewAgent();
        using var _ = key;
        await registrar.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("alpha"), CancellationToken.None);

        using var cts = new CancellationTokenSource(Wait);
        await using var original = await SignalClient.ConnectAsync(server.Channel(), key, cts.Token, instanceId: "original");
        var refused = await Assert.ThrowsAsync<RpcException>(() => SignalClient.ConnectAsync(server.Channel(), key, cts.Token, instanceId: "copy"));
        Assert.Equal(StatusCode.AlreadyExists, refused.StatusCode);
        Assert.Contains("another agent with this identity is connected", refused.Status.Detail, StringComparison.Ordinal);
    }
}
