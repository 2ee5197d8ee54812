namespace Modular.Core.Os;

/// <summary>
/// nftables through the `nft` tool. Every table the agent owns is written as one script applied with
/// `nft -f -`, which the kernel takes as a single transaction: a rule set is replaced whole or not at
/// all, and traffic never sees it half-written.
/// </summary>
public static class Nft
{
    /// <summary>Applies <paramref name="script"/> atomically; throws <see cref="IOException"/> with nft's message when it is refused.</summary>
    public static Task ApplyAsync(string script, CancellationToken cancellationToken = default)
        => HostCommand.RunCheckedAsync("nft", ["-f", "-"], script, cancellationToken);

    /// <summary>Deletes a table; a table that does not exist is not an error.</summary>
    public static async Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken = default)
    {
        var result = await HostCommand.RunAsync("nft", ["delete", "table", family, table], cancellationToken: cancellationToken);
        if (!result.Succeeded && !result.Error.Contains("No such file or directory", StringComparison.Ordinal))
        {
            throw new IOException($"nft delete table {family} {table}: {result.Error.Trim()}");
        }
    }

    /// <summary>The table's named counters as nft's JSON (`nft -j list counters table`), or null when nft cannot list them.</summary>
    public static async Task<string?> ListCountersJsonAsync(string family, string table, TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        var result = await HostCommand.RunAsync("nft", ["-j", "list", "counters", "table", family, table], timeout: timeout, cancellationToken: cancellationToken);
        return result.Succeeded ? result.Output : null;
    }

    /// <summary>
    /// A script prefix that (re)creates <paramref name="table"/> empty: "add" makes sure it exists so the
    /// following "delete" cannot fail, then the caller's definitions follow in the same transaction.
    /// </summary>
    public static string ReplaceTablePrologue(string family, string table) => $"add table {family} {table}\ndelete table {family} {table}\n";
}
