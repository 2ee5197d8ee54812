using System.Globalization;
using System.Net;
using System.Text;
using Modular.Core.Firewall;

namespace Modular.Core.Routing;

/// <summary>
/// The nftables table of a routing peer (<c>inet modular_route_&lt;iface&gt;</c>), also installed on a peer that
/// routes nothing (so a host whose forwarding someone else turned on never forwards for the mesh): a forward chain
/// that lets through replies and related packets, and the connections from the mesh that route rules allow, and
/// drops every other packet forwarded from the mesh interface. A connection a rule accepted is stamped with the
/// table's generation in its conntrack mark (<see cref="Firewall.Nftables.ConntrackMarks"/>, forwarded bit set) and
/// passes on that stamp; one stamped by an older table walks the rules again, so revoking a route rule ends the
/// connections it let through, as in userspace. And a postrouting chain that masquerades
/// mesh traffic leaving towards each route that asks for it. Rules are ordered most specific first (longer
/// destination, longer source, a named protocol, fewer ports, drop before accept), as the agent's
/// userspace firewall decides.
/// </summary>
public static class ForwardingTable
{
    public const string Family = "inet";

    public static string TableName(string iface) => "modular_route_" + Sanitize(iface);

    /// <summary>The whole table as one script (with the prologue that replaces it atomically).</summary>
    /// <param name="filter">False: no forward filtering (every forwarded mesh connection passes); masquerade stays.</param>
    /// <param name="generation">The table's conntrack generation (1..127), cleared from conntrack before this table is applied.</param>
    /// <param name="trustMarks">False when it could not be cleared: established connections from the mesh walk the rules on every packet.</param>
    /// <param name="markFlows">
    /// Kernel-mode flow logging is on: a new connection forwarded from the mesh gets the flow bit (ingress: the remote
    /// peer opened it), as the policy table marks this peer's own, so conntrack reports routed flows too.
    /// </param>
    public static string Render(string iface, IPNetwork overlay, IReadOnlyList<ServedRoute> served, IReadOnlyList<FirewallRule> rules, bool filter = true, int generation = 1, bool trustMarks = true, bool markFlows = false)
    {
        ArgumentNullException.ThrowIfNull(served);
        ArgumentNullException.ThrowIfNull(rules);
        var table = TableName(iface);
        var name = Quote(iface);
        var script = new StringBuilder(Os.Nft.ReplaceTablePrologue(Family, table));
        script.Append(CultureInfo.InvariantCulture, $"table {Family} {table} {{\n");
        script.Append("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
        var stamp = Firewall.Nftables.ConntrackMarks.Stamp(generation, forwarded: true);
        var keep = Firewall.Nftables.ConntrackMarks.FreeMask;
        var firewallBits = Firewall.Nftables.ConntrackMarks.FirewallMask;
        if (markFlows)
        {
            // Before any accept: the rules below keep the free bits (FreeMask) when they stamp.
            var flowBit = Firewall.Nftables.ConntrackMarks.FlowBit;
            var egressBit = Firewall.Nftables.ConntrackMarks.EgressBit;
            script.Append(CultureInfo.InvariantCulture, $"    iifname {name} ct state new ct mark set ct mark & 0x{~egressBit:x8} | 0x{flowBit:x8}\n");
        }

        script.Append("    ct state established ct direction reply accept\n");
        script.Append("    ct state related accept\n");
        if (trustMarks)
        {
            script.Append(CultureInfo.InvariantCulture, $"    ct state established ct mark & 0x{firewallBits:x8} == 0x{stamp:x8} accept\n");
        }

        var acceptRuleIds = markFlows ? AcceptRuleIds(rules, filter) : [];
        foreach (var rule in Ordered(rules, filter))
        {
            script.Append(CultureInfo.InvariantCulture, $"    iifname {name} ip saddr {rule.Remote} ip daddr {rule.Destination}{Match(rule)} counter {(rule.Action == RuleAction.Accept ? Accept(rule) : "drop")} comment {Quote(rule.RuleId)}\n");
        }

        script.Append(filter
            ? string.Create(CultureInfo.InvariantCulture, $"    iifname {name} counter drop comment \"no route rule\"\n  }}\n")
            : string.Create(CultureInfo.InvariantCulture, $"    iifname {name} counter accept comment \"firewall disabled\"\n  }}\n"));
        script.Append("  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n");
        foreach (var route in served.Where(r => r.Masquerade))
        {
            script.Append(CultureInfo.InvariantCulture, $"    ip saddr {overlay} ip daddr {route.Network} oifname != {name} counter masquerade comment {Quote(route.Name)}\n");
        }

        script.Append("  }\n}\n");
        return script.ToString();

        string Accept(FirewallRule rule)
        {
            if (!markFlows)
            {
                return $"ct mark set ct mark & 0x{keep:x8} | 0x{stamp:x8} accept";
            }

            // Flow logging owns the free bits: keep the flow and direction bits set above, stamp the accept rule's
            // index (1-based into AcceptRuleIds) so the flow's events name the rule that let it through.
            var index = IndexOf(acceptRuleIds, rule.RuleId);
            var flowBits = Firewall.Nftables.ConntrackMarks.FlowBit | Firewall.Nftables.ConntrackMarks.EgressBit;
            return $"ct mark set ct mark & 0x{flowBits:x8} | 0x{stamp | index:x8} accept";
        }
    }

    /// <summary>
    /// The forward table's accept rule IDs as <see cref="Render"/> stamps them with flow logging: the one at index i is
    /// stamped as i + 1 in the connection's mark (<see cref="Firewall.Nftables.ConntrackMarks.RuleIndexMask"/>), each ID
    /// once, in the table's order. Recorded per generation (<see cref="Firewall.Nftables.KernelFlowRules.RecordForwarded"/>)
    /// so a routed flow's events carry its rule, as the policy table's do.
    /// </summary>
    public static IReadOnlyList<string> AcceptRuleIds(IReadOnlyList<FirewallRule> rules, bool filter = true)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var ids = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var rule in Ordered(rules, filter).Where(r => r.Action == RuleAction.Accept))
        {
            if (ids.Count < Firewall.Nftables.ConntrackMarks.RuleIndexMask && seen.Add(rule.RuleId))
            {
                ids.Add(rule.RuleId);
            }
        }

