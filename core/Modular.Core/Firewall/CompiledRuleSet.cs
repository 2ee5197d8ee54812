using System.Runtime.CompilerServices;

namespace Modular.Core.Firewall;

/// <summary>
/// Rules of one direction compiled for lookup: a binary trie over the remote address holds, at each
/// prefix that has rules, one table per protocol of disjoint port segments, each naming the single rule
/// that wins there. A packet costs one walk down at most 128 trie levels and a binary search per prefix
/// on its path, whatever the number of rules.
/// </summary>
/// <remarks>
/// Precedence, deterministic whatever the order rules arrive in: the longer address prefix wins; at the
/// same prefix a rule naming the protocol beats one for all protocols, then the narrower port range wins,
/// then drop beats accept, then the lower rule ID (ordinal) wins.
/// </remarks>
public sealed class CompiledRuleSet
{
    private const int ProtocolSlots = 4; // Tcp, Udp, Icmp, Other

    private readonly TrieNode _root = new();
    private readonly List<TrieNode> _ipv4Ancestors = [];
    private readonly TrieNode? _ipv4Root;

    private CompiledRuleSet(IReadOnlyList<FirewallRule> rules, Func<string, StrongBox<long>> counterFor)
    {
        Rules = rules;
        DropCounters = new StrongBox<long>[rules.Count];
        var byNode = new Dictionary<TrieNode, List<int>>();
        for (var i = 0; i < rules.Count; i++)
        {
            DropCounters[i] = counterFor(rules[i].RuleId);
            var node = Insert(rules[i].Remote);
            if (!byNode.TryGetValue(node, out var list))
            {
                byNode[node] = list = [];
            }

            list.Add(i);
        }

        foreach (var (node, indexes) in byNode)
        {
            node.Tables = new PortTable?[ProtocolSlots];
            for (var slot = 0; slot < ProtocolSlots; slot++)
            {
                node.Tables[slot] = PortTable.Build(rules, indexes.Where(i => AppliesTo(rules[i].Protocol, slot)).ToList());
            }
        }

        var ipv4Mapped = new UInt128(0, 0x0000_FFFF_0000_0000UL);
        var walk = _root;
        for (var depth = 0; depth < 96 && walk is not null; depth++)
        {
            if (walk.Tables is not null)
            {
                _ipv4Ancestors.Add(walk);
            }

            walk = ((ipv4Mapped >> (127 - depth)) & UInt128.One) == UInt128.Zero ? walk.Zero : walk.One;
        }

        _ipv4Root = walk;
    }

    public static CompiledRuleSet Empty { get; } = new([], _ => new StrongBox<long>());

    /// <summary>The rules in the order given; a match returns an index into this list.</summary>
    public IReadOnlyList<FirewallRule> Rules { get; }

    /// <summary>Per rule, the shared drop counter of its rule ID (it outlives rule-set replacements).</summary>
    internal StrongBox<long>[] DropCounters { get; }

    public int Count => Rules.Count;

    public static CompiledRuleSet Compile(IReadOnlyList<FirewallRule> rules, Func<string, StrongBox<long>>? counterFor = null) =>
        new(rules, counterFor ?? (_ => new StrongBox<long>()));

    /// <summary>The index of the winning rule for a flow with this remote address, protocol and destination port, or -1.</summary>
    public int Match(UInt128 remote, byte protocol, ushort port)
    {
        var slot = Slot(protocol);
        var lookupPort = protocol is IpProtocol.Icmp or IpProtocol.IcmpV6 ? (ushort)0 : port;

        // The deepest matching prefix with a rule for this protocol and port wins, so remember each hit on the
        // way down and keep the last; no per-packet allocation.
        var best = -1;
        var node = _root;
        var depth = 0;
        if ((remote >> 32) == 0xFFFF)
        {
            // IPv4: the first 96 bits are always ::ffff, so skip straight to that node, checking only the few
            // shorter prefixes on the way that carry rules (e.g. ::/0).
            foreach (var ancestor in _ipv4Ancestors)
            {
                if (ancestor.Tables![slot] is { } ancestorTable && ancestorTable.Find(lookupPort) is var ancestorHit and >= 0)
                {
                    best = ancestorHit;
                }
            }

            if (_ipv4Root is null)
            {
                return best;
            }

            node = _ipv4Root;
            depth = 96;
        }

        for (; ; depth++)
        {
            if (node.Tables?[slot] is { } table)
            {
                var hit = table.Find(lookupPort);
                if (hit >= 0)
                {
                    best = hit;
                }
            }

            if (depth == 128)
            {
                break;
            }

            var bit = (int)((remote >> (127 - depth)) & UInt128.One);
            var next = bit == 0 ? node.Zero : node.One;
            if (next is null)
            {
                break;
            }

            node = next;
        }

        return best;
    }

