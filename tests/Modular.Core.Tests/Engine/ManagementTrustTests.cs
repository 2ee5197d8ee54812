using Grpc.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Testing;

namespace Modular.Core.Tests.Engine;

/// <summary>
/// Issue 13 item 8: the agent pins management's key on first contact (state_dir/server.pub), refuses a server with
/// another key, and drops its tunnels only on a refusal that server sealed to it: a bare gRPC status (which anyone on
/// the path can forge) makes it reconnect with backoff and nothing more.
/// </summary>
public sealed class ManagementTrustTests
{
    [Fact]
    public async Task Item8_a_bare_permission_denied_reconnects_with_backoff_and_keeps_every_tunnel()
    {
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey)
        {
            // The first stream is cut by a forged refusal, as a machine on the path could send it; the next one stays.
            AfterMap = (n, _) => n == 1 ? new RpcException(new Grpc.Core.Status(StatusCode.PermissionDenied, "this peer was removed from the network")) : null,
            SendsMap = n => n == 1, // the next stream brings no map that would put the tunnels back
        };
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management);
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        await RunUntilAsync(rig.Time, () => management.Count("Sync") == 2, "the agent logs in and syncs again after the forged refusal");

        Assert.Equal(3, rig.Engine.Connections!.Count);
        Assert.Equal(3, rig.Recorder.Snapshot().Peers.Count);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Item8_a_removal_sealed_for_the_request_drops_the_tunnels_but_a_replayed_one_does_not()
    {
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey) { SendsMap = n => n == 1 };
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management);
        int? connectionsAfterReplay = null;
        management.AfterMap = (n, sync) =>
        {
            var agent = new Modular.Abstractions.WireGuard.WgKey(sync.WgPubKey.Span);
            if (n == 1)
            {
                // A genuine refusal, but for another request (captured earlier and replayed): it does not open for this one.
                return ManagementRefusal.Create(serverKey, agent, System.Security.Cryptography.RandomNumberGenerator.GetBytes(64), StatusCode.NotFound, "this peer was removed from the network");
            }

            connectionsAfterReplay ??= rig.Engine.Connections?.Count;
            return ManagementRefusal.Create(serverKey, agent, sync.Body.Span, StatusCode.NotFound, "this peer was removed from the network");
        };
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        await RunUntilAsync(rig.Time, () => rig.Engine.Connections?.Count == 0, "the sealed removal drops the tunnels");

        Assert.Equal(3, connectionsAfterReplay);
        Assert.Contains("removed from the account", rig.Recorder.Snapshot().Management.Error, StringComparison.Ordinal);
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task Item8_the_server_key_is_pinned_on_first_contact()
    {
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey);
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management);
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        var pin = Path.Combine(rig.StateDir, "server.pub");
        await RunUntilAsync(rig.Time, () => management.Count("Sync") == 1 && File.Exists(pin), "the first login pins the key");

        Assert.Equal(serverKey.PublicKey.ToBase64(), File.ReadAllText(pin).Trim());
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead, File.GetUnixFileMode(pin));
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Item8_a_server_whose_key_differs_from_the_pinned_one_is_refused_with_one_clear_error()
    {
        using var pinned = X25519KeyPair.Generate();
        using var impostor = X25519KeyPair.Generate();
        var management = new FakeManagementServer(impostor);
        var log = new ListLogger();
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management, logs: new ListLoggerFactory(log));
        var pin = Path.Combine(rig.StateDir, "server.pub");
        File.WriteAllText(pin, pinned.PublicKey.ToBase64() + "\n");
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        await RunUntilAsync(rig.Time, () => management.Count("GetServerKey") >= 3, "the agent keeps asking, with backoff");

        // Nothing was sent to the impostor but the key request, no interface was built, and the pin is unchanged.
        Assert.Equal(0, management.Count("Login"));
        Assert.Equal(0, management.Count("Register"));
        Assert.Null(rig.Engine.Interface);
        Assert.Equal(pinned.PublicKey.ToBase64(), File.ReadAllText(pin).Trim());
        var status = rig.Recorder.Snapshot().Management;
        Assert.False(status.Connected);
        Assert.Contains("differs from the pinned key", status.Error, StringComparison.Ordinal);
        Assert.Contains(pin, status.Error, StringComparison.Ordinal);
        // One clear error, however often the agent asks again.
        Assert.Single(log.Errors, e => e.Contains("differs from the pinned key", StringComparison.Ordinal));
        await stop.CancelAsync();
        await run;
    }

    [Fact]
    public async Task Item8_plaintext_http_to_a_non_loopback_host_is_warned_about_once()
    {
        using var serverKey = X25519KeyPair.Generate();
        var management = new FakeManagementServer(serverKey)
        {
            AfterMap = (_, _) => new RpcException(new Grpc.Core.Status(StatusCode.Unavailable, "gone")),
        };
        var log = new ListLogger();
        await using var rig = new AgentEngineTests.EngineRig((_, _) => ValueTask.CompletedTask, management: management, managementUrl: "http://mgmt.example:33073", logs: new ListLoggerFactory(log));
        using var stop = new CancellationTokenSource();
        var run = rig.RunAsync(stop.Token);

        await RunUntilAsync(rig.Time, () => management.Count("Login") >= 3, "three logins");

        Assert.Single(log.Warnings, w => w.Contains("plaintext", StringComparison.Ordinal) && w.Contains("mgmt.example", StringComparison.Ordinal));
        await stop.CancelAsync();
        await run;
    }

    /// <summary>Polls <paramref name="condition"/>, moving the engine's clock a second per poll so its backoff runs out.</summary>
    internal static async Task RunUntilAsync(FakeTimeProvider clock, Func<bool> condition, string what)
    {
        var until = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            if (DateTime.UtcNow > until)
            {
                throw new TimeoutException($"not within 30 s: {what}");
            }

            clock.Advance(TimeSpan.FromSeconds(1));
            await Task.Delay(20);
        }
    }
}
