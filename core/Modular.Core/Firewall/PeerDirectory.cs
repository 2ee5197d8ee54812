using System.Collections.Frozen;
using Modular.Control.Management;

namespace Modular.Core.Firewall;

/// <summary>
/// The remote peers of one network map by overlay address, so flow events name the peer at either end
/// (<c>SourceResourceId</c>, <c>DestinationResourceId</c>) by its ID in the map. Immutable: a new one per map,
/// read without locks on a connection's first packet.
/// </summary>
public sealed class PeerDirectory
{
    private readonly FrozenDictionary<UInt128, string> _ids;

    private PeerDirectory(FrozenDictionary<UInt128, string> ids) => _ids = ids;

    public static PeerDirectory Empty { get; } = new(FrozenDictionary<UInt128, string>.Empty);

    public int Count => _ids.Count;

    /// <summary>
    /// The peers of <paramref name="map"/> that have an ID (servers before <c>RemotePeer.id</c> send none), by the
    /// address of their first allowed IP (their overlay address, a /32 or /128); malformed entries are skipped.
    /// </summary>
    public static PeerDirectory From(NetworkMap map)
    {
        ArgumentNullException.ThrowIfNull(map);
        var ids = new Dictionary<UInt128, string>();
        foreach (var peer in map.RemotePeers)
        {
            if (peer.Id.Length > 0 && peer.AllowedIps.Count > 0 && IpPrefix128.TryParse(peer.AllowedIps[0], out var prefix))
            {
                ids.TryAdd(prefix.Address, peer.Id);
            }
        }

        return ids.Count == 0 ? Empty : new PeerDirectory(ids.ToFrozenDictionary());
    }

    /// <summary>The ID of the peer whose overlay address is <paramref name="address"/>, or null.</summary>
    public string? Find(UInt128 address) => _ids.GetValueOrDefault(address);
}
