using Modular.Abstractions.Peers;

namespace Modular.Core.Peers;

/// <summary>
/// What <see cref="PeerLiveness.Decide"/> knows of one path besides the counters: the connection's state and path type
/// as the connect loop last saw them, and what the watch itself tracks (plain values, so a test writes them down).
/// </summary>
/// <param name="Connection">The connection's state.</param>
/// <param name="Type">The path in use (null before one is chosen).</param>
/// <param name="PathSet">When the path was set (a handshake older than this belongs to an earlier path).</param>
/// <param name="LastDirectTry">When a direct path was last tried (while relayed).</param>
/// <param name="Received">The received-bytes counter at the last look that saw it move.</param>
/// <param name="ReceivedAt">When <paramref name="Received"/> last moved (or the watch restarted).</param>
/// <param name="ProbedAt">When the silent peer was asked for a new handshake; null while no probe is out.</param>
/// <param name="Trial">A switch from the relay to a direct path not yet proven (the relayed proxy is kept meanwhile); null otherwise.</param>
public readonly record struct LivenessState(
    PeerConnectionState Connection,
    ConnectionType? Type,
    DateTimeOffset PathSet,
    DateTimeOffset LastDirectTry,
    long? Received,
    DateTimeOffset ReceivedAt,
    DateTimeOffset? ProbedAt,
    DirectTrial? Trial = null)
{
    /// <summary>The watch of a path just set at <paramref name="pathSet"/>.</summary>
    public static LivenessState OnPath(DateTimeOffset pathSet, PeerConnectionState connection, ConnectionType? type)
        => new(connection, type, pathSet, pathSet, null, pathSet, null);
}
