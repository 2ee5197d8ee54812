using Modular.Core.Os;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// The agent's one seam to nftables, shared by every table it owns: the kernel-mode policy enforcer's and the
/// routing peer's forwarding table (<see cref="Routing.RouteManager"/>). The agent uses <see cref="HostNftables"/>
/// (the host's `nft`); tests use an in-memory double or point it at a network namespace of their own.
/// </summary>
public interface INftables
{
    /// <summary>Applies a script as one transaction; <see cref="IOException"/> with nft's message when refused.</summary>
    Task ApplyAsync(string script, CancellationToken cancellationToken);

    /// <summary>Deletes a table; one that does not exist is not an error.</summary>
    Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken);

    /// <summary>
    /// The table's named counters as nft's JSON (`nft -j list counters table`), or null when the table does not
    /// exist. Listing only the counters keeps a refresh cheap with thousands of rules (the whole table with
    /// 10,000 rules takes nft over a second to print).
    /// </summary>
    Task<string?> ListCountersJsonAsync(string family, string table, CancellationToken cancellationToken);
}

/// <summary>nftables of the namespace the agent runs in, through <see cref="Nft"/>.</summary>
public sealed class HostNftables : INftables
{
    /// <summary>A counter read is a status refresh: it gives up sooner than rule changes do.</summary>
    public static readonly TimeSpan CounterReadTimeout = TimeSpan.FromSeconds(10);

    public static HostNftables Instance { get; } = new();

    private HostNftables()
    {
    }

    public Task ApplyAsync(string script, CancellationToken cancellationToken) => Nft.ApplyAsync(script, cancellationToken);

    public Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken) => Nft.DeleteTableAsync(family, table, cancellationToken);

    public Task<string?> ListCountersJsonAsync(string family, string table, CancellationToken cancellationToken)
        => Nft.ListCountersJsonAsync(family, table, CounterReadTimeout, cancellationToken);
}
