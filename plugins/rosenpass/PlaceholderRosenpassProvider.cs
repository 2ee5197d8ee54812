using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.Rosenpass;

/// <summary>
/// Says plainly that it has no post-quantum key: every peer is allowed with no PSK from this
/// provider, and no key ever changes. It never claims quantum resistance.
/// </summary>
public sealed class PlaceholderRosenpassProvider : IPresharedKeyProvider
{
    public event EventHandler<WgKey>? KeyChanged
    {
        add { }
        remove { }
    }

    public ValueTask<PskDecision> GetPresharedKeyAsync(PskPeer peer, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        return ValueTask.FromResult(PskDecision.Allow(null));
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
