namespace Modular.Server.Networks;

/// <summary>
/// Groups, access policies and network resources of the account. Every change bumps the network serial,
/// so running servers push new maps (with the new firewall rules) to every agent. Invalid input throws
/// <see cref="NetworkValidationException"/> and stores nothing.
/// </summary>
public interface INetworkPolicyStore
{
    Task<IReadOnlyList<GroupRecord>> ListGroupsAsync(CancellationToken cancellationToken);

    Task<GroupRecord> CreateGroupAsync(string name, CancellationToken cancellationToken);

    /// <summary>Deletes a group by id or name. Refused while a policy uses it, and for the built-in All group.</summary>
    Task<bool> DeleteGroupAsync(string idOrName, CancellationToken cancellationToken);

    /// <summary>Adds a peer (name, overlay IP, public key or id) to a group; true when it was not a member yet.</summary>
    Task<bool> AddPeerToGroupAsync(string group, string peer, CancellationToken cancellationToken);

    Task<bool> RemovePeerFromGroupAsync(string group, string peer, CancellationToken cancellationToken);

    Task<IReadOnlyList<PolicyRecord>> ListPoliciesAsync(CancellationToken cancellationToken);

    Task<PolicyRecord> CreatePolicyAsync(NewPolicy policy, CancellationToken cancellationToken);

    Task<bool> DeletePolicyAsync(string idOrName, CancellationToken cancellationToken);

    Task<IReadOnlyList<NetworkResourceRecord>> ListResourcesAsync(CancellationToken cancellationToken);

    /// <summary>Creates a resource (a route). 0.0.0.0/0 and ::/0 only with <see cref="NewResource.ExitNode"/>.</summary>
    Task<NetworkResourceRecord> CreateResourceAsync(NewResource resource, CancellationToken cancellationToken);

    /// <summary>Deletes a resource by id or name. Refused while a policy uses it.</summary>
    Task<bool> DeleteResourceAsync(string idOrName, CancellationToken cancellationToken);
}
