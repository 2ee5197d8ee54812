using Modular.Abstractions.WireGuard;
using Modular.Control.Signal;

namespace Modular.Core.Peers;

/// <summary>Sends end-to-end sealed signal bodies to a peer; throws when signal is down.</summary>
public interface IPeerSignaling
{
    Task SendAsync(WgKey recipient, SignalBody body, CancellationToken cancellationToken);
}
