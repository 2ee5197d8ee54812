using Modular.Core.Firewall;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall;

public class CompiledRuleSetTests
{
    private static UInt128 Address(string text)
    {
        Assert.True(IpPrefix128.TryParse(text, out var prefix));
        return prefix.Address;
    }

    private static string? Winner(CompiledRuleSet rules, string remote, byte protocol, ushort port)
    {
        var index = rules.Match(Address(remote), protocol, port);
        return index < 0 ? null : rules.Rules[index].RuleId;
    }

    [Fact]
    public void Longer_prefix_wins_over_shorter()
    {
        var rules = CompiledRuleSet.Compile([
            Rule("wide-accept", RuleAction.Accept, RuleProtocol.All, "100.64.0.0/10"),
            Rule("host-drop", RuleAction.Drop, RuleProtocol.All, "100.64.0.7/32"),
        ]);
        Assert.Equal("host-drop", Winner(rules, "100.64.0.7", IpProtocol.Tcp, 80));
        Assert.Equal("wide-accept", Winner(rules, "100.64.0.8", IpProtocol.Tcp, 80));
        Assert.Null(Winner(rules, "10.0.0.1", IpProtocol.Tcp, 80));
    }

    [Fact]
    public void Drop_wins_over_accept_at_equal_specificity_whatever_the_order()
    {
        var accept = Rule("a-accept", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/10", "80");
        var drop = Rule("z-drop", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "80");
        Assert.Equal("z-drop", Winner(CompiledRuleSet.Compile([accept, drop]), "100.64.1.1", IpProtocol.Tcp, 80));
        Assert.Equal("z-drop", Winner(CompiledRuleSet.Compile([drop, accept]), "100.64.1.1", IpProtocol.Tcp, 80));
    }

    [Fact]
    public void Narrower_port_range_and_named_protocol_win_at_the_same_prefix()
    {
        var rules = CompiledRuleSet.Compile([
            Rule("all-drop", RuleAction.Drop, RuleProtocol.All, "100.64.0.0/10"),
            Rule("tcp-range", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/10", "8000-8100"),
            Rule("tcp-8080-drop", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "8080"),
            Rule("udp-any", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10"),
        ]);
        Assert.Equal("tcp-range", Winner(rules, "100.64.0.5", IpProtocol.Tcp, 8000));
        Assert.Equal("tcp-range", Winner(rules, "100.64.0.5", IpProtocol.Tcp, 8100));
        Assert.Equal("tcp-8080-drop", Winner(rules, "100.64.0.5", IpProtocol.Tcp, 8080));
        Assert.Equal("all-drop", Winner(rules, "100.64.0.5", IpProtocol.Tcp, 8101));
        Assert.Equal("all-drop", Winner(rules, "100.64.0.5", IpProtocol.Tcp, 7999));
        Assert.Equal("udp-any", Winner(rules, "100.64.0.5", IpProtocol.Udp, 8080));
        Assert.Equal("all-drop", Winner(rules, "100.64.0.5", IpProtocol.Icmp, 0));
    }

    [Fact]
    public void Overlapping_ranges_resolve_deterministically_by_width_then_action_then_id()
    {
        var rules = new[]
        {
            Rule("r1", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10", "100-200"),
            Rule("r2", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10", "150-250"),
            Rule("r3", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10", "180-190"),
            Rule("r0", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10", "120-220"),
        };
        var forward = CompiledRuleSet.Compile(rules);
        var backward = CompiledRuleSet.Compile(rules.Reverse().ToList());
        for (ushort port = 90; port <= 260; port++)
        {
            var expected = rules
                .Where(r => r.Ports[0].Contains(port))
                .OrderBy(r => r.Ports[0].Width)
                .ThenBy(r => r.RuleId, StringComparer.Ordinal)
                .Select(r => r.RuleId)
                .FirstOrDefault();
            Assert.Equal(expected, Winner(forward, "100.64.0.1", IpProtocol.Udp, port));
            Assert.Equal(expected, Winner(backward, "100.64.0.1", IpProtocol.Udp, port));
        }
    }

    [Fact]
    public void Ipv6_and_ipv4_prefixes_share_one_trie_without_mixing()
    {
        var rules = CompiledRuleSet.Compile([
            Rule("v6", RuleAction.Accept, RuleProtocol.All, "fd00::/8"),
            Rule("v4-all", RuleAction.Accept, RuleProtocol.All, "0.0.0.0/0"),
        ]);
        Assert.Equal("v6", Winner(rules, "fd12::1", IpProtocol.Udp, 1));
        Assert.Equal("v4-all", Winner(rules, "8.8.8.8", IpProtocol.Udp, 1));
        Assert.Null(Winner(rules, "2001:db8::1", IpProtocol.Udp, 1));
    }

    [Fact]
    public void Ipv6_wide_prefixes_cover_ipv4_below_the_more_specific_ipv4_rules()
    {
        var rules = CompiledRuleSet.Compile([
            Rule("everything", RuleAction.Drop, RuleProtocol.All, "::/0"),
            Rule("overlay", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.0/10"),
        ]);
        Assert.Equal("everything", Winner(rules, "10.0.0.1", IpProtocol.Udp, 53));
        Assert.Equal("overlay", Winner(rules, "100.64.3.4", IpProtocol.Udp, 53));
        Assert.Equal("everything", Winner(rules, "100.64.3.4", IpProtocol.Tcp, 53));
        Assert.Equal("everything", Winner(CompiledRuleSet.Compile([Rule("everything", RuleAction.Drop, RuleProtocol.All, "::/0")]), "10.0.0.1", IpProtocol.Udp, 53));
    }

    [Fact]
    public void Ten_thousand_rules_match_like_a_linear_scan()
    {
        var random = new Random(42);
        var rules = new List<FirewallRule>();
        for (var i = 0; i < 10_000; i++)
        {
            var host = $"100.64.{random.Next(0, 4)}.{random.Next(1, 255)}";
            var prefix = random.Next(4) switch { 0 => host + "/32", 1 => $"100.64.{random.Next(0, 4)}.0/24", 2 => "100.64.0.0/16", _ => "100.64.0.0/10" };
            var start = random.Next(1, 65_000);
            var ports = random.Next(3) == 0 ? "" : $"{start}-{start + random.Next(0, 500)}";
            var protocol = (RuleProtocol)random.Next(0, 3);
            rules.Add(Rule($"rule-{i:D5}", random.Next(4) == 0 ? RuleAction.Drop : RuleAction.Accept, protocol, prefix, ports));
        }

        var compiled = CompiledRuleSet.Compile(rules);
        for (var probe = 0; probe < 2_000; probe++)
        {
            var remote = $"100.64.{random.Next(0, 4)}.{random.Next(1, 255)}";
            var port = (ushort)random.Next(1, 65_535);
            var protocol = random.Next(2) == 0 ? IpProtocol.Tcp : IpProtocol.Udp;
            var address = Address(remote);
            var expected = rules
                .Where(r => r.Remote.Contains(address)
                    && (r.Protocol == RuleProtocol.All || (r.Protocol == RuleProtocol.Tcp) == (protocol == IpProtocol.Tcp) && r.Protocol != RuleProtocol.Icmp)
                    && (r.Ports.Count == 0 || r.Ports.Any(p => p.Contains(port))))
                .OrderByDescending(r => r.Remote.Length)
                .ThenBy(r => r.Protocol == RuleProtocol.All ? 1 : 0)
                .ThenBy(r => r.Ports.Count == 0 ? 65_536 : r.Ports.Where(p => p.Contains(port)).Min(p => p.Width))
                .ThenBy(r => r.Action == RuleAction.Drop ? 0 : 1)
                .ThenBy(r => r.RuleId, StringComparer.Ordinal)
                .Select(r => r.RuleId)
                .FirstOrDefault();
            Assert.Equal(expected, Winner(compiled, remote, protocol, port));
        }
    }
}
