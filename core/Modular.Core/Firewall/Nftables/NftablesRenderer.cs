using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Modular.Core.Os;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// One interface's policy as an nftables script, and what its rule comments mean.
/// </summary>
/// <param name="Table">The table's name (family <see cref="NftablesRenderer.Family"/>).</param>
/// <param name="Script">The whole transaction: the replace prologue, then the table.</param>
/// <param name="RuleCount">Policy rules rendered (not nft lines: one rule may need several).</param>
/// <param name="DropRuleIdByComment">For each comment on a drop rule: the policy rule ID it counts for.</param>
public sealed record NftablesPolicy(string Table, string Script, int RuleCount, IReadOnlyDictionary<string, string> DropRuleIdByComment);

/// <summary>
/// Renders the firewall's rules for this peer's own traffic into one nftables table, <c>inet modular_&lt;iface&gt;</c>,
/// with the userspace <see cref="StatefulFirewall"/>'s semantics: conntrack lets established and related traffic
/// through, new inbound connections need a rule (default drop), new outbound ones follow
/// <see cref="FirewallOptions.DefaultOutbound"/>. nftables takes the first matching rule, so rules are written in
/// the order of <see cref="CompiledRuleSet"/>'s precedence: longer prefix, a named protocol over all, the narrower
/// port range, drop over accept, then the rule ID — per port range, so a rule whose ranges differ in width may be
/// split around another rule's. Every line is built from parsed values (prefixes, ints, enums); the only text
/// that comes from outside, the interface name and rule IDs, is checked against a strict alphabet first.
/// </summary>
public static class NftablesRenderer
{
    public const string Family = "inet";

    /// <summary>The comment of the last rule of the inbound chain (and of the outbound one when it drops).</summary>
    public const string DefaultDropComment = "default-drop";

    /// <summary>The comment of the rules dropping inbound packets that can belong to no connection.</summary>
    public const string InvalidComment = "invalid";

    /// <summary>The comment of the accept that keeps the mesh DNS on this peer's overlay address reachable.</summary>
    public const string MeshDnsComment = "mesh-dns";

    private const int MaxCommentLength = 100;

    /// <summary>The table name for an interface: "modular_" and the name with anything but [A-Za-z0-9_] as "_".</summary>
    public static string TableName(string interfaceName)
    {
        RequireInterfaceName(interfaceName);
        var name = new StringBuilder("modular_", 8 + interfaceName.Length);
        foreach (var c in interfaceName)
        {
            name.Append(char.IsAsciiLetterOrDigit(c) || c == '_' ? c : '_');
        }

        return name.ToString();
    }

