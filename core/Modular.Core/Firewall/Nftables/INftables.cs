using Modular.Core.Os;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// The three nftables operations the enforcer needs. The agent uses <see cref="HostNftables"/> (the host's `nft`);
/// tests point it at a network namespace of their own.
/// </summary>
public interface INftables
{
    /// <summary>Applies a script as one transaction; <see cref="IOException"/> with nft's message when refused.</summary>
    Task ApplyAsync(string script, CancellationToken cancellationToken);

    /// <summary>Deletes a table; one that does not exist is not an error.</summary>
    Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken);

    /// <summary>`nft -j list table`, or null when the table does not exist.</summary>
    Task<string?> ListTableJsonAsync(string family, string table, CancellationToken cancellationToken);
}

/// <summary>nftables of the namespace the agent runs in, through <see cref="Nft"/>.</summary>
public sealed class HostNftables : INftables
{
    public static HostNftables Instance { get; } = new();

    private HostNftables()
    {
    }

    public Task ApplyAsync(string script, CancellationToken cancellationToken) => Nft.ApplyAsync(script, cancellationToken);

    public Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken) => Nft.DeleteTableAsync(family, table, cancellationToken);

    public Task<string?> ListTableJsonAsync(string family, string table, CancellationToken cancellationToken) => Nft.ListTableJsonAsync(family, table, cancellationToken);
}