    private static int Slot(byte protocol) => protocol switch
    {
        IpProtocol.Tcp => 0,
        IpProtocol.Udp => 1,
        IpProtocol.Icmp or IpProtocol.IcmpV6 => 2,
        _ => 3,
    };

    private static bool AppliesTo(RuleProtocol protocol, int slot) => protocol switch
    {
        RuleProtocol.All => true,
        RuleProtocol.Tcp => slot == 0,
        RuleProtocol.Udp => slot == 1,
        RuleProtocol.Icmp => slot == 2,
        _ => false,
    };

    private TrieNode Insert(IpPrefix128 prefix)
    {
        var node = _root;
        for (var depth = 0; depth < prefix.Length; depth++)
        {
            var bit = (int)((prefix.Address >> (127 - depth)) & UInt128.One);
            if (bit == 0)
            {
                node = node.Zero ??= new TrieNode();
            }
            else
            {
                node = node.One ??= new TrieNode();
            }
        }

        return node;
    }

    private sealed class TrieNode
    {
        public TrieNode? Zero;
        public TrieNode? One;
        public PortTable?[]? Tables;
    }

    /// <summary>Disjoint port segments (sorted starts), each with the index of the rule that wins there or -1.</summary>
    private sealed class PortTable
    {
        private readonly int[] _starts;
        private readonly int[] _winners;

        private PortTable(int[] starts, int[] winners)
        {
            _starts = starts;
            _winners = winners;
        }

        public static PortTable? Build(IReadOnlyList<FirewallRule> rules, List<int> indexes)
        {
            if (indexes.Count == 0)
            {
                return null;
            }

            // Each (rule, range) pair, best first; then each paints the segments in its range that nobody
            // better painted. "Next unpainted segment" pointers (path-compressed) keep this near-linear.
            var entries = new List<(int Rule, PortRange Range)>();
            foreach (var index in indexes)
            {
                var ports = rules[index].Protocol == RuleProtocol.Icmp || rules[index].Ports.Count == 0 ? [PortRange.Any] : rules[index].Ports;
                foreach (var range in ports)
                {
                    entries.Add((index, range));
                }
            }

            var boundaries = new SortedSet<int> { 0 };
            foreach (var (_, range) in entries)
            {
                boundaries.Add(range.Start);
                if (range.End < ushort.MaxValue)
                {
                    boundaries.Add(range.End + 1);
                }
            }

            var starts = boundaries.ToArray();
            var winners = new int[starts.Length];
            Array.Fill(winners, -1);
            var nextUnpainted = new int[starts.Length + 1];
            for (var i = 0; i < nextUnpainted.Length; i++)
            {
                nextUnpainted[i] = i;
            }

            entries.Sort((a, b) => RulePrecedence.Compare(rules[a.Rule], a.Range, rules[b.Rule], b.Range));
            foreach (var (rule, range) in entries)
            {
                var first = Array.BinarySearch(starts, (int)range.Start);
                for (var segment = FindNext(nextUnpainted, first); segment < starts.Length && starts[segment] <= range.End; segment = FindNext(nextUnpainted, segment))
                {
                    winners[segment] = rule;
                    nextUnpainted[segment] = segment + 1;
                }
            }

            return new PortTable(starts, winners);
        }

        public int Find(ushort port)
        {
            // The last segment starting at or before the port.
            var index = Array.BinarySearch(_starts, (int)port);
            if (index < 0)
            {
                index = ~index - 1;
            }

            return _winners[index];
        }

        private static int FindNext(int[] next, int i)
        {
            var root = i;
            while (next[root] != root)
            {
                root = next[root];
            }

            while (i != root)
            {
                var following = next[i];
                next[i] = root;
                i = following;
            }

            return root;
        }
    }
}
