using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 13, "started without root, the agent registers first, then loops": without CAP_NET_ADMIN `modular up` says so
/// in one line and exits 1 before it registers (no setup key used up, no peer added to everyone's map).
/// </summary>
public sealed class PreflightTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void Started_without_root_the_agent_exits_1_with_one_line_before_registering()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("setpriv");
        using var rig = new MeshRig(output, "p");
        rig.StartServer();
        var agent = rig.AddAgent("p1");
        agent.WriteConfig(rig.CreateSetupKey());

        // Root without CAP_NET_ADMIN (dropped from the bounding set, so exec does not grant it back).
        var run = agent.Namespace.TryExec(
            $"setpriv --inh-caps=-all --bounding-set=-net_admin {MeshRig.AgentBinary} up --config {agent.ConfigPath} --hostname p1",
            TimeSpan.FromSeconds(40));
        output.WriteLine($"exit {run.ExitCode}\n--- stdout:\n{run.Output}\n--- stderr:\n{run.Error}");

        Assert.Equal(1, run.ExitCode);
        var lines = run.Error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var line = Assert.Single(lines);
        Assert.Contains("CAP_NET_ADMIN", line, StringComparison.Ordinal);
        Assert.Equal("", run.Output.Trim());
        Assert.DoesNotContain("p1", rig.ServerCli("peers list"), StringComparison.Ordinal); // never registered
    }
}
