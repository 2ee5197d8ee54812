using Wire = Modular.Control.Management;

namespace Modular.Core.Firewall;

/// <summary>
/// Turns the firewall rules of a management network map into the firewall's own rules. A rule the agent
/// cannot read (bad address, unknown protocol, port out of range) is skipped and counted, never thrown:
/// a bad entry from the server must not take the agent's whole policy down — and skipping an accept
/// only narrows access, while a skipped drop is reported through <see cref="MappedRules.Rejected"/>.
/// </summary>
public static class FirewallRuleMapper
{
    public static MappedRules Map(IEnumerable<Wire.FirewallRule> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var mapped = new List<FirewallRule>();
        var rejected = new List<string>();
        foreach (var rule in rules)
        {
            if (TryMap(rule, out var result, out var reason))
            {
                mapped.Add(result);
            }
            else
            {
                rejected.Add($"rule {rule.RuleId} ({rule.PeerIp}): {reason}");
            }
        }

        return new MappedRules(mapped, rejected);
    }

    private static bool TryMap(Wire.FirewallRule rule, out FirewallRule result, out string reason)
    {
        result = null!;
        if (!IpPrefix128.TryParse(rule.PeerIp, out var remote))
        {
            reason = "peer_ip is not an address or prefix";
            return false;
        }

        RuleDirection direction;
        switch (rule.Direction)
        {
            case "in":
                direction = RuleDirection.Inbound;
                break;
            case "out":
                direction = RuleDirection.Outbound;
                break;
            default:
                reason = $"unknown direction '{rule.Direction}'";
                return false;
        }

        RuleAction action;
        switch (rule.Action)
        {
            case "accept":
                action = RuleAction.Accept;
                break;
            case "drop":
                action = RuleAction.Drop;
                break;
            default:
                reason = $"unknown action '{rule.Action}'";
                return false;
        }

        RuleProtocol protocol;
        switch (rule.Protocol)
        {
            case "all" or "":
                protocol = RuleProtocol.All;
                break;
            case "tcp":
                protocol = RuleProtocol.Tcp;
                break;
            case "udp":
                protocol = RuleProtocol.Udp;
                break;
            case "icmp":
                protocol = RuleProtocol.Icmp;
                break;
            default:
                reason = $"unknown protocol '{rule.Protocol}'";
                return false;
        }

        var ports = new List<PortRange>(rule.PortRanges.Count);
        foreach (var range in rule.PortRanges)
        {
            if (range.Start is < 1 or > ushort.MaxValue || range.End is < 1 or > ushort.MaxValue || range.End < range.Start)
            {
                reason = $"bad port range {range.Start}-{range.End}";
                return false;
            }

            ports.Add(new PortRange((ushort)range.Start, (ushort)range.End));
        }

        IpPrefix128? destination = null;
        if (rule.Destination.Length > 0)
        {
            if (!IpPrefix128.TryParse(rule.Destination, out var routed))
            {
                reason = "destination is not an address or prefix";
                return false;
            }

            destination = routed;
        }

        result = new FirewallRule(rule.RuleId, direction, action, protocol, remote, ports) { Destination = destination };
        reason = "";
        return true;
    }
}

/// <summary>The rules the agent applies, and why others were skipped (safe to log: no secrets).</summary>
public sealed record MappedRules(IReadOnlyList<FirewallRule> Rules, IReadOnlyList<string> Rejected);