    /// <summary>
    /// The script that replaces the interface's table with <paramref name="rules"/> (routed rules are ignored: they
    /// are about forwarded traffic, never this peer's own). <paramref name="ownAddress"/>, when known, gets the
    /// mesh DNS accept (udp/tcp 53), whatever the policies.
    /// </summary>
    public static NftablesPolicy Render(string interfaceName, IEnumerable<FirewallRule> rules, IPAddress? ownAddress, FirewallOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        options ??= new FirewallOptions();
        var table = TableName(interfaceName);
        var own = rules.Where(r => !r.IsRouted).ToList();
        var comments = new CommentNames();
        var inbound = RenderRules(own.Where(r => r.Direction == RuleDirection.Inbound), "saddr", comments);
        var outbound = RenderRules(own.Where(r => r.Direction == RuleDirection.Outbound), "daddr", comments);

        var script = new StringBuilder(Nft.ReplaceTablePrologue(Family, table), 512 + (64 * own.Count));
        script.Append("table ").Append(Family).Append(' ').Append(table).Append(" {\n");
        script.Append("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
        script.Append("\t\tiifname \"").Append(interfaceName).Append("\" jump mesh_in\n\t}\n");
        script.Append("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n");
        script.Append("\t\toifname \"").Append(interfaceName).Append("\" jump mesh_out\n\t}\n");

        script.Append("\tchain mesh_in {\n");
        script.Append("\t\tct state established,related accept\n");
        script.Append("\t\tct state invalid counter drop comment \"").Append(InvalidComment).Append("\"\n");
        // As in userspace: a TCP packet that opens nothing (stray ACK, SYN-ACK, RST) is no new connection, whatever the rules.
        script.Append("\t\tmeta l4proto tcp tcp flags & (syn | ack | rst) != syn counter drop comment \"").Append(InvalidComment).Append("\"\n");
        if (ownAddress is not null)
        {
            script.Append("\t\t").Append(ownAddress.AddressFamily == AddressFamily.InterNetwork ? "ip" : "ip6").Append(" daddr ")
                .Append(Normalize(ownAddress)).Append(" meta l4proto { tcp, udp } th dport 53 accept comment \"").Append(MeshDnsComment).Append("\"\n");
        }

        script.Append(inbound);
        script.Append(Default(options.DefaultInbound));
        script.Append("\t}\n");

        script.Append("\tchain mesh_out {\n");
        script.Append("\t\tct state established,related accept\n");
        script.Append(outbound);
        script.Append(Default(options.DefaultOutbound));
        script.Append("\t}\n}\n");
        return new NftablesPolicy(table, script.ToString(), own.Count, comments.DropRuleIdByComment);
    }

    /// <summary>Interface names are written into the script inside quotes: only what Linux names usually hold is accepted.</summary>
    public static void RequireInterfaceName(string interfaceName)
    {
        ArgumentException.ThrowIfNullOrEmpty(interfaceName);
        if (interfaceName.Length > 15 || !interfaceName.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.'))
        {
            throw new ArgumentException($"interface name '{interfaceName}' is not 1-15 characters of [A-Za-z0-9_.-]", nameof(interfaceName));
        }
    }

    private static string Default(RuleAction action) => action == RuleAction.Drop
        ? $"\t\tcounter drop comment \"{DefaultDropComment}\"\n"
        : "\t\taccept\n";

    /// <summary>
    /// One direction's rules in the order nft must try them (first match wins) to give userspace's winner: one
    /// entry per (rule, port range) sorted by precedence, neighbours from the same rule joined into one entry with
    /// a port set — no other rule sits between them, so the first match stays the same.
    /// </summary>
    internal static List<(FirewallRule Rule, List<PortRange> Ranges)> Ordered(IEnumerable<FirewallRule> rules)
    {
        var entries = new List<(FirewallRule Rule, PortRange Range)>();
        foreach (var rule in rules)
        {
            var ranges = rule.Protocol == RuleProtocol.Icmp || rule.Ports.Count == 0 ? [PortRange.Any] : rule.Ports;
            foreach (var range in ranges)
            {
                entries.Add((rule, range));
            }
        }

        entries.Sort(static (a, b) => Compare(a.Rule, a.Range, b.Rule, b.Range));
        var ordered = new List<(FirewallRule Rule, List<PortRange> Ranges)>();
        for (var start = 0; start < entries.Count;)
        {
            var rule = entries[start].Rule;
            var end = start + 1;
            while (end < entries.Count && ReferenceEquals(entries[end].Rule, rule))
            {
                end++;
            }

            ordered.Add((rule, Merge(entries.Skip(start).Take(end - start).Select(e => e.Range))));
            start = end;
        }

        return ordered;
    }

    private static string RenderRules(IEnumerable<FirewallRule> rules, string addressField, CommentNames comments)
    {
        var text = new StringBuilder();
        foreach (var (rule, ranges) in Ordered(rules))
        {
            var comment = comments.For(rule);
            var protocol = ProtocolMatch(rule.Protocol, ranges);
            foreach (var address in AddressMatches(rule.Remote, addressField))
            {
                text.Append("\t\t");
                if (address is not null)
                {
                    text.Append(address).Append(' ');
                }

                if (protocol.Length > 0)
                {
                    text.Append(protocol).Append(' ');
                }

                text.Append("counter ").Append(rule.Action == RuleAction.Drop ? "drop" : "accept")
                    .Append(" comment \"").Append(comment).Append("\"\n");
            }
        }

        return text.ToString();
    }

    /// <summary>The precedence of <see cref="CompiledRuleSet"/>, over (rule, port range) pairs: smaller first.</summary>
    private static int Compare(FirewallRule a, PortRange aRange, FirewallRule b, PortRange bRange)
    {
        var prefix = b.Remote.Length.CompareTo(a.Remote.Length);
        if (prefix != 0)
        {
            return prefix;
        }

        var specificProtocol = (b.Protocol != RuleProtocol.All).CompareTo(a.Protocol != RuleProtocol.All);
        if (specificProtocol != 0)
        {
            return specificProtocol;
        }

        var width = aRange.Width.CompareTo(bRange.Width);
        if (width != 0)
        {
            return width;
        }

        var action = (b.Action == RuleAction.Drop).CompareTo(a.Action == RuleAction.Drop);
        if (action != 0)
        {
            return action;
        }

        var id = string.CompareOrdinal(a.RuleId, b.RuleId);
        if (id != 0)
        {
            return id;
        }

        // Same ID, same everything: keep the order deterministic (and a rule's own ranges ascending).
        var remote = a.Remote.Address.CompareTo(b.Remote.Address);
        return remote != 0 ? remote : aRange.Start.CompareTo(bRange.Start);
    }

    /// <summary>Overlapping or touching ranges joined (nft refuses overlapping set elements), ascending.</summary>
    private static List<PortRange> Merge(IEnumerable<PortRange> ranges)
    {
        var merged = new List<PortRange>();
        foreach (var range in ranges.OrderBy(r => r.Start))
        {
            if (merged.Count > 0 && range.Start <= merged[^1].End + 1)
            {
                var last = merged[^1];
                merged[^1] = new PortRange(last.Start, Math.Max(last.End, range.End));
            }
            else
            {
                merged.Add(range);
            }
        }

        return merged;
    }

    private static string ProtocolMatch(RuleProtocol protocol, List<PortRange> ranges)
    {
        var anyPort = ranges.Count == 1 && ranges[0] == PortRange.Any;
        return protocol switch
        {
            RuleProtocol.Icmp => "meta l4proto { icmp, ipv6-icmp }",
            RuleProtocol.Tcp => anyPort ? "meta l4proto tcp" : $"tcp dport {Ports(ranges)}",
            RuleProtocol.Udp => anyPort ? "meta l4proto udp" : $"udp dport {Ports(ranges)}",
            // Userspace reads ports of TCP and UDP only: "all" with ports matches those two.
            _ => anyPort ? "" : $"meta l4proto {{ tcp, udp }} th dport {Ports(ranges)}",
        };
    }

    private static string Ports(List<PortRange> ranges)
    {
        static string One(PortRange r) => r.Start == r.End
            ? r.Start.ToString(CultureInfo.InvariantCulture)
            : string.Create(CultureInfo.InvariantCulture, $"{r.Start}-{r.End}");

        return ranges.Count == 1 ? One(ranges[0]) : "{ " + string.Join(", ", ranges.Select(One)) + " }";
    }

    /// <summary>
    /// The address matches one rule needs (one nft rule each); null means "any address". The firewall's
    /// prefixes live in one 128-bit space with IPv4 mapped into ::ffff:0:0/96, so a short IPv6 prefix that
    /// covers that block also covers every IPv4 address.
    /// </summary>
    private static IEnumerable<string?> AddressMatches(IpPrefix128 prefix, string field)
    {
        var mappedBase = new UInt128(0, 0x0000_FFFF_0000_0000UL);
        if (prefix.Length == 0)
        {
            yield return null;
        }
        else if (prefix.Length >= 96 && (prefix.Address >> 32) == 0xFFFF)
        {
            var length = prefix.Length - 96;
            yield return length == 0
                ? "meta nfproto ipv4"
                : string.Create(CultureInfo.InvariantCulture, $"ip {field} {IpPrefix128.ToAddress(prefix.Address)}/{length}");
        }
        else if (prefix.Contains(mappedBase))
        {
            yield return "meta nfproto ipv4";
            yield return string.Create(CultureInfo.InvariantCulture, $"ip6 {field} {Ipv6(prefix.Address)}/{prefix.Length}");
        }
        else
        {
            yield return string.Create(CultureInfo.InvariantCulture, $"ip6 {field} {Ipv6(prefix.Address)}/{prefix.Length}");
        }
    }

    private static IPAddress Ipv6(UInt128 address)
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, address);
        return new IPAddress(bytes);
    }

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    /// <summary>
    /// Rule comments: the rule ID itself when it is plain (so `nft list` reads like the policy), else a stable
    /// hash of it — a comment is a quoted string in the script and must never carry a quote, backslash or newline.
    /// </summary>
    private sealed class CommentNames
    {
        private readonly Dictionary<string, string> _dropRuleIdByComment = new(StringComparer.Ordinal);

        public IReadOnlyDictionary<string, string> DropRuleIdByComment => _dropRuleIdByComment;

        public string For(FirewallRule rule)
        {
            var comment = IsPlain(rule.RuleId) ? rule.RuleId : "rule-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(rule.RuleId)))[..16];
            if (rule.Action == RuleAction.Drop)
            {
                _dropRuleIdByComment[comment] = rule.RuleId;
            }

            return comment;
        }

        private static bool IsPlain(string id) => id.Length is > 0 and <= MaxCommentLength
            && id is not (DefaultDropComment or InvalidComment or MeshDnsComment)
            && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':' or '/' or '@' or '+');
    }
}
