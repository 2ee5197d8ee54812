using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Core.Firewall.Nftables;
using Modular.Testing;
using Xunit.Abstractions;
using static Modular.Core.Tests.Firewall.TestPackets;
using FirewallRule = Modular.Core.Firewall.FirewallRule;
using RuleAction = Modular.Core.Firewall.RuleAction;
using RuleProtocol = Modular.Core.Firewall.RuleProtocol;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// The rendered tables in a real kernel: applied with nft inside a fresh network namespace, enforced on real
/// traffic over a veth pair that stands in for the WireGuard interface, counted, and removed.
/// </summary>
public sealed class NftablesNamespaceTests(ITestOutputHelper output)
{
    private const string ClientIp = "100.64.0.1";
    private const string HostIp = "100.64.0.2";

    [SkippableFact]
    public async Task A_table_is_applied_replacing_a_stale_one_and_removed_on_dispose()
    {
        RequireNft();
        using var ns = NetworkNamespace.Create("nftapply");
        var nft = new NamespaceNftables(ns.Name);
        // What a crashed run may leave behind: the table, with a chain the agent would not write.
        ns.Exec("nft add table inet modular_mdlt0");
        ns.Exec("nft add chain inet modular_mdlt0 leftover");

        var enforcer = new NftablesEnforcer("mdlt0", IPAddress.Parse(HostIp), null, nft, NullLogger.Instance);
        try
        {
            Assert.True(await enforcer.ApplyAsync([Rule("web", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "80,443,8000-8100")], CancellationToken.None));
            Assert.True(await enforcer.ApplyAsync([Rule("web", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "80"), Rule("ping", RuleAction.Accept, RuleProtocol.Icmp, "fd00::/8")], CancellationToken.None));

            Assert.Contains("table inet modular_mdlt0", ns.Exec("nft list tables"), StringComparison.Ordinal);
            var table = ns.Exec("nft list table inet modular_mdlt0");
            output.WriteLine(table);
            Assert.DoesNotContain("leftover", table, StringComparison.Ordinal);
            Assert.Matches("ip6 saddr fd00::/8 meta l4proto \\{ icmp, ipv6-icmp \\} counter packets 0 bytes 0 ct mark set ct mark & 0x[0-9a-f]{8} \\| 0x[0-9a-f]{8} accept comment \"ping\"", table);
            Assert.Single(ns.Exec("nft list tables").Split('\n', StringSplitOptions.RemoveEmptyEntries), line => line.Contains("modular_mdlt0", StringComparison.Ordinal));
        }
        finally
        {
            await enforcer.DisposeAsync();
        }

        Assert.DoesNotContain("modular_mdlt0", ns.Exec("nft list tables"), StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Real_traffic_passes_the_allowed_port_and_the_rest_is_dropped_and_counted()
    {
        RequireNft();
        using var client = NetworkNamespace.Create("nftcli");
        using var host = NetworkNamespace.Create("nfthost");
        var device = $"mdlt{Environment.ProcessId % 10000}";
        Shell.Run("ip", $"link add nftc{Environment.ProcessId % 10000} netns {client.Name} type veth peer name {device} netns {host.Name}");
        client.Exec($"ip addr add {ClientIp}/24 dev nftc{Environment.ProcessId % 10000}");
        client.Exec($"ip link set nftc{Environment.ProcessId % 10000} up");
        host.Exec($"ip addr add {HostIp}/24 dev {device}");
        host.Exec($"ip link set {device} up");
        Assert.Equal(0, client.TryExec($"ping -c 1 -W 2 {HostIp}").ExitCode);

        await using var enforcer = new NftablesEnforcer(device, IPAddress.Parse(HostIp), null, new NamespaceNftables(host.Name), NullLogger.Instance);
        Assert.True(await enforcer.ApplyAsync(
        [
            Rule("web", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "80"),
            Rule("no-telnet", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "23"),
        ], CancellationToken.None));

        // Nothing listens in the host namespace: an allowed SYN is answered at once with a RST ("refused"); a
        // dropped one gets no answer at all and the bounded attempt times out.
        Assert.Equal(Outcome.Refused, TcpProbe(client, HostIp, 80));
        Assert.Equal(Outcome.TimedOut, TcpProbe(client, HostIp, 22));
        Assert.Equal(Outcome.TimedOut, TcpProbe(client, HostIp, 23));
        Assert.NotEqual(0, client.TryExec($"ping -c 1 -W 1 {HostIp}").ExitCode);
        // The mesh DNS port stays reachable whatever the policies: refused, not dropped.
        Assert.Equal(Outcome.Refused, TcpProbe(client, HostIp, 53));

        await enforcer.RefreshAsync(CancellationToken.None);
        var status = enforcer.Status;
        output.WriteLine(host.Exec("nft list table inet " + enforcer.Table));
        Assert.True(status.DropsByRule["no-telnet"] >= 1, "the telnet SYN was counted under its rule");
        Assert.True(status.DefaultDrops >= 2, "the SSH SYN and the ping were counted as default drops");

        // The policy goes; the host's own outbound traffic still flows (default accept out, replies established).
        Assert.True(await enforcer.ApplyAsync([], CancellationToken.None));
        Assert.Equal(Outcome.Refused, TcpProbe(host, ClientIp, 9));
        Assert.Equal(Outcome.TimedOut, TcpProbe(client, HostIp, 80));
    }

    /// <summary>
    /// Large policies apply in one transaction and their counters read back: 10,000 rules with 10,000 IDs (the worst
    /// case: one nft rule each) and 10,000 rules from 10 policies over 1,000 peers (address sets). Times are
    /// logged, not asserted.
    /// </summary>
    [SkippableTheory]
    [InlineData(10_000)]
    [InlineData(10)]
    public async Task Ten_thousand_rules_apply_replace_and_read_back(int policies)
    {
        RequireNft();
        using var ns = NetworkNamespace.Create("nftbig");
        await using var enforcer = new NftablesEnforcer("mdlt0", IPAddress.Parse(HostIp), null, new NamespaceNftables(ns.Name), NullLogger.Instance);
        var rules = Enumerable.Range(0, 10_000)
            .Select(i => (Policy: i % policies, Peer: i / policies))
            .Select(r => Rule($"p{r.Policy}", r.Policy % 10 == 0 ? RuleAction.Drop : RuleAction.Accept, RuleProtocol.Tcp,
                $"100.{64 + (r.Peer / 65536)}.{r.Peer / 256 % 256}.{r.Peer % 256}", (1000 + r.Policy).ToString(System.Globalization.CultureInfo.InvariantCulture)))
            .ToList();

        var render = Stopwatch.StartNew();
        var script = NftablesRenderer.Render("mdlt0", rules, null).Script;
        render.Stop();
        var first = Stopwatch.StartNew();
        Assert.True(await enforcer.ApplyAsync(rules, CancellationToken.None));
        first.Stop();
        var replace = Stopwatch.StartNew();
        Assert.True(await enforcer.ApplyAsync(rules, CancellationToken.None)); // reads the old counters, then replaces
        replace.Stop();
        var read = Stopwatch.StartNew();
        await enforcer.RefreshAsync(CancellationToken.None);
        read.Stop();

        Assert.Equal(10_000, enforcer.Status.Rules);
        Assert.Equal((policies + 9) / 10, enforcer.Status.DropsByRule.Count);
        Assert.Null(enforcer.Status.Error);
        var nftRules = script.Split('\n').Count(line => line.Contains(" comment \"p", StringComparison.Ordinal));
        output.WriteLine($"10,000 rules from {policies} policies -> {nftRules} nft rules, script {script.Length / 1024} KiB: rendered in {render.ElapsedMilliseconds} ms; "
            + $"first apply {first.ElapsedMilliseconds} ms; replace (counters read + apply) {replace.ElapsedMilliseconds} ms; counter read {read.ElapsedMilliseconds} ms");
    }

    private enum Outcome
    {
        Refused,
        TimedOut,
        Connected,
    }

    /// <summary>One TCP connection attempt from a namespace, at most 2 s.</summary>
    private static Outcome TcpProbe(NetworkNamespace from, string address, int port)
    {
        var started = Stopwatch.GetTimestamp();
        var result = from.TryExec($"timeout 2 bash -c \"exec 3<>/dev/tcp/{address}/{port}\"", TimeSpan.FromSeconds(10));
        return result.ExitCode switch
        {
            0 => Outcome.Connected,
            124 => Outcome.TimedOut,
            _ when result.Error.Contains("refused", StringComparison.OrdinalIgnoreCase) => Outcome.Refused,
            _ => throw new InvalidOperationException($"probe to {address}:{port} ended with {result.ExitCode} after {Stopwatch.GetElapsedTime(started)}: {result.Error}"),
        };
    }

    private static void RequireNft()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("nft");
        Prerequisites.RequireTool("ip");
        Prerequisites.RequireTool("timeout");
    }
}
