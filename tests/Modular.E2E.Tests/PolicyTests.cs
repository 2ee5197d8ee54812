using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Access policies enforced by the agents' userspace firewall: a server and two userspace agents in
/// groups A and B; with only "A -> B tcp/80" allowed, TCP 80 works while TCP 22, UDP and ping are
/// dropped; an allow-all policy brings ping back.
/// </summary>
public sealed class PolicyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan PolicyTimeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Only_the_allowed_tcp_port_passes_until_an_allow_all_policy_returns()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "p");
        rig.StartServer();
        using var scenario = new WebOnlyPolicy(rig, "pa", "pb", kernelMode: false);
        scenario.Apply();

        var dropsBefore = rig["pb"].FirewallCounter("default_drops");
        scenario.AssertOnlyTcp80FromAToB();

        // The drops show in status (a snapshot the firewall refreshes every few seconds).
        rig.WaitUntil(() => rig["pb"].FirewallCounter("default_drops") > dropsBefore, PolicyTimeout, "pb's status counts the dropped probes", scenario.Diagnostics);
        var firewall = rig["pb"].Firewall()!.Value;
        rig.Log(firewall.ToString());
        Assert.Equal("userspace", firewall.GetProperty("mode").GetString());
        Assert.True(firewall.GetProperty("rules").GetInt32() >= 1, "pb enforces the web rule");
        Assert.Contains("Firewall:", rig["pb"].StatusText(), StringComparison.Ordinal);

        rig.ServerCli("policies create open --source All --destination All --bidirectional");
        rig.WaitUntil(() => rig["pa"].Ping(scenario.IpB, 2), PolicyTimeout, "ping pa -> pb back with an allow-all policy", scenario.Diagnostics);
        Assert.True(Probes.UdpArrives(rig["pa"].Namespace.Name, scenario.Udp, scenario.AddressB), "UDP A -> B passes again");
        Assert.True(Probes.TryTcp(rig["pa"].Namespace.Name, scenario.AddressB, 22, out var reply), "TCP 22 passes again");
        Assert.Equal("port 22", reply);
    }
}
