using Modular.Abstractions.WireGuard;
using Modular.Server.Networks;

namespace Modular.Server.Store;

/// <summary>
/// The control plane's state: one account's peers, setup keys, groups, policies and network serial. Every change that
/// alters some peer's network map increments the serial, so any process sharing the store (another
/// server instance, the admin CLI) can tell a running server to push new maps.
/// </summary>
public interface IStore : INetworkPolicyStore, INameserverStore, Flows.IFlowStore, IRosenpassKeyStore, IAsyncDisposable
{
    /// <summary>Creates or migrates the schema. Idempotent.</summary>
    Task InitializeAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Creates a setup key; the plaintext key is returned once and never stored. Names are unique (a command
    /// names a key by it): an empty name gets a free one ("setup-key", "setup-key-2", ...).
    /// </summary>
    /// <exception cref="NameInUseException">Another key (revoked ones included) has the name; nothing is stored.</exception>
    Task<(SetupKeyRecord Record, string PlainKey)> CreateSetupKeyAsync(NewSetupKey spec, CancellationToken cancellationToken);

    Task<IReadOnlyList<SetupKeyRecord>> ListSetupKeysAsync(CancellationToken cancellationToken);

    /// <summary>Revokes by id or name; returns the keys matched, as they were before (empty when none).</summary>
    Task<IReadOnlyList<SetupKeyRecord>> RevokeSetupKeyAsync(string idOrName, CancellationToken cancellationToken);

    /// <summary>
    /// Registers (or re-registers) a peer with a setup key, atomically: checks the key, counts the use,
    /// assigns the lowest free overlay address (kept when the key is already registered).
    /// </summary>
    /// <exception cref="SetupKeyRejectedException">Unknown, expired, exhausted or revoked key.</exception>
    /// <exception cref="InvalidOperationException">The overlay network is full.</exception>
    Task<PeerRecord> RegisterPeerAsync(string plainSetupKey, WgKey publicKey, PeerMetadata meta, DateTimeOffset? loginExpiresAt, CancellationToken cancellationToken);

    Task<PeerRecord?> GetPeerAsync(WgKey publicKey, CancellationToken cancellationToken);

    Task<IReadOnlyList<PeerRecord>> ListPeersAsync(CancellationToken cancellationToken);

    /// <summary>Records a login: last-seen always; metadata only when changed (then the serial increments). The DNS label never changes here.</summary>
    Task<PeerRecord?> UpdatePeerAsync(WgKey publicKey, PeerMetadata? meta, CancellationToken cancellationToken);

    /// <summary>
    /// Removes peers matching a name (hostname, DNS label or label.zone), overlay IP, public key or id. Returns them.
    /// </summary>
    Task<IReadOnlyList<PeerRecord>> RemovePeersAsync(string match, CancellationToken cancellationToken);

    /// <summary>
    /// Gives a peer (named as for <see cref="RemovePeersAsync"/>) another DNS label: the one way a label changes after
    /// registration (a peer's own hostname changes never move it). Unchanged label: nothing happens.
    /// </summary>
    /// <exception cref="ArgumentException">Not a DNS label.</exception>
    /// <exception cref="KeyNotFoundException">No peer matches.</exception>
    /// <exception cref="AmbiguousPeerException">Several peers match.</exception>
    /// <exception cref="NameInUseException">Another peer has the label.</exception>
    Task<PeerRecord> RenamePeerAsync(string match, string label, CancellationToken cancellationToken);

    Task<ulong> GetNetworkSerialAsync(CancellationToken cancellationToken);

    /// <summary>Increments the serial (e.g. when a login expired) and returns the new one.</summary>
    Task<ulong> BumpNetworkSerialAsync(CancellationToken cancellationToken);
}
