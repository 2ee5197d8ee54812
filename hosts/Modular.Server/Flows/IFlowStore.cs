using Modular.Abstractions.Flows;

namespace Modular.Server.Flows;

/// <summary>
/// The flow events agents shipped through the Flow API: the source of truth (Redis, when configured, only caches).
/// Each event is kept once per peer and event ID, by a unique constraint in the store, so a batch sent again after a
/// lost acknowledgement or a server restart stores nothing twice. A peer's events go with the peer.
/// </summary>
public interface IFlowStore
{
    /// <summary>
    /// Stores <paramref name="events"/> of the peer <paramref name="peerId"/> in one transaction (insert or ignore),
    /// skipping those older than <paramref name="keepSince"/> (retention would sweep them at once). Returns when the
    /// transaction committed, with the events this call added (not those held already): every event of the batch is
    /// then held or expired, so all of them may be acknowledged.
    /// </summary>
    Task<IReadOnlyList<FlowEvent>> AddFlowEventsAsync(string peerId, IReadOnlyList<FlowEvent> events, DateTimeOffset keepSince, CancellationToken cancellationToken);

    /// <summary>
    /// The newest <paramref name="limit"/> events at or after <paramref name="since"/> (null: any time), of the peer
    /// <paramref name="peerReference"/> names (as <c>peers remove</c> names one: name, name.zone, overlay IP, public key
    /// or id; null: every peer), oldest first.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No peer matches <paramref name="peerReference"/>.</exception>
    /// <exception cref="Store.AmbiguousPeerException">Several peers match it.</exception>
    Task<IReadOnlyList<StoredFlowEvent>> ListFlowEventsAsync(string? peerReference, DateTimeOffset? since, int limit, CancellationToken cancellationToken);

    /// <summary>Deletes every event older than <paramref name="cutoff"/> (retention); returns how many.</summary>
    Task<int> DeleteFlowEventsBeforeAsync(DateTimeOffset cutoff, CancellationToken cancellationToken);

    /// <summary>How many events the store holds (all peers).</summary>
    Task<long> CountFlowEventsAsync(CancellationToken cancellationToken);
}

/// <summary>One stored event with the peer that sent it (as it is now: name and overlay address).</summary>
public sealed record StoredFlowEvent(string PeerId, string PeerName, System.Net.IPAddress PeerAddress, FlowEvent Event, DateTimeOffset ReceivedAt);
