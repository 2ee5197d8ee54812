using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 17, "an expired peer stays in the others' maps and shows as Idle with reason login expired; it is removed
/// from WireGuard": one agent registers under a short `peer_login_expiration`, the other under none (the server
/// restarted over the same store), they connect, and when the first login lapses the second keeps it listed.
/// </summary>
public sealed class ExpiryTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(90);

    [SkippableFact]
    public void A_peer_whose_login_expired_stays_in_status_as_idle_and_leaves_wireguard()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wg");
        using var rig = new MeshRig(output, "x");
        WriteServerConfig(rig, expiration: "90s");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var shortLived = rig.AddAgent("x1");
        shortLived.WriteConfig(key);
        shortLived.Start();
        rig.WaitUntil(() => ManagementConnected(shortLived), Timeout, "x1 registered (its login lapses 90 s later)", () => shortLived.Log);

        // The same store under a server whose logins never lapse: only x1's expires.
        rig.KillServer();
        WriteServerConfig(rig, expiration: "");
        rig.StartServer();
        var watcher = rig.AddAgent("x2");
        watcher.WriteConfig(key);
        watcher.Start();
        rig.WaitUntil(() => watcher.IsConnected("x1"), Timeout, "x2 connected to x1 before x1's login lapsed", () => watcher.Log);
        var x1Key = watcher.Peer("x1")!.Value.GetProperty("public_key").GetString()!;
        Assert.Contains(x1Key, WgDump(watcher), StringComparison.Ordinal);

        rig.WaitUntil(
            () => watcher.Peer("x1") is { } p && p.GetProperty("state").GetString() == "Idle" && p.GetProperty("reason").GetString() == "login expired",
            Timeout + Timeout,
            "x2 showing x1 as Idle, login expired",
            () => watcher.StatusText() + watcher.Log);

        var x1 = watcher.Peer("x1")!.Value;
        Assert.Equal(x1Key, x1.GetProperty("public_key").GetString());
        Assert.Equal(JsonValueKind.Null, x1.GetProperty("connection_type").ValueKind);
        Assert.DoesNotContain(x1Key, WgDump(watcher), StringComparison.Ordinal);
        Assert.Contains("login expired", watcher.StatusText(), StringComparison.Ordinal);
        // x1 itself is refused: its login expired.
        rig.WaitUntil(() => ManagementError(shortLived)?.Contains("expired", StringComparison.Ordinal) == true, Timeout, "x1 refused as expired", () => shortLived.Log);
    }

    private static string WgDump(MeshRig.Agent agent)
    {
        var dump = agent.Namespace.TryExec($"wg show {agent.Interface} dump");
        Assert.True(dump.ExitCode == 0, $"wg show {agent.Interface} dump: {dump.Error}");
        return dump.Output;
    }

    private static void WriteServerConfig(MeshRig rig, string expiration)
        => File.WriteAllText(rig.ServerConfig, $"""
            listen = "{MeshRig.ServerIp}:33073"
            data_dir = "{Path.Combine(rig.Root, "server")}"
            relay = {"{"} listen = "{MeshRig.ServerIp}:33080" {"}"}
            stun = {"{"} listen = "{MeshRig.ServerIp}:3478" {"}"}

            [account]
            peer_login_expiration = "{expiration}"
            """);

    private static bool ManagementConnected(MeshRig.Agent agent)
        => agent.Status() is { } s && s.GetProperty("management").GetProperty("connected").GetBoolean();

    private static string? ManagementError(MeshRig.Agent agent)
        => agent.Status() is { } s && s.GetProperty("management").GetProperty("error").ValueKind == JsonValueKind.String
            ? s.GetProperty("management").GetProperty("error").GetString()
            : null;
}
