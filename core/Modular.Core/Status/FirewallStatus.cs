using System.Collections.Immutable;

namespace Modular.Core.Status;

/// <summary>
/// What the agent's policy enforcement is doing (`status --json` → "firewall"). Counters are packets, kept
/// across rule-set replacements. The userspace-only counters are null in nftables mode, where the kernel
/// does that work and does not count it.
/// </summary>
/// <param name="Mode">"userspace" (the in-process stateful firewall), "nftables" (kernel mode) or "off".</param>
/// <param name="Rules">Policy rules in force for this peer's own traffic.</param>
/// <param name="DropsByRule">Packets dropped per drop rule ID.</param>
/// <param name="DefaultDrops">New connections no rule allowed (the default drop).</param>
/// <param name="InvalidDrops">Inbound packets of no tracked connection that cannot open one (e.g. a stray ACK).</param>
/// <param name="MalformedDrops">Userspace only: packets that could not be parsed.</param>
/// <param name="FragmentDrops">Userspace only: non-first IP fragments.</param>
/// <param name="TableFullDrops">Userspace only: new connections refused because the connection table was full.</param>
/// <param name="ActiveFlows">Userspace only: tracked connections.</param>
/// <param name="Error">Why the rules in force are not the latest (e.g. nft refused them); null when they are.</param>
public sealed record FirewallStatus(
    string Mode,
    int Rules,
    IReadOnlyDictionary<string, long> DropsByRule,
    long DefaultDrops,
    long? InvalidDrops,
    long? MalformedDrops,
    long? FragmentDrops,
    long? TableFullDrops,
    int? ActiveFlows,
    string? Error)
{
    public const string UserspaceMode = "userspace";
    public const string NftablesMode = "nftables";
    public const string OffMode = "off";

    /// <summary>No enforcement (yet): the state before the interface exists.</summary>
    public static FirewallStatus Off { get; } = new(OffMode, 0, ImmutableSortedDictionary<string, long>.Empty, 0, null, null, null, null, null, null);

    /// <summary>Every dropped packet counted, whatever the reason.</summary>
    public long TotalDrops => DropsByRule.Values.Sum() + DefaultDrops + (InvalidDrops ?? 0) + (MalformedDrops ?? 0) + (FragmentDrops ?? 0) + (TableFullDrops ?? 0);
}
