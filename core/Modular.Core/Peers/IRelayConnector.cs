using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>Opens the relay path for one peer: relay binding plus a proxy of the selected kind.</summary>
public interface IRelayConnector
{
    /// <summary>Throws with a message fit for status when there is no relay or it refuses.</summary>
    Task<RelayedPath> ConnectAsync(WgKey remotePeer, CancellationToken cancellationToken);
}
