using Modular.Abstractions.WireGuard;
using Modular.Control.Management;

namespace Modular.Server.Management;

/// <summary>
/// What changed in the account's peer list between two consecutive snapshots, as peers see each other:
/// entries added or changed (the whole new entry; a lapsed login is a change: the entry marked expired) and keys
/// that left (removed).
/// </summary>
/// <remarks>
/// A change too large to be worth a delta (see <see cref="NetworkChangeLog.TooLarge"/>) is kept without its
/// peers (<see cref="Complete"/> false): it only links the serials, and a stream crossing it gets a whole map.
/// </remarks>
public sealed record NetworkChange(ulong FromSerial, ulong ToSerial, IReadOnlyDictionary<WgKey, RemotePeer> Upserted, IReadOnlyList<WgKey> Removed, bool Complete = true)
{
    public int Size => Upserted.Count + Removed.Count;
}

/// <summary>
/// A bounded log of recent <see cref="NetworkChange"/>s, recorded by <see cref="NetworkState"/> each time it
/// publishes a snapshot, so a Sync stream that last sent serial A can send just the changes up to B instead of
/// the whole map. Only the changes are kept (not the snapshots), so memory is proportional to what changed.
/// When the chain from A to B is not in the log (too old, or a snapshot this process never saw) there is no
/// delta and the caller sends a whole map.
/// </summary>
public sealed class NetworkChangeLog
{
    private readonly Lock _lock = new();
    private readonly Queue<NetworkChange> _changes = new();
    private readonly int _capacity;
    private long _held;

    public NetworkChangeLog(int capacity = 256)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
    }

    /// <summary>
    /// Whether a change of <paramref name="size"/> peers in an account of <paramref name="peers"/> is better sent
    /// as a whole map: more than half the peers, and more than <see cref="SyncDeltas.SmallChange"/>.
    /// </summary>
    public static bool TooLarge(int size, int peers) => size > Math.Max(SyncDeltas.SmallChange, peers / 2);

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _changes.Count;
            }
        }
    }

    /// <summary>
    /// Records the change from <paramref name="previous"/> to <paramref name="next"/>; each peer as others saw it when
    /// its snapshot was taken (a lapsed login is a change of the peer: it is sent again, marked expired). Without a
    /// previous snapshot the log starts afresh.
    /// </summary>
    public NetworkChange? Record(NetworkSnapshot? previous, NetworkSnapshot next, Config.AccountConfig account)
    {
        if (previous is null || next.Serial <= previous.Serial)
        {
            lock (_lock)
            {
                _changes.Clear();
                _held = 0;
            }

            return null;
        }

        var before = new Dictionary<WgKey, RemotePeer>(previous.Peers.Count);
        foreach (var (peer, remote) in previous.RemotePeers(account))
        {
            before[peer.PublicKey] = NetworkMapBuilder.AsSeenAt(peer, remote, previous.TakenAt);
        }

        var upserted = new Dictionary<WgKey, RemotePeer>();
        foreach (var (peer, seen) in next.RemotePeers(account))
        {
            var remote = NetworkMapBuilder.AsSeenAt(peer, seen, next.TakenAt);

            // RemotePeer equality is by value (generated protobuf Equals), so an unchanged peer is not sent again.
            if (!before.Remove(peer.PublicKey, out var old) || !old.Equals(remote))
            {
                upserted[peer.PublicKey] = remote;
            }
        }

        var change = new NetworkChange(previous.Serial, next.Serial, upserted, [.. before.Keys]);
        if (TooLarge(change.Size, next.Peers.Count))
        {
            change = new NetworkChange(previous.Serial, next.Serial, new Dictionary<WgKey, RemotePeer>(), [], Complete: false);
        }

        // Bounded by count and by peers held, so a burst of large changes cannot pin many snapshots' worth of entries.
        var maxHeld = Math.Max(4096L, 4L * next.Peers.Count);
        lock (_lock)
        {
            _changes.Enqueue(change);
            _held += change.Size;
            while (_changes.Count > _capacity || (_held > maxHeld && _changes.Count > 1))
            {
                _held -= _changes.Dequeue().Size;
            }
        }

        return change;
    }

    /// <summary>
    /// The combined change from serial <paramref name="from"/> to <paramref name="to"/>: for each key its latest
    /// entry, or null when it left. False when the log does not hold an unbroken chain between them.
    /// </summary>
    public bool TryCollect(ulong from, ulong to, out Dictionary<WgKey, RemotePeer?> combined)
    {
        combined = [];
        if (to <= from)
        {
            return false;
        }

        lock (_lock)
        {
            var serial = from;
            foreach (var change in _changes)
            {
                if (change.ToSerial <= serial)
                {
                    continue;
                }

                if (change.FromSerial != serial || !change.Complete)
                {
                    return false;
                }

                foreach (var (key, remote) in change.Upserted)
                {
                    combined[key] = remote;
                }

                foreach (var key in change.Removed)
                {
                    combined[key] = null;
                }

                serial = change.ToSerial;
                if (serial == to)
                {
                    return true;
                }

                if (serial > to)
                {
                    return false;
                }
            }
        }

        return false;
    }
}
