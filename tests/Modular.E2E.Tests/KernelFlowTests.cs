using System.Globalization;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Flow logging wired in a kernel-mode agent (wireguard-go, nftables): with <c>[netflow] enabled = true</c> the
/// agent's table marks the mesh's connections and logs its drops for the flow source, conntrack accounting is on
/// while it runs and back as it was once it stopped. (The events themselves are checked on real traffic by
/// Modular.Core.Tests' KernelFlowNamespaceTests; the built-in sink keeps them in memory, where this test cannot read.)
/// </summary>
public sealed class KernelFlowTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);

    [SkippableFact]
    public void A_kernel_mode_agent_with_flow_logging_marks_mesh_flows_logs_drops_and_restores_conntrack_accounting()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wireguard-go");
        Prerequisites.RequireTool("conntrack");
        using var rig = new MeshRig(output, "kf");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        foreach (var (name, flows) in new[] { ("kfa", false), ("kfb", true) })
        {
            var agent = rig.AddAgent(name);
            agent.WriteConfig(key, "[proxy]\nkind = \"udp\"" + (flows ? "\n[netflow]\nenabled = true" : ""));
            agent.UseKernelMode();
            if (flows)
            {
                // A fresh namespace starts with accounting off once conntrack is loaded; the agent must put it back so.
                agent.Namespace.Exec("nft add table inet kfprobe");
                agent.Namespace.Exec("nft add chain inet kfprobe c { type filter hook output priority 0 ; }");
                agent.Namespace.Exec("nft add rule inet kfprobe c ct state new counter");
                agent.Namespace.Exec("sysctl -q -w net.netfilter.nf_conntrack_acct=0");
                agent.Namespace.Exec("nft delete table inet kfprobe");
            }

            agent.Start();
        }

        var b = rig["kfb"];
        rig.WaitUntil(() => rig["kfa"].IsConnected("kfb") && b.IsConnected("kfa"), ConnectTimeout, "kfa and kfb Connected", () => MeshTests.Diagnostics(rig, ["kfa", "kfb"]));
        var ipB = b.OverlayIp!;
        rig.WaitUntil(() => rig["kfa"].Ping(ipB), MeshTests.FirstPingTimeout, "kfa -> kfb under the Default policy", () => MeshTests.Diagnostics(rig, ["kfa", "kfb"]));

        var table = b.Namespace.Exec($"nft list table inet modular_{b.Interface}");
        rig.Log(table);
        Assert.Contains("ct state new ct mark set ct mark | 0x00c00000", table, StringComparison.Ordinal);
        Assert.Contains("log prefix \"modular ", table, StringComparison.Ordinal);
        Assert.Contains("group 7423", table, StringComparison.Ordinal);
        Assert.Contains("conntrack events of the mesh's connections", b.Log, StringComparison.Ordinal);
        Assert.Equal("1", b.Namespace.Exec("sysctl -n net.netfilter.nf_conntrack_acct").Trim());

        // The ping's conntrack entry carries the flow bit (and counters, accounting being on).
        var entries = b.Namespace.Exec("conntrack -L -p icmp");
        rig.Log(entries);
        var marks = entries.Split('\n').Where(l => l.Contains($"src={rig["kfa"].OverlayIp} dst={ipB}", StringComparison.Ordinal))
            .Select(l => uint.Parse(l[(l.IndexOf("mark=", StringComparison.Ordinal) + 5)..].Split(' ')[0], CultureInfo.InvariantCulture)).ToList();
        Assert.NotEmpty(marks);
        Assert.All(marks, m => Assert.NotEqual(0u, m & 0x0080_0000));
        Assert.Contains("bytes=", entries, StringComparison.Ordinal);

        b.Stop();
        Assert.Equal("0", b.Namespace.Exec("sysctl -n net.netfilter.nf_conntrack_acct").Trim());
    }
}