        return ids;
    }

    /// <summary>1-based index of <paramref name="ruleId"/>; 0 (no rule named) beyond the mark's room.</summary>
    private static uint IndexOf(IReadOnlyList<string> ids, string ruleId)
    {
        for (var i = 0; i < ids.Count; i++)
        {
            if (string.Equals(ids[i], ruleId, StringComparison.Ordinal))
            {
                return (uint)(i + 1);
            }
        }

        return 0;
    }

    /// <summary>The forward rules in the table's order (most specific first), IPv4 only; none without filtering.</summary>
    private static IEnumerable<FirewallRule> Ordered(IReadOnlyList<FirewallRule> rules, bool filter)
        => rules.Where(r => filter && IsIpv4(r)).OrderByDescending(r => r.Destination!.Value.Length).ThenByDescending(r => r.Remote.Length)
            .ThenBy(r => r.Protocol == RuleProtocol.All).ThenBy(PortCount).ThenBy(r => r.Action == RuleAction.Accept).ThenBy(r => r.RuleId, StringComparer.Ordinal);

    private static bool IsIpv4(FirewallRule rule) => IsIpv4(rule.Remote) && rule.Destination is { } destination && IsIpv4(destination);

    private static bool IsIpv4(IpPrefix128 prefix) => prefix.Length >= 96 && (prefix.Address >> 32) == 0xFFFF;

    private static int PortCount(FirewallRule rule) => rule.Ports.Count == 0 ? 65536 : rule.Ports.Sum(p => p.Width);

    private static string Match(FirewallRule rule)
    {
        var ports = rule.Ports.Count == 0 ? "" : " { " + string.Join(", ", rule.Ports.Select(p => p.Start == p.End ? $"{p.Start}" : $"{p.Start}-{p.End}")) + " }";
        return rule.Protocol switch
        {
            RuleProtocol.Tcp => ports.Length == 0 ? " meta l4proto tcp" : " tcp dport" + ports,
            RuleProtocol.Udp => ports.Length == 0 ? " meta l4proto udp" : " udp dport" + ports,
            RuleProtocol.Icmp => " meta l4proto icmp",
            _ => "",
        };
    }

    /// <summary>A double-quoted nft string; anything but letters, digits and a few safe marks is replaced, so no input can break out of it.</summary>
    private static string Quote(string text) => "\"" + new string([.. text.Take(64).Select(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or ' ' ? c : '_')]) + "\"";

    private static string Sanitize(string text) => new([.. text.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_')]);
}
