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
    /// <summary>A direct UDP path (ICE host, server-reflexive or peer-reflexive).</summary>
    P2P,
    /// <summary>Through a relay server or TURN.</summary>
    Relayed,
}

/// <summary>A change of a peer connection's state.</summary>
public sealed record PeerStateChange(WgKey Peer, PeerConnectionState From, PeerConnectionState To, DateTimeOffset At, string? Reason);

/// <summary>
/// One remote peer's connection. Reusable: after <see cref="CloseAsync"/> it can be opened again.
/// </summary>
public interface IPeerConn : IAsyncDisposable
{
    /// <summary>The remote peer's WireGuard public key; identifies it.</summary>
    WgKey PublicKey { get; }

    /// <summary>The peer's registered hostname.</summary>
    string Name { get; }

    /// <summary>The current state; may change on another thread right after it is read.</summary>
    PeerConnectionState State { get; }

    /// <summary>When <see cref="State"/> last changed (the host's clock).</summary>
    DateTimeOffset LastStateChange { get; }

    /// <summary>Starts connecting; returns at once (the state moves to Connecting).</summary>
    ValueTask OpenAsync(CancellationToken cancellationToken);

    /// <summary>Tears the connection down (WireGuard peer, proxy, sockets) and returns to Idle.</summary>
    ValueTask CloseAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Raised after every state change, on the thread that made it, one change at a time in order. A handler must
    /// not block and must not call <see cref="OpenAsync"/> or <see cref="CloseAsync"/> (post the work elsewhere).
    /// </summary>
    event EventHandler<PeerStateChange>? StateChanged;
}
