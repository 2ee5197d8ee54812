using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Modular.Core.Os;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// One interface's policy as an nftables script, and what its counters mean.
/// </summary>
/// <param name="Table">The table's name (family <see cref="NftablesRenderer.Family"/>).</param>
/// <param name="Script">The whole transaction: the replace prologue, then the table.</param>
/// <param name="RuleCount">Policy rules rendered (not nft lines: several policy rules may share one, or one need several).</param>
/// <param name="DropRuleIdByCounter">For each named counter of drop rules: the policy rule ID it counts for.</param>
/// <param name="AcceptRuleIds">
/// With flow logging (<see cref="NftablesFlowLog"/>): the accept rules' IDs, the one at index i stamped as i + 1 in a
/// connection's mark (<see cref="ConntrackMarks.RuleIndexMask"/>); empty without.
/// </param>
public sealed record NftablesPolicy(string Table, string Script, int RuleCount, IReadOnlyDictionary<string, string> DropRuleIdByCounter, IReadOnlyList<string>? AcceptRuleIds = null);

/// <summary>
/// Kernel-mode flow logging's part of the policy table (<see cref="KernelFlowSource"/> reads what it produces): every
/// connection opened through the tunnel gets <see cref="ConntrackMarks.FlowBit"/> (and <see cref="ConntrackMarks.EgressBit"/>
/// when this peer opened it), each accept stamps its rule's index, and each drop rule (and the default drop) first
/// logs the packet to NFLOG group <paramref name="NflogGroup"/> with the prefix "modular &lt;generation&gt; &lt;counter&gt;",
/// at most <paramref name="LogsPerSecond"/> a second per rule (nft's limit, so a flood costs no more).
/// </summary>
public sealed record NftablesFlowLog(ushort NflogGroup, int LogsPerSecond = NftablesFlowLog.DefaultLogsPerSecond)
{
    /// <summary>The group the agent uses unless told otherwise; one reader per group and namespace.</summary>
    public const ushort DefaultGroup = 7423;

    public const int DefaultLogsPerSecond = 10;

    /// <summary>Every log prefix starts with this.</summary>
    public const string PrefixStart = "modular ";

    /// <summary>The prefix of the drops counted in <paramref name="counter"/> by the table of <paramref name="generation"/>.</summary>
    public static string Prefix(int generation, string counter) => string.Create(CultureInfo.InvariantCulture, $"{PrefixStart}{generation} {counter}");
}

/// <summary>
/// Renders the firewall's rules for this peer's own traffic into one nftables table, <c>inet modular_&lt;iface&gt;</c>,
/// with the userspace <see cref="StatefulFirewall"/>'s semantics: conntrack lets replies and related traffic
/// through, new inbound connections need a rule (default drop), new outbound ones follow
/// <see cref="FirewallOptions.DefaultOutbound"/>, and a connection accepted under older rules is checked again
/// (its conntrack mark carries the generation of the table that accepted it). nftables takes the first matching rule, so rules are written in
/// the order of <see cref="CompiledRuleSet"/>'s precedence: longer prefix, a named protocol over all, the narrower
/// port range, drop over accept, then the rule ID — per port range, so a rule whose ranges differ in width may be
/// split around another rule's. Every line is built from parsed values (prefixes, ints, enums); the only text
/// that comes from outside, the interface name and rule IDs, is checked against a strict alphabet first.
/// </summary>
public static class NftablesRenderer
{
    public const string Family = "inet";

    /// <summary>The named counter of the default drop (the inbound chain's last rule, and the outbound one's when it drops).</summary>
    public const string DefaultDropCounter = "default_drop";

    /// <summary>The named counter of the rules dropping inbound packets that can belong to no connection.</summary>
    public const string InvalidCounter = "invalid";

    /// <summary>The comment of the accept that keeps the mesh DNS on this peer's overlay address reachable.</summary>
    public const string MeshDnsComment = "mesh-dns";

    /// <summary>The comment of the Rosenpass exchange's accept (<see cref="FirewallOptions.RosenpassPort"/>).</summary>
    public const string RosenpassComment = "rosenpass";

    /// <summary>Table generations cycle through 1..127, kept in bits 24-30 of the conntrack mark (<see cref="ConntrackMarks"/>; the other bits are left as they are).</summary>
    public const int MaxGeneration = ConntrackMarks.MaxGeneration;

