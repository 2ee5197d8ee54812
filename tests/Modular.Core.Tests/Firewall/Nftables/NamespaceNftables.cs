using Modular.Core.Firewall.Nftables;
using Modular.Core.Os;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>The agent's nft operations, run inside one test namespace (`ip netns exec`).</summary>
internal sealed class NamespaceNftables(string namespaceName) : INftables
{
    public Task ApplyAsync(string script, CancellationToken cancellationToken)
        => HostCommand.RunCheckedAsync("ip", ["netns", "exec", namespaceName, "nft", "-f", "-"], script, cancellationToken);

    public async Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken)
        => await HostCommand.RunCheckedAsync("ip", ["netns", "exec", namespaceName, "nft", "delete", "table", family, table], cancellationToken: cancellationToken);

    public async Task<string?> ListCountersJsonAsync(string family, string table, CancellationToken cancellationToken)
    {
        var result = await HostCommand.RunAsync("ip", ["netns", "exec", namespaceName, "nft", "-j", "list", "counters", "table", family, table], cancellationToken: cancellationToken);
        return result.Succeeded ? result.Output : null;
    }
}
