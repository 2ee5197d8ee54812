namespace Modular.Core.Firewall;

/// <summary>
/// The one precedence among rules that match a packet at the same remote prefix (a longer prefix wins before
/// this is asked): a named protocol over "all", then the narrower port range, then drop over accept, then the
/// lower rule ID. The userspace <see cref="CompiledRuleSet"/> and the nftables renderer both sort by it, so
/// both modes pick the same winner.
/// </summary>
internal static class RulePrecedence
{
    /// <summary>Negative when (<paramref name="a"/>, <paramref name="aRange"/>) wins over (<paramref name="b"/>, <paramref name="bRange"/>).</summary>
    public static int Compare(FirewallRule a, PortRange aRange, FirewallRule b, PortRange bRange)
    {
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
        return action != 0 ? action : string.CompareOrdinal(a.RuleId, b.RuleId);
    }
}
