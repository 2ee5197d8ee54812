using Google.Protobuf;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;

namespace Modular.Server.Management;

/// <summary>
/// Builds incremental Sync responses: after the whole map, a stream sends only the peers that were added,
/// changed or removed since the serial it last sent (from the <see cref="NetworkChangeLog"/>), and the
/// map's other sections only when they changed. With 10,000 peers one peer joining costs each stream a
/// few hundred bytes instead of ~1 MB.
/// </summary>
public static class SyncDeltas
{
    /// <summary>Below this many changed peers a delta is always worth it, whatever the map's size.</summary>
    public const int SmallChange = 16;

    /// <summary>
    /// The serialized SyncResponse carrying a <see cref="NetworkMapDelta"/> from <paramref name="sentSerial"/> to
    /// <paramref name="snapshot"/>'s serial for <paramref name="self"/>, or null when a whole map must be sent
    /// instead: the log has no unbroken chain between the two serials, or so much changed that the
    /// delta would be about as large as the map.
    /// </summary>
    public static byte[]? TryEncode(NetworkChangeLog log, ulong sentSerial, NetworkSnapshot snapshot, WgKey self, NetworkMap sections, bool sectionsUnchanged, ServiceAddresses services)
    {
        if (!log.TryCollect(sentSerial, snapshot.Serial, out var combined)
            || NetworkChangeLog.TooLarge(combined.Count, snapshot.Peers.Count))
        {
            return null;
        }

        var delta = new NetworkMapDelta { Serial = snapshot.Serial, PreviousSerial = sentSerial };
        foreach (var (key, remote) in combined)
        {
            if (key == self)
            {
                // A peer's own entry is never in its map; its own config travels in sections.
                continue;
            }

            if (remote is null)
            {
                delta.RemovedPeerKeys.Add(ByteString.CopyFrom(key.ToArray()));
            }
            else
            {
                delta.UpsertedPeers.Add(remote);
            }
        }

        if (!sectionsUnchanged)
        {
            delta.Sections = sections;
        }

        return new SyncResponse { NetworkMapDelta = delta, Services = services }.ToByteArray();
    }
}
