using System.Net;
using Modular.Core.Firewall;
using Modular.Core.Firewall.Nftables;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>The nftables text of a policy: exact script, precedence order, and agreement with the userspace matcher.</summary>
public sealed class NftablesRendererTests
{
    private static readonly IPAddress Own = IPAddress.Parse("100.64.0.2");

    [Fact]
    public void Renders_the_whole_table_with_chains_counters_comments_and_precedence_order()
    {
        FirewallRule[] rules =
        [
            Rule("everyone-ping", RuleAction.Accept, RuleProtocol.Icmp, "100.64.0.0/10"),
            Rule("web", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.1/32", "80,443,8000-8100"),
            Rule("no-ssh", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "22"),
            Rule("v6-dns", RuleAction.Accept, RuleProtocol.Udp, "fd00:1::/64", "53"),
            Rule("any-from-7", RuleAction.Accept, RuleProtocol.All, "100.64.0.7"),
            Rule("no-smtp-out", RuleAction.Drop, RuleProtocol.Tcp, "0.0.0.0/0", "25", RuleDirection.Outbound),
            Rule("routed", RuleAction.Accept, RuleProtocol.All, "100.64.0.0/10") with { Destination = new IpPrefix128(0, 0) },
        ];

        var policy = NftablesRenderer.Render("mdl0", rules, Own);

        Assert.Equal("modular_mdl0", policy.Table);
        Assert.Equal(6, policy.RuleCount);
        Assert.Equal(
            """
            add table inet modular_mdl0
            delete table inet modular_mdl0
            table inet modular_mdl0 {
            	counter default_drop {
            	}
            	counter invalid {
            	}
            	counter drop_0 {
            	}
            	counter drop_1 {
            	}
            	chain input {
            		type filter hook input priority filter; policy accept;
            		iifname "mdl0" jump mesh_in
            	}
            	chain output {
            		type filter hook output priority filter; policy accept;
            		oifname "mdl0" jump mesh_out
            	}
            	chain mesh_in {
            		ct state established ct direction reply accept
            		ct state related accept
            		ct state established ct mark & 0x7f000000 == 0x01000000 accept
            		ct state invalid counter name "invalid" drop comment "invalid"
            		ct state new meta l4proto tcp tcp flags & (syn | ack | rst) != syn counter name "invalid" drop comment "invalid"
            		ip daddr 100.64.0.2 meta l4proto { tcp, udp } th dport 53 accept comment "mesh-dns"
            		ip saddr 100.64.0.1/32 tcp dport { 80, 443, 8000-8100 } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment "web"
            		ip saddr 100.64.0.7/32 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment "any-from-7"
            		ip saddr 100.64.0.0/10 tcp dport 22 counter name "drop_0" drop comment "no-ssh"
            		ip saddr 100.64.0.0/10 meta l4proto { icmp, ipv6-icmp } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment "everyone-ping"
            		ip6 saddr fd00:1::/64 udp dport 53 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment "v6-dns"
            		counter name "default_drop" drop comment "default-drop"
            	}
            	chain mesh_out {
            		ct state established ct direction reply accept
            		ct state related accept
            		ct state established ct mark & 0x7f000000 == 0x01000000 accept
            		meta nfproto ipv4 tcp dport 25 counter name "drop_1" drop comment "no-smtp-out"
            		ct mark set ct mark & 0x80ffffff | 0x01000000 accept
            	}
            }

            """.ReplaceLineEndings("\n"),
            policy.Script);
        Assert.Equal(new Dictionary<string, string> { ["drop_0"] = "no-ssh", ["drop_1"] = "no-smtp-out" }, policy.DropRuleIdByCounter);
    }

    [Fact]
    public void Order_follows_prefix_then_named_protocol_then_port_width_then_drop_then_rule_id_whatever_the_input_order()
    {
        FirewallRule[] rules =
        [
            Rule("b-accept", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/16", "80"),
            Rule("a-accept", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/16", "80"),
            Rule("z-drop", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/16", "80"),
            Rule("wide-ports", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/16", "1-1000"),
            Rule("all-proto", RuleAction.Drop, RuleProtocol.All, "100.64.0.0/16", "80"),
            Rule("host", RuleAction.Accept, RuleProtocol.All, "100.64.0.9/32"),
            Rule("short", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "80"),
        ];
        string[] expected = ["host", "z-drop", "a-accept", "b-accept", "wide-ports", "all-proto", "short"];

        for (var seed = 0; seed < 5; seed++)
        {
            var shuffled = rules.OrderBy(_ => Random.Shared.Next()).ToList();
            Assert.Equal(expected, NftablesRenderer.Ordered(shuffled).Select(e => e.Rule.RuleId));
        }
    }

    [Fact]
    public void A_rule_whose_ranges_differ_in_width_is_split_around_a_rule_of_middling_width()
    {
        // Userspace: port 80 -> "mixed" (width 1 beats 1001), 1500 -> "middle" (1001 beats 3001), 5000 -> "mixed".
        var mixed = Rule("mixed", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.0/10", "80,3000-6000");
        var middle = Rule("middle", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.0/10", "1000-2000,70-90");

        var ordered = NftablesRenderer.Ordered([middle, mixed]);

        Assert.Equal(["mixed", "middle", "mixed"], ordered.Select(e => e.Rule.RuleId));
        Assert.Equal([new PortRange(80, 80)], ordered[0].Ranges);
        Assert.Equal([new PortRange(70, 90), new PortRange(1000, 2000)], ordered[1].Ranges);
        Assert.Equal([new PortRange(3000, 6000)], ordered[2].Ranges);
    }

    [Fact]
    public void Overlapping_and_touching_ranges_of_one_rule_are_joined_so_nft_accepts_the_set()
    {
        var policy = NftablesRenderer.Render("mdl0", [Rule("r", RuleAction.Accept, RuleProtocol.Udp, "100.64.0.1", "100-200,150-250,251,300")], null);

        Assert.Contains("udp dport { 100-251, 300 } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"r\"", policy.Script, StringComparison.Ordinal);
    }

    [Fact]
    public void Icmp_covers_icmpv6_and_all_with_ports_means_tcp_and_udp()
    {
        var policy = NftablesRenderer.Render("mdl0", [
            Rule("ping", RuleAction.Accept, RuleProtocol.Icmp, "fd00::/8", "80"),
            Rule("both", RuleAction.Accept, RuleProtocol.All, "100.64.0.1", "5000-5010"),
        ], null);

        Assert.Contains("ip6 saddr fd00::/8 meta l4proto { icmp, ipv6-icmp } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"ping\"", policy.Script, StringComparison.Ordinal);
        Assert.Contains("ip saddr 100.64.0.1/32 meta l4proto { tcp, udp } th dport 5000-5010 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"both\"", policy.Script, StringComparison.Ordinal);
        Assert.DoesNotContain("mesh-dns", policy.Script, StringComparison.Ordinal);
    }

    [Fact]
    public void The_rosenpass_port_is_admitted_on_the_own_address_like_mesh_dns()
    {
        var own = System.Net.IPAddress.Parse("100.64.0.2");
        var with = NftablesRenderer.Render("mdl0", [], own, new FirewallOptions { RosenpassPort = 9999 });
        var without = NftablesRenderer.Render("mdl0", [], own);

        Assert.Contains("ip daddr 100.64.0.2 udp dport 9999 accept comment \"rosenpass\"", with.Script, StringComparison.Ordinal);
        Assert.DoesNotContain("rosenpass", without.Script, StringComparison.Ordinal);
    }

    [Fact]
    public void An_ipv6_prefix_that_covers_the_mapped_ipv4_block_matches_ipv4_too()
    {
        var policy = NftablesRenderer.Render("mdl0", [
            Rule("everything", RuleAction.Accept, RuleProtocol.Tcp, "::/0", "22"),
            Rule("every-v4", RuleAction.Accept, RuleProtocol.Udp, "0.0.0.0/0", "53"),
            Rule("low-v6", RuleAction.Accept, RuleProtocol.Udp, "::/64", "123"),
        ], null);

        Assert.Contains("\t\ttcp dport 22 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"everything\"\n", policy.Script, StringComparison.Ordinal);
        Assert.Contains("\t\tmeta nfproto ipv4 udp dport 53 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"every-v4\"\n", policy.Script, StringComparison.Ordinal);
        Assert.Contains("\t\tmeta nfproto ipv4 udp dport 123 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"low-v6\"\n", policy.Script, StringComparison.Ordinal);
        Assert.Contains("\t\tip6 saddr ::/64 udp dport 123 counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"low-v6\"\n", policy.Script, StringComparison.Ordinal);
    }

    [Fact]
    public void Rule_ids_that_are_not_plain_never_reach_the_script_and_still_map_back_to_their_id()
    {
        const string Hostile = "x\" accept; flush ruleset; #\n";
        var policy = NftablesRenderer.Render("mdl0", [
            Rule(Hostile, RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.1", "22"),
            Rule("default-drop", RuleAction.Drop, RuleProtocol.Tcp, "100.64.0.1", "23"),
        ], null);

        Assert.DoesNotContain("flush", policy.Script, StringComparison.Ordinal);
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Count(policy.Script, "comment \"rule-[0-9a-f]{16}\"\n"));
        Assert.Equal([Hostile, "default-drop"], policy.DropRuleIdByCounter.Values.Order(StringComparer.Ordinal).Reverse());
    }

    [Fact]
    public void A_policy_sent_for_each_peer_of_a_group_becomes_one_rule_with_an_address_set()
    {
        var rules = Enumerable.Range(1, 300).Select(i => Rule("group-web", RuleAction.Accept, RuleProtocol.Tcp, $"100.64.{i / 256}.{i % 256}", "80,443")).ToList();
        rules.Add(Rule("group-web", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.1", "80,443")); // a duplicate
        rules.Add(Rule("group-web", RuleAction.Accept, RuleProtocol.Tcp, "fd00::1", "80,443")); // other family: its own rule
        rules.Add(Rule("other", RuleAction.Accept, RuleProtocol.Tcp, "100.64.0.9", "80,443"));

        var ordered = NftablesRenderer.Ordered(rules);
        var policy = NftablesRenderer.Render("mdl0", rules, null);

        Assert.Equal(["group-web", "group-web", "other"], ordered.Select(g => g.Rule.RuleId));
        Assert.Equal(300, ordered[0].Remotes.Count);
        Assert.Contains("ip saddr { 100.64.0.1/32, 100.64.0.2/32, ", policy.Script, StringComparison.Ordinal);
        Assert.Contains("100.64.1.44/32 } tcp dport { 80, 443 } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"group-web\"\n", policy.Script, StringComparison.Ordinal);
        Assert.Contains("ip6 saddr fd00::1/128 tcp dport { 80, 443 } counter ct mark set ct mark & 0x80ffffff | 0x01000000 accept comment \"group-web\"\n", policy.Script, StringComparison.Ordinal);
        Assert.Equal(303, policy.RuleCount);
    }

    [Theory]
    [InlineData("mdl0\" accept")]
    [InlineData("")]
    [InlineData("a-name-far-too-long")]
    [InlineData("wg 0")]
    public void Interface_names_outside_the_safe_alphabet_are_refused(string name)
        => Assert.ThrowsAny<ArgumentException>(() => NftablesRenderer.Render(name, [], null));

    [Fact]
    public void Table_names_replace_characters_nft_identifiers_do_not_take()
        => Assert.Equal("modular_wg_mesh_1", NftablesRenderer.TableName("wg-mesh.1"));

    [Fact]
    public void An_outbound_default_drop_is_counted_as_a_default_drop()
    {
        var policy = NftablesRenderer.Render("mdl0", [], Own, new FirewallOptions { DefaultOutbound = RuleAction.Drop });

        var outChain = policy.Script[policy.Script.IndexOf("chain mesh_out", StringComparison.Ordinal)..];
        Assert.Contains("counter name \"default_drop\" drop comment \"default-drop\"", outChain, StringComparison.Ordinal);
    }

    /// <summary>
    /// The property the whole renderer rests on: for random rule sets and random packets, the first rule in
    /// nft order that matches is the one the userspace <see cref="CompiledRuleSet"/> picks.
    /// </summary>
    [Fact]
    public void The_first_match_in_nft_order_is_the_userspace_winner_for_random_rule_sets()
    {
        var random = new Random(20261125);
        string[] prefixes = ["100.64.0.0/10", "100.64.0.0/16", "100.64.1.0/24", "100.64.1.0/25", "100.64.1.128/25", "100.64.1.7/32", "100.64.1.8/32", "100.64.1.200/32", "0.0.0.0/0", "::/0", "fd00::/64", "fd00::1/128", "fd00::2/128"];
        string[] commonPorts = ["80", "22,80", "1000-1100"];
        RuleProtocol[] protocols = [RuleProtocol.All, RuleProtocol.Tcp, RuleProtocol.Udp, RuleProtocol.Icmp];
        string[] remotes = ["100.64.1.7", "100.64.1.8", "100.64.1.9", "100.64.1.200", "100.64.2.1", "100.65.0.1", "10.0.0.1", "fd00::1", "fd00::2", "fd00::3", "fe80::1"];
        byte[] packetProtocols = [IpProtocol.Tcp, IpProtocol.Udp, IpProtocol.Icmp, 47];
        for (var round = 0; round < 200; round++)
        {
            var rules = new List<FirewallRule>();
            var count = random.Next(1, 12);
            for (var i = 0; i < count; i++)
            {
                var ports = random.Next(3) switch
                {
                    0 => "",
                    1 => commonPorts[random.Next(commonPorts.Length)],
                    _ => string.Join(',', Enumerable.Range(0, random.Next(1, 4)).Select(_ => RandomRange(random))),
                };
                rules.Add(Rule($"r{random.Next(4)}", random.Next(2) == 0 ? RuleAction.Accept : RuleAction.Drop,
                    protocols[random.Next(protocols.Length)], prefixes[random.Next(prefixes.Length)], ports));
            }

            var compiled = CompiledRuleSet.Compile(rules);
            var ordered = NftablesRenderer.Ordered(rules);
            for (var probe = 0; probe < 100; probe++)
            {
                var remote = IpPrefix128.ToUInt128(IPAddress.Parse(remotes[random.Next(remotes.Length)]));
                var protocol = packetProtocols[random.Next(packetProtocols.Length)];
                var port = protocol is IpProtocol.Tcp or IpProtocol.Udp ? (ushort)random.Next(1, 1200) : (ushort)0;
                var expected = compiled.Match(remote, protocol, port);
                var actual = ordered.FindIndex(g => g.Remotes.Any(p => p.Contains(remote)) && Matches(g.Rule, g.Ranges, protocol, port));
                // Rules identical but for the object can tie; what must agree is the ID counted and the action taken.
                Assert.Equal(
                    expected < 0 ? "none" : $"{rules[expected].RuleId} {rules[expected].Action}",
                    actual < 0 ? "none" : $"{ordered[actual].Rule.RuleId} {ordered[actual].Rule.Action}");
            }
        }
    }

    private static string RandomRange(Random random)
    {
        var start = random.Next(1, 1000);
        return random.Next(2) == 0 ? start.ToString(System.Globalization.CultureInfo.InvariantCulture) : $"{start}-{start + random.Next(1, 300)}";
    }

    /// <summary>What the rendered nft rule tests besides the address set: protocol (icmp covers icmpv6; all with ports is tcp/udp), port set.</summary>
    private static bool Matches(FirewallRule rule, List<PortRange> ranges, byte protocol, ushort port)
    {
        var anyPort = ranges is [{ Start: 0, End: ushort.MaxValue }];
        var hasPorts = protocol is IpProtocol.Tcp or IpProtocol.Udp;
        return rule.Protocol switch
        {
            RuleProtocol.Icmp => protocol is IpProtocol.Icmp or IpProtocol.IcmpV6,
            RuleProtocol.Tcp => protocol == IpProtocol.Tcp && (anyPort || ranges.Any(r => r.Contains(port))),
            RuleProtocol.Udp => protocol == IpProtocol.Udp && (anyPort || ranges.Any(r => r.Contains(port))),
            _ => anyPort || (hasPorts && ranges.Any(r => r.Contains(port))),
        };
    }
}
