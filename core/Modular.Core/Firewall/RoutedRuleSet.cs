using System.Runtime.CompilerServices;

namespace Modular.Core.Firewall;

/// <summary>
/// The routed-traffic rules (on a routing peer) compiled for lookup by destination: one
/// <see cref="CompiledRuleSet"/> per distinct destination prefix, holding every routed rule whose
/// destination contains that prefix. A packet takes the longest destination prefix that contains its
/// destination (a short linear scan: a peer routes few networks) and is matched there on source, protocol
/// and port, so a rule for 10.0.0.0/16 still applies inside 10.0.1.0/24 while one for the /24 does not leak
/// into the rest of the /16. No allocation per packet.
/// </summary>
public sealed class RoutedRuleSet
{
    private readonly IpPrefix128[] _destinations;
    private readonly CompiledRuleSet[] _sets;

    private RoutedRuleSet(IpPrefix128[] destinations, CompiledRuleSet[] sets)
    {
        _destinations = destinations;
        _sets = sets;
    }

    public static RoutedRuleSet Empty { get; } = new([], []);

    /// <summary>How many distinct destination prefixes have rules.</summary>
    public int DestinationCount => _destinations.Length;

    /// <summary>Compiles routed rules (those with a <see cref="FirewallRule.Destination"/>; others are ignored).</summary>
    public static RoutedRuleSet Compile(IReadOnlyList<FirewallRule> rules, Func<string, StrongBox<long>>? counterFor = null)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var routed = rules.Where(r => r.Destination is not null).ToList();
        // Longest first, so the first containing prefix in a scan is the most specific one.
        var destinations = routed.Select(r => r.Destination!.Value).Distinct().OrderByDescending(d => d.Length).ThenBy(d => d.Address).ToArray();
        var sets = destinations
            .Select(destination => CompiledRuleSet.Compile(routed.Where(r => Covers(r.Destination!.Value, destination)).ToList(), counterFor))
            .ToArray();
        return new RoutedRuleSet(destinations, sets);
    }

    /// <summary>The rule set that decides packets to <paramref name="destination"/>, or null when no routed rule covers it.</summary>
    public CompiledRuleSet? For(UInt128 destination)
    {
        for (var i = 0; i < _destinations.Length; i++)
        {
            if (_destinations[i].Contains(destination))
            {
                return _sets[i];
            }
        }

        return null;
    }

    private static bool Covers(IpPrefix128 outer, IpPrefix128 inner) => outer.Length <= inner.Length && outer.Contains(inner.Address);
}