    private const uint GenerationMask = ConntrackMarks.GenerationMask;
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
    /// <param name="generation">
    /// 1..<see cref="MaxGeneration"/>, different from the table this one replaces: accepted connections carry it in
    /// their conntrack mark, and a connection marked by an older table is checked against these rules again on its
    /// next packet — so, as in userspace, removing a policy also ends the connections it let in. The caller has
    /// cleared this generation from conntrack first (<see cref="MarkGenerations"/>), so the stamp never comes back.
    /// </param>
    /// <param name="trustMarks">
    /// False when the generation could not be cleared from conntrack: connections are still stamped, but no
    /// established connection is let through on its stamp — each packet walks the rules.
    /// </param>
    /// <param name="flowLog">Flow logging's marks and drop logs (kernel mode with flow logging on); null leaves them out.</param>
    public static NftablesPolicy Render(string interfaceName, IEnumerable<FirewallRule> rules, IPAddress? ownAddress, FirewallOptions? options = null, int generation = 1, bool trustMarks = true, NftablesFlowLog? flowLog = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var stamp = ConntrackMarks.Stamp(generation, forwarded: false);
        var mark = string.Create(CultureInfo.InvariantCulture, $"0x{stamp:x8}");
        var checkedUnder = trustMarks ? $"ct mark & 0x{GenerationMask:x8} == {mark}" : null;
        options ??= new FirewallOptions();
        var table = TableName(interfaceName);
        var own = rules.Where(r => !r.IsRouted).ToList();
        var names = new Names();
        var marks = new Stamps(stamp, generation, flowLog);
        var inbound = RenderRules(own.Where(r => r.Direction == RuleDirection.Inbound), "saddr", names, marks);
        var outbound = RenderRules(own.Where(r => r.Direction == RuleDirection.Outbound), "daddr", names, marks);

        var script = new StringBuilder(Nft.ReplaceTablePrologue(Family, table), 1024 + inbound.Length + outbound.Length + (32 * names.DropRuleIdByCounter.Count));
        script.Append("table ").Append(Family).Append(' ').Append(table).Append(" {\n");
        // Drops are counted in named counters: status reads them with `nft list counters`, without listing every rule.
        foreach (var counter in names.DropRuleIdByCounter.Keys.Prepend(InvalidCounter).Prepend(DefaultDropCounter))
        {
            script.Append("\tcounter ").Append(counter).Append(" {\n\t}\n");
        }

        script.Append("\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n");
        if (flowLog is not null)
        {
            // A mesh flow of this peer: the only connections flow logging reports (a dropped one is never confirmed, so never reported).
            script.Append("\t\tiifname \"").Append(interfaceName).Append("\" ct state new ct mark set ct mark & ")
                .Append(Hex(~ConntrackMarks.EgressBit)).Append(" | ").Append(Hex(ConntrackMarks.FlowBit)).Append('\n');
        }

        script.Append("\t\tiifname \"").Append(interfaceName).Append("\" jump mesh_in\n\t}\n");
        script.Append("\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n");
        if (flowLog is not null)
        {
            script.Append("\t\toifname \"").Append(interfaceName).Append("\" ct state new ct mark set ct mark | ")
                .Append(Hex(ConntrackMarks.FlowBit | ConntrackMarks.EgressBit)).Append('\n');
        }

        script.Append("\t\toifname \"").Append(interfaceName).Append("\" jump mesh_out\n\t}\n");

        script.Append("\tchain mesh_in {\n");
        AppendTracked(script, checkedUnder);
        script.Append("\t\tct state invalid counter name \"").Append(InvalidCounter).Append("\" drop comment \"invalid\"\n");
        // As in userspace: a TCP packet that opens nothing (stray ACK, SYN-ACK, RST) is no new connection, whatever the rules.
        script.Append("\t\tct state new meta l4proto tcp tcp flags & (syn | ack | rst) != syn counter name \"").Append(InvalidCounter).Append("\" drop comment \"invalid\"\n");
        if (ownAddress is not null)
        {
            script.Append("\t\t").Append(ownAddress.AddressFamily == AddressFamily.InterNetwork ? "ip" : "ip6").Append(" daddr ")
                .Append(Normalize(ownAddress)).Append(" meta l4proto { tcp, udp } th dport 53 accept comment \"").Append(MeshDnsComment).Append("\"\n");
            if (options.RosenpassPort is { } rosenpassPort)
            {
                script.Append("\t\t").Append(ownAddress.AddressFamily == AddressFamily.InterNetwork ? "ip" : "ip6").Append(" daddr ")
                    .Append(Normalize(ownAddress)).Append(" udp dport ").Append(rosenpassPort.ToString(CultureInfo.InvariantCulture))
                    .Append(" accept comment \"").Append(RosenpassComment).Append("\"\n");
            }
        }

        script.Append(inbound);
        script.Append(Default(options.DefaultInbound, marks));
        script.Append("\t}\n");

        script.Append("\tchain mesh_out {\n");
        AppendTracked(script, checkedUnder);
        script.Append(outbound);
        script.Append(Default(options.DefaultOutbound, marks));
        script.Append("\t}\n}\n");
        return new NftablesPolicy(table, script.ToString(), own.Count, names.DropRuleIdByCounter, marks.AcceptRuleIds);
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

    private static string Default(RuleAction action, Stamps marks) => action == RuleAction.Drop
        ? $"{marks.DropLog(null, DefaultDropCounter)}\t\tcounter name \"{DefaultDropCounter}\" drop comment \"default-drop\"\n"
        : $"\t\t{marks.Accept(null)}\n";

    private static string Hex(uint value) => string.Create(CultureInfo.InvariantCulture, $"0x{value:x8}");

    /// <summary>
    /// Tracked traffic: replies and related packets (ICMP errors) pass; packets of connections the other side
    /// opened pass only if this table's rules let the connection in, else they walk the rules again below.
    /// </summary>
    private static void AppendTracked(StringBuilder script, string? checkedUnder)
    {
        script.Append("\t\tct state established ct direction reply accept\n");
        script.Append("\t\tct state related accept\n");
        if (checkedUnder is not null)
        {
            script.Append("\t\tct state established ").Append(checkedUnder).Append(" accept\n");
        }
    }

    /// <summary>
    /// One direction's rules in the order nft must try them (first match wins) to give userspace's winner. One
    /// entry per (rule, port range), sorted by precedence; then neighbours are joined, which never changes the
    /// first match because no other rule sits between them: the ranges of one rule into a port set, and rules
    /// that differ only in their remote address (what one policy sends for each peer of a group) into an address
    /// set — so a policy over a thousand peers is one nft rule with a hashed set, not a thousand rules.
    /// </summary>
    internal static List<RuleGroup> Ordered(IEnumerable<FirewallRule> rules)
    {
        var entries = new List<(FirewallRule Rule, int Index, PortRange Range)>();
        var index = 0;
        foreach (var rule in rules)
        {
            var ranges = rule.Protocol == RuleProtocol.Icmp || rule.Ports.Count == 0 ? [PortRange.Any] : rule.Ports;
            foreach (var range in ranges)
            {
                entries.Add((rule, index, range));
            }

            index++;
        }

        entries.Sort(static (a, b) => Compare(a.Rule, a.Index, a.Range, b.Rule, b.Index, b.Range));
        var byRule = new List<(FirewallRule Rule, List<PortRange> Ranges)>();
        for (var start = 0; start < entries.Count;)
        {
            var rule = entries[start].Rule;
            var end = start + 1;
            while (end < entries.Count && ReferenceEquals(entries[end].Rule, rule))
            {
                end++;
            }

            byRule.Add((rule, Merge(entries.Skip(start).Take(end - start).Select(e => e.Range))));
            start = end;
        }

        var groups = new List<RuleGroup>();
        foreach (var (rule, ranges) in byRule)
        {
            if (groups.Count > 0 && groups[^1].CanTake(rule, ranges))
            {
                groups[^1].Take(rule.Remote);
            }
            else
            {
                groups.Add(new RuleGroup(rule, ranges));
            }
        }

        return groups;
    }

    private static string RenderRules(IEnumerable<FirewallRule> rules, string addressField, Names names, Stamps marks)
    {
        var text = new StringBuilder();
        foreach (var group in Ordered(rules))
        {
            var rule = group.Rule;
            var comment = Names.CommentFor(rule);
            var dropCounter = rule.Action == RuleAction.Drop ? names.DropCounterFor(rule) : null;
            var counter = dropCounter is not null ? $"counter name \"{dropCounter}\" drop" : $"counter {marks.Accept(rule.RuleId)}";
            var protocol = ProtocolMatch(rule.Protocol, group.Ranges);
            foreach (var address in AddressMatches(group.Remotes, addressField))
            {
                var match = new StringBuilder();
                if (address is not null)
                {
                    match.Append(address).Append(' ');
                }

                if (protocol.Length > 0)
                {
                    match.Append(protocol).Append(' ');
                }

                if (dropCounter is not null)
                {
                    text.Append(marks.DropLog(match.ToString(), dropCounter));
                }

                text.Append("\t\t").Append(match).Append(counter).Append(" comment \"").Append(comment).Append("\"\n");
            }
        }

        return text.ToString();
    }

    /// <summary>The precedence of <see cref="CompiledRuleSet"/>, over (rule, port range) pairs: smaller first. The index is the rule's position in the input.</summary>
    private static int Compare(FirewallRule a, int aIndex, PortRange aRange, FirewallRule b, int bIndex, PortRange bRange)
    {
        var prefix = b.Remote.Length.CompareTo(a.Remote.Length);
        if (prefix != 0)
        {
            return prefix;
        }

        var precedence = RulePrecedence.Compare(a, aRange, b, bRange);
        if (precedence != 0)
        {
            return precedence;
        }

        // Same ID, same everything else: a deterministic order that keeps each rule's own ranges together (ascending).
        var remote = a.Remote.Address.CompareTo(b.Remote.Address);
        if (remote != 0)
        {
            return remote;
        }

        var position = aIndex.CompareTo(bIndex);
        return position != 0 ? position : aRange.Start.CompareTo(bRange.Start);
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
    /// The address matches a group needs (one nft rule each); null means "any address". The firewall's prefixes
    /// live in one 128-bit space with IPv4 mapped into ::ffff:0:0/96, so a short IPv6 prefix that covers that
    /// block also covers every IPv4 address. Groups of several remotes hold prefixes of one family and length.
    /// </summary>
    private static IEnumerable<string?> AddressMatches(IReadOnlyList<IpPrefix128> remotes, string field)
    {
        var prefix = remotes[0];
        switch (Kind(prefix))
        {
            case AddressKind.Any:
                yield return null;
                break;
            case AddressKind.Ipv4 when prefix.Length == 96:
                yield return "meta nfproto ipv4";
                break;
            case AddressKind.Ipv4:
                yield return $"ip {field} {Set(remotes.Select(p => string.Create(CultureInfo.InvariantCulture, $"{IpPrefix128.ToAddress(p.Address)}/{p.Length - 96}")))}";
                break;
            case AddressKind.CoversIpv4:
                yield return "meta nfproto ipv4";
                yield return string.Create(CultureInfo.InvariantCulture, $"ip6 {field} {Ipv6(prefix.Address)}/{prefix.Length}");
                break;
            default:
                yield return $"ip6 {field} {Set(remotes.Select(p => string.Create(CultureInfo.InvariantCulture, $"{Ipv6(p.Address)}/{p.Length}")))}";
                break;
        }
    }

    private static string Set(IEnumerable<string> elements)
    {
        var list = elements.ToList();
        return list.Count == 1 ? list[0] : "{ " + string.Join(", ", list) + " }";
    }

    private static AddressKind Kind(IpPrefix128 prefix)
    {
        if (prefix.Length == 0)
        {
            return AddressKind.Any;
        }

        if (prefix.Length >= 96 && (prefix.Address >> 32) == 0xFFFF)
        {
            return AddressKind.Ipv4;
        }

        return prefix.Contains(new UInt128(0, 0x0000_FFFF_0000_0000UL)) ? AddressKind.CoversIpv4 : AddressKind.Ipv6;
    }

    private static IPAddress Ipv6(UInt128 address)
    {
        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, address);
        return new IPAddress(bytes);
    }

    private static IPAddress Normalize(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    private enum AddressKind
    {
        Any,
        Ipv4,
        Ipv6,
        CoversIpv4,
    }

    /// <summary>Neighbouring rules that differ only in their remote prefix (same family and length), rendered as one nft rule.</summary>
    internal sealed class RuleGroup(FirewallRule rule, List<PortRange> ranges)
    {
        private readonly HashSet<IpPrefix128> _seen = [rule.Remote];
        private readonly List<IpPrefix128> _remotes = [rule.Remote];

        /// <summary>The first rule; the others share its ID, action, protocol and ports.</summary>
        public FirewallRule Rule { get; } = rule;

        public List<PortRange> Ranges { get; } = ranges;

        public IReadOnlyList<IpPrefix128> Remotes => _remotes;

        public bool CanTake(FirewallRule other, List<PortRange> otherRanges)
            => other.RuleId == Rule.RuleId && other.Action == Rule.Action && other.Protocol == Rule.Protocol
               && other.Remote.Length == Rule.Remote.Length && Kind(other.Remote) is var kind && kind == Kind(Rule.Remote)
               && kind is AddressKind.Ipv4 or AddressKind.Ipv6 && Rule.Remote.Length != 96
               && otherRanges.SequenceEqual(Ranges);

        public void Take(IpPrefix128 remote)
        {
            if (_seen.Add(remote))
            {
                _remotes.Add(remote);
            }
        }
    }

    /// <summary>
    /// How accepts stamp a connection's mark, and the drop rules' logs: without flow logging only the generation
    /// (every other bit kept); with it also the accept rule's index (bits 0-21 replaced, the flow and egress bits
    /// kept), and a rate-limited NFLOG rule before each drop.
    /// </summary>
    private sealed class Stamps(uint stamp, int generation, NftablesFlowLog? flowLog)
    {
        private readonly Dictionary<string, uint> _indexByRuleId = new(StringComparer.Ordinal);
        private readonly List<string> _acceptRuleIds = [];

        public IReadOnlyList<string> AcceptRuleIds => _acceptRuleIds;

        /// <summary>The statement that stamps and accepts a connection <paramref name="ruleId"/> lets in (null: no rule, the default).</summary>
        public string Accept(string? ruleId)
        {
            if (flowLog is null)
            {
                return $"ct mark set ct mark & {Hex(~GenerationMask)} | {Hex(stamp)} accept";
            }

            var index = 0u;
            if (ruleId is not null && !_indexByRuleId.TryGetValue(ruleId, out index) && _acceptRuleIds.Count < ConntrackMarks.RuleIndexMask)
            {
                _acceptRuleIds.Add(ruleId);
                index = (uint)_acceptRuleIds.Count;
                _indexByRuleId[ruleId] = index;
            }

            return $"ct mark set ct mark & {Hex(ConntrackMarks.ForwardedBit | ConntrackMarks.FlowBit | ConntrackMarks.EgressBit)} | {Hex(stamp | index)} accept";
        }

        /// <summary>The NFLOG line before a drop counted in <paramref name="counter"/> (after the drop's own <paramref name="match"/>); empty without flow logging.</summary>
        public string DropLog(string? match, string counter) => flowLog is null
            ? ""
            : string.Create(CultureInfo.InvariantCulture, $"\t\t{match}limit rate {flowLog.LogsPerSecond}/second log prefix \"{NftablesFlowLog.Prefix(generation, counter)}\" group {flowLog.NflogGroup}\n");
    }

    /// <summary>
    /// Rule comments: the rule ID itself when it is plain (so `nft list` reads like the policy), else a stable hash
    /// of it — a comment is a quoted string in the script and must never carry a quote, backslash or newline.
    /// Drop counters: "drop_N" per drop rule ID, mapped back to the ID for status.
    /// </summary>
    private sealed class Names
    {
        private readonly Dictionary<string, string> _dropRuleIdByCounter = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _counterByRuleId = new(StringComparer.Ordinal);

        public IReadOnlyDictionary<string, string> DropRuleIdByCounter => _dropRuleIdByCounter;

        public static string CommentFor(FirewallRule rule) => IsPlain(rule.RuleId)
            ? rule.RuleId
            : "rule-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(rule.RuleId)))[..16];

        public string DropCounterFor(FirewallRule rule)
        {
            if (!_counterByRuleId.TryGetValue(rule.RuleId, out var counter))
            {
                counter = string.Create(CultureInfo.InvariantCulture, $"drop_{_counterByRuleId.Count}");
                _counterByRuleId[rule.RuleId] = counter;
                _dropRuleIdByCounter[counter] = rule.RuleId;
            }

            return counter;
        }

        private static bool IsPlain(string id) => id.Length is > 0 and <= MaxCommentLength
            && id is not ("default-drop" or "invalid" or MeshDnsComment or RosenpassComment)
            && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':' or '/' or '@' or '+');
    }
}
