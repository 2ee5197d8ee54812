namespace Modular.Server.Networks;

/// <summary>
/// Upstream resolvers the agents forward to: for <see cref="Domains"/> and their subdomains, or, with no
/// domains, for every name outside the mesh zone (the default group; there is at most one). Each
/// nameserver is normalized "ip:port" ("[v6]:port"), tried in order.
/// </summary>
public sealed record NameserverGroupRecord(string Id, string Name, IReadOnlyList<string> Nameservers, IReadOnlyList<string> Domains, DateTimeOffset CreatedAt)
{
    public bool IsDefault => Domains.Count == 0;
}

/// <summary>A nameserver group as an administrator asked for it, before validation.</summary>
public sealed record NewNameserverGroup(string Name, IReadOnlyList<string> Nameservers, IReadOnlyList<string> Domains);

/// <summary>
/// The account's nameserver groups. Every change bumps the network serial, so agents get the new DNS
/// section at once. Invalid input throws <see cref="NetworkValidationException"/> and stores nothing.
/// </summary>
public interface INameserverStore
{
    /// <summary>In creation order (the order agents receive them).</summary>
    Task<IReadOnlyList<NameserverGroupRecord>> ListNameserverGroupsAsync(CancellationToken cancellationToken);

    /// <summary>Refused: a name in use, a second default group, or a domain another group already serves.</summary>
    Task<NameserverGroupRecord> CreateNameserverGroupAsync(NewNameserverGroup group, CancellationToken cancellationToken);

    /// <summary>Deletes a group by id or name; false when there is none.</summary>
    Task<bool> DeleteNameserverGroupAsync(string idOrName, CancellationToken cancellationToken);
}
