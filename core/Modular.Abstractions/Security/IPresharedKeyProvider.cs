using Modular.Abstractions.Plugins;
using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Security;

/// <summary>A remote peer as the PSK provider sees it.</summary>
/// <param name="PublicKey">Its WireGuard key.</param>
/// <param name="Name">Its hostname.</param>
/// <param name="RosenpassFingerprint">Its Rosenpass public key fingerprint, if it runs Rosenpass.</param>
/// <param name="RosenpassAddress">Where its Rosenpass endpoint listens, if it does.</param>
public sealed record PskPeer(WgKey PublicKey, string Name, string? RosenpassFingerprint, string? RosenpassAddress);

/// <summary>The provider's answer for one peer.</summary>
public readonly record struct PskDecision(bool Allowed, WgKey? PresharedKey, string? Reason)
{
    public static PskDecision Allow(WgKey? presharedKey) => new(true, presharedKey, null);

    public static PskDecision Refuse(string reason) => new(false, null, reason);
}

/// <summary>
/// Gives the WireGuard pre-shared key for a peer, and may refuse a peer (strict Rosenpass
/// refuses peers without Rosenpass). Keys change over time: <see cref="KeyChanged"/> says when.
/// </summary>
public interface IPresharedKeyProvider : IAsyncDisposable
{
    ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken);

    /// <summary>Raised with the peer whose key rotated; the engine then re-reads and re-applies it.</summary>
    event EventHandler<WgKey>? KeyChanged;
}

/// <summary>Export with <c>[Export(typeof(IPresharedKeyProviderFactory))]</c> and a <c>[PluginName]</c>.</summary>
public interface IPresharedKeyProviderFactory : IPluginFactory
{
    ValueTask<IPresharedKeyProvider> CreateAsync(IPluginContext context, CancellationToken cancellationToken);
}
