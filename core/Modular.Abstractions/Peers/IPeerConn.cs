using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Peers;

/// <summary>The state of one remote peer's connection.</summary>
public enum PeerConnectionState
{
    /// <summary>No connection and no attempt: the peer is lazy and has no traffic, or it was closed.</summary>
    Idle,

    /// <summary>Exchanging credentials and checking paths.</summary>
    Connecting,

    /// <summary>WireGuard has a fresh handshake over a direct or relayed path.</summary>
    Connected,
}

/// <summary>How a connected peer is reached.</summary>
public enum ConnectionType
{
    P2P,
    Relayed,
}

/// <summary>A change of a peer connection's state.</summary>
public sealed record PeerStateChange(WgKey Peer, PeerConnectionState From, PeerConnectionState To, DateTimeOffset At, string? Reason);

/// <summary>
/// One remote peer's connection. Reusable: after <see cref="CloseAsync"/> it can be opened again.
/// </summary>
public interface IPeerConn : IAsyncDisposable
{
    WgKey PublicKey { get; }

    /// <summary>The peer's registered hostname.</summary>
    string Name { get; }

    PeerConnectionState State { get; }

    DateTimeOffset LastStateChange { get; }

    /// <summary>Starts connecting; returns at once (the state moves to Connecting).</summary>
    ValueTask OpenAsync(CancellationToken cancellationToken);

    /// <summary>Tears the connection down (WireGuard peer, proxy, sockets) and returns to Idle.</summary>
    ValueTask CloseAsync(CancellationToken cancellationToken);

    event EventHandler<PeerStateChange>? StateChanged;
}
