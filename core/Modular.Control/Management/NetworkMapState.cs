using Modular.Abstractions.WireGuard;

namespace Modular.Control.Management;

/// <summary>What <see cref="NetworkMapState.Apply"/> did with one Sync response.</summary>
public enum MapUpdateResult
{
    /// <summary>Nothing to apply (no map in the response, or a whole map older than the one held).</summary>
    Ignored,

    /// <summary>The held map changed (a whole map replaced it or a delta was applied).</summary>
    Applied,

    /// <summary>
    /// A delta that does not follow the serial held: something was missed, so applying it would silently
    /// diverge from the server. The caller must reconnect Sync, which starts with a whole map.
    /// </summary>
    ResyncNeeded,
}

/// <summary>
/// The agent's copy of its network map, kept current from Sync responses: a whole map replaces it, a
/// <see cref="NetworkMapDelta"/> is applied only when its previous_serial is the serial held.
/// </summary>
public sealed class NetworkMapState
{
    private readonly Dictionary<WgKey, RemotePeer> _peers = [];
    private NetworkMap? _sections;

    /// <summary>The serial of the map held; 0 before the first whole map.</summary>
    public ulong Serial { get; private set; }

    public int PeerCount => _peers.Count;

    /// <summary>Forgets the map (a new Sync stream starts with a whole map).</summary>
    public void Reset()
    {
        _peers.Clear();
        _sections = null;
        Serial = 0;
    }

    /// <summary>Applies one Sync response; see <see cref="MapUpdateResult"/>.</summary>
    public MapUpdateResult Apply(SyncResponse response)
    {
        if (response.NetworkMap is { } map)
        {
            if (map.Serial != 0 && map.Serial < Serial)
            {
                return MapUpdateResult.Ignored;
            }

            _peers.Clear();
            foreach (var remote in map.RemotePeers)
            {
                // Malformed keys are reported (and skipped) by MapApplier.ToPeers; keep them out of the index only.
                if (remote.WgPubKey.Length == WgKey.Size)
                {
                    _peers[new WgKey(remote.WgPubKey.Span)] = remote;
                }
            }

            _sections = map.Clone();
            _sections.RemotePeers.Clear();
            Serial = map.Serial;
            return MapUpdateResult.Applied;
        }

        if (response.NetworkMapDelta is not { } delta)
        {
            return MapUpdateResult.Ignored;
        }

        if (_sections is null || delta.PreviousSerial != Serial || delta.Serial <= Serial)
        {
            return MapUpdateResult.ResyncNeeded;
        }

        foreach (var key in delta.RemovedPeerKeys)
        {
            if (key.Length == WgKey.Size)
            {
                _peers.Remove(new WgKey(key.Span));
            }
        }

        foreach (var remote in delta.UpsertedPeers)
        {
            if (remote.WgPubKey.Length == WgKey.Size)
            {
                _peers[new WgKey(remote.WgPubKey.Span)] = remote;
            }
        }

        if (delta.Sections is { } sections)
        {
            _sections = sections.Clone();
            _sections.RemotePeers.Clear();
        }

        Serial = delta.Serial;
        return MapUpdateResult.Applied;
    }

    /// <summary>The whole map held, as the server would send it at <see cref="Serial"/>.</summary>
    public NetworkMap ToMap()
    {
        var map = _sections?.Clone() ?? new NetworkMap();
        map.Serial = Serial;
        map.RemotePeers.AddRange(_peers.Values);
        return map;
    }
}
