using Modular.Core.Firewall;
using Wire = Modular.Control.Management;

namespace Modular.Core.Tests.Firewall;

public class FirewallRuleMapperTests
{
    private static Wire.FirewallRule Rule(string peerIp, string direction = "in", string action = "accept", string protocol = "tcp", params (uint Start, uint End)[] ports)
    {
        var rule = new Wire.FirewallRule { RuleId = "p1", PeerIp = peerIp, Direction = direction, Action = action, Protocol = protocol };
        foreach (var (start, end) in ports)
        {
            rule.PortRanges.Add(new Wire.PortRange { Start = start, End = end });
        }

        return rule;
    }

    [Fact]
    public void Maps_map_rules_into_firewall_rules()
    {
        var mapped = FirewallRuleMapper.Map([Rule("100.64.0.0/10", "in", "accept", "tcp", (80, 80), (8000, 8100)), Rule("fd00::1", "out", "drop", "icmp")]);
        Assert.Empty(mapped.Rejected);
        Assert.Equal(2, mapped.Rules.Count);
        var web = mapped.Rules[0];
        Assert.Equal(RuleDirection.Inbound, web.Direction);
        Assert.Equal(RuleProtocol.Tcp, web.Protocol);
        Assert.Equal([new PortRange(80, 80), new PortRange(8000, 8100)], web.Ports);
        Assert.Equal(96 + 10, web.Remote.Length);
        Assert.Equal("100.64.0.0/10", web.Remote.ToString());
        Assert.Equal(RuleAction.Drop, mapped.Rules[1].Action);
        Assert.Equal(128, mapped.Rules[1].Remote.Length);
    }

    [Fact]
    public void Bad_entries_are_skipped_with_a_reason_never_thrown()
    {
        var mapped = FirewallRuleMapper.Map([
            Rule("not-an-ip"),
            Rule("100.64.0.1/40"),
            Rule("100.64.0.1", direction: "sideways"),
            Rule("100.64.0.1", action: "maybe"),
            Rule("100.64.0.1", protocol: "gre"),
            Rule("100.64.0.1", ports: (0, 10)),
            Rule("100.64.0.1", ports: (70000, 70000)),
            Rule("100.64.0.1", ports: (90, 80)),
            Rule("100.64.0.1"),
        ]);
        Assert.Single(mapped.Rules);
        Assert.Equal(8, mapped.Rejected.Count);
        Assert.All(mapped.Rejected, r => Assert.StartsWith("rule p1 ", r, StringComparison.Ordinal));
    }
}
