using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// The proxy sample in samples/, built by scripts/samples against the Modular.Abstractions package (as a third
/// party builds it), dropped into a plugins folder and selected by name, does its job: it carries a relayed ping.
/// </summary>
public sealed class SamplePluginTests(ITestOutputHelper output)
{
    [SkippableFact]
    public void The_proxy_sample_built_from_the_package_carries_a_relayed_ping()
    {
        MeshRig.RequirePrerequisites();
        var sample = Path.Combine(BuiltBinaries.RepoRoot, "artifacts", "samples", "plugins", "ProxyLoopback");
        Prerequisites.Require(File.Exists(Path.Combine(sample, "ProxyLoopback.dll")), $"{sample} is not built: run scripts/publish and scripts/samples");
        using var rig = new MeshRig(output, "s");
        var pluginsDir = Path.Combine(rig.Root, "plugins");
        PluginFixtures.CopyDirectory(Path.Combine(Path.GetDirectoryName(MeshRig.AgentBinary)!, "plugins"), pluginsDir);
        PluginFixtures.CopyDirectory(sample, Path.Combine(pluginsDir, "ProxyLoopback"));

        rig.StartServer();
        var key = rig.CreateSetupKey();
        var natted = rig.AddAgentBehindNat("n1");
        var walled = rig.AddAgent("f1");
        // No UDP between the two: they can only meet through the relay.
        walled.BlockUdpWith(natted.PublicIp);
        natted.WriteConfig(key, "[proxy]\nkind = \"sample-loopback\"", pluginsDir);
        walled.WriteConfig(key, "[proxy]\nkind = \"sample-loopback\"", pluginsDir);
        natted.Start();
        walled.Start();
        string[] names = ["n1", "f1"];

        rig.WaitUntil(() => natted.IsConnected("f1", "Relayed") && walled.IsConnected("n1", "Relayed"), TimeSpan.FromSeconds(120),
            "both Connected through the relay", () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => natted.Ping(walled.OverlayIp!, count: 2), TimeSpan.FromSeconds(30), "n1 -> f1 through the sample proxy",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => walled.Ping(natted.OverlayIp!, count: 2), TimeSpan.FromSeconds(30), "f1 -> n1 through the sample proxy",
            () => MeshTests.Diagnostics(rig, names));
        Assert.Equal("sample-loopback", walled.Peer("n1")!.Value.GetProperty("proxy").GetString());
        Assert.Equal("sample-loopback", natted.Peer("f1")!.Value.GetProperty("proxy").GetString());
    }
}
