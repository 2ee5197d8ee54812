using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// A signal server whose key is not the one management announced (an impersonator reached through a
/// wrong public_url or a hijacked name) is refused by the agent: it never authenticates to it.
/// </summary>
public sealed class SignalKeyTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Agent_refuses_a_signal_server_with_a_different_key()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "k");
        // Management announces a signal URL served by a second server with its own data_dir, hence its own key.
        File.WriteAllText(rig.ServerConfig, $"""
            listen = "{MeshRig.ServerIp}:33073"
            data_dir = "{Path.Combine(rig.Root, "server")}"
            public_url = {"{"} signal = "http://{MeshRig.ServerIp}:33074" {"}"}
            relay = {"{"} listen = "{MeshRig.ServerIp}:33080" {"}"}
            stun = {"{"} listen = "{MeshRig.ServerIp}:3478" {"}"}
            """);
        var impostorConfig = Path.Combine(rig.Root, "impostor.toml");
        File.WriteAllText(impostorConfig, $"""
            listen = "{MeshRig.ServerIp}:33074"
            data_dir = "{Path.Combine(rig.Root, "impostor")}"
            components = ["signal"]
            """);
        rig.StartServer();
        using var impostor = rig.Server.Start($"{MeshRig.ServerBinary} --config {impostorConfig}");
        rig.WaitUntil(() => rig.Server.TryExec("ss -ltn").Output.Contains($"{MeshRig.ServerIp}:33074", StringComparison.Ordinal), TimeSpan.FromSeconds(60), "the impostor signal server listening", () => impostor.Output);

        var agent = rig.AddAgent("s1");
        agent.WriteConfig(rig.CreateSetupKey());
        agent.Start();
        rig.WaitUntil(() => agent.Log.Contains("differs from the one management announced", StringComparison.Ordinal), TimeSpan.FromSeconds(90), "the agent refusing the impostor's key", () => agent.Log + agent.StatusText());

        var signal = agent.Status()!.Value.GetProperty("signal");
        Assert.False(signal.GetProperty("connected").GetBoolean(), agent.StatusText());
        Assert.DoesNotContain("Connected to signal", agent.Log, StringComparison.Ordinal);
    }
}
