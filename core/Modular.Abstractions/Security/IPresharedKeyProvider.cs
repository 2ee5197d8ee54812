using Modular.Abstractions.Plugins;
using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Security;

/// <summary>A remote peer as the PSK provider sees it.</summary>
/// <param name="PublicKey">Its WireGuard key.</param>
/// <param name="Name">Its hostname.</param>
/// <param name="RosenpassFingerprint">Its Rosenpass public key fingerprint, if it runs Rosenpass.</param>
/// <param name="RosenpassAddress">Where its Rosenpass endpoint listens, if it does.</param>
public sealed record PskPeer(WgKey PublicKey, string Name, string? RosenpassFingerprint, string? RosenpassAddress)
{
    /// <summary>This agent's own WireGuard public key (default when the host is older than contract 1.1).</summary>
    public WgKey LocalPublicKey { get; init; }

    /// <summary>The account's WireGuard PSK, when the account sets one; a provider mixes it in or falls back to it.</summary>
    public WgKey? AccountPresharedKey { get; init; }

    /// <summary>
    /// Whether peers without Rosenpass are allowed (<c>[rosenpass] permissive</c>, the local key over the account's);
    /// false (strict): a provider refuses them.
    /// </summary>
    public bool Permissive { get; init; }
}

/// <summary>The provider's answer for one peer.</summary>
public readonly record struct PskDecision(bool Allowed, WgKey? PresharedKey, string? Reason)
{
    /// <summary>Allow the peer, with <paramref name="presharedKey"/> (null: no PSK).</summary>
    public static PskDecision Allow(WgKey? presharedKey) => new(true, presharedKey, null);

    /// <summary>Refuse the peer; <paramref name="reason"/> is logged and shown in status.</summary>
    public static PskDecision Refuse(string reason) => new(false, null, reason);

    /// <summary>
    /// Set when <see cref="PresharedKey"/> is the output of a post-quantum key exchange: since when this peer's tunnel
    /// has been keyed that way without a break (status shows it). Null: the key (if any) is not post-quantum.
    /// </summary>
    public DateTimeOffset? QuantumResistantSince { get; init; }
}

/// <summary>
/// Gives the WireGuard pre-shared key for a peer, and may refuse a peer (strict Rosenpass
/// refuses peers without Rosenpass). Keys change over time: <see cref="KeyChanged"/> says when.
/// </summary>
/// <remarks>
/// Threading: <see cref="GetPresharedKeyAsync"/> may run concurrently for different peers. <see cref="KeyChanged"/>
/// may be raised from any thread; its handler (the host) only schedules a re-read, so raising it while holding
/// the provider's own lock is safe, but the provider must not wait for the re-read inside the event.
/// Close: <see cref="IAsyncDisposable.DisposeAsync"/> is called once, after the host stopped asking; it ends
/// the provider's background work, and no <see cref="KeyChanged"/> is raised after it returns.
/// </remarks>
public interface IPresharedKeyProvider : IAsyncDisposable
{
    /// <summary>
    /// The decision for <paramref name="peer"/>. Called whenever the engine configures the peer, from any thread and
    /// concurrently for different peers; it may wait (an exchange) but should honour the cancellation token. Never
    /// log the key.
    /// </summary>
    ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken);

    /// <summary>Raised with the peer whose key rotated; the engine then re-reads and re-applies it.</summary>
    event EventHandler<WgKey>? KeyChanged;
}

/// <summary>
/// Optional: a <see cref="IPresharedKeyProvider"/> whose key exchange runs inside the tunnel reports its traffic, so
/// the host's lazy connections do not count it as activity (it never keeps a peer from going idle).
/// </summary>
/// <remarks>Read from any thread, every few seconds; it must not block.</remarks>
public interface IPresharedKeyTraffic
{
    /// <summary>
    /// The bytes the provider's own exchange with <paramref name="peer"/> moved through the tunnel so far, both
    /// directions, as WireGuard counts them (each datagram with its IP, UDP and WireGuard overhead); 0 for an unknown peer.
    /// </summary>
    long TrafficBytes(WgKey peer);
}

/// <summary>
/// Optional: a <see cref="IPresharedKeyProvider"/> told when the host no longer needs a peer's key: the peer left the
/// network map, or it went Idle (lazy connections). The provider stops its exchange with the peer and forgets its
/// state; the host asks <see cref="IPresharedKeyProvider.GetPresharedKeyAsync"/> again when the peer is back (in the
/// map, or woken), and the provider starts over then.
/// </summary>
/// <remarks>Called from the host's apply or stats loop, one call at a time, never concurrently with itself; it must not block.</remarks>
public interface IPresharedKeyPeerLifecycle
{
    /// <summary><paramref name="peer"/> needs no key for now (gone from the map, or Idle): stop exchanging with it, forget it.</summary>
    void PeerInactive(WgKey peer);
}

/// <summary>
/// Optional: a <see cref="IPresharedKeyProvider"/> that runs but cannot do its work (no address to exchange keys on,
/// its port cannot be bound) says why, so `status` shows the feature as not available with that reason instead of on,
/// not only the log. The provider stays in force meanwhile: it still decides every peer (a strict one still refuses).
/// </summary>
/// <remarks>Read from any thread, at each network map the host applies; it must not block.</remarks>
public interface IPresharedKeyProviderStatus
{
    /// <summary>Why the provider cannot give its keys now (one line, no secrets); null while it can.</summary>
    string? Problem { get; }
}

/// <summary>Export with <c>[Export(typeof(IPresharedKeyProviderFactory))]</c> and a <c>[PluginName]</c>.</summary>
public interface IPresharedKeyProviderFactory : IPluginFactory
{
    /// <summary>
    /// Creates the provider for one run of the engine, which disposes it when it stops. Not called concurrently
    /// with itself. The factory's own constructor must stay cheap; work (key exchange) starts here.
    /// </summary>
    ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken);
}
