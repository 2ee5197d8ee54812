using System.Diagnostics.CodeAnalysis;

namespace Modular.Core.Firewall;

/// <summary>
/// The connection-tracking table: every tracked <see cref="FlowEntry"/>, split into shards that each have their own
/// lock, a shard chosen by a hash that is the same for both directions of a connection (so a reply finds its
/// connection in the shard it is already holding). It knows keys, capacity and timeouts, nothing of rules or events.
/// <para>
/// Why callers hold a shard while deciding (<see cref="Enter"/>): a new flow is judged by the rules and inserted
/// under one lock, so a rule update that re-checks every shard (<see cref="Review"/>) cannot miss a flow judged by
/// the rules it replaced. Admission is decided in one place, <see cref="LockedShard.Admits"/>: capacity today,
/// and where per-source bounds belong.
/// </para>
/// </summary>
internal sealed class FlowTable
{
    public const int ShardCount = 16;

    // Immutable after construction; each shard's contents are guarded by that shard's own lock.
    private readonly Shard[] _shards;
    private readonly FirewallOptions _options;
    private readonly TimeProvider _time;

    /// <param name="options">Capacity (<see cref="FirewallOptions.MaxFlows"/>, split evenly over the shards) and the timeouts per state.</param>
    public FlowTable(FirewallOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        if (options.MaxFlows < ShardCount)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxFlows must be at least {ShardCount}");
        }

        _options = options;
        _time = time;
        _shards = new Shard[ShardCount];
        for (var i = 0; i < ShardCount; i++)
        {
            _shards[i] = new Shard(options.MaxFlows / ShardCount);
        }
    }

    /// <summary>Tracked connections, expired ones not yet swept included.</summary>
    public int Count
    {
        get
        {
            var total = 0;
            foreach (var shard in _shards)
            {
                lock (shard.Lock)
                {
                    total += shard.Flows.Count;
                }
            }

            return total;
        }
    }

    /// <summary>
    /// Locks the shard of <paramref name="key"/>'s connection (either direction) until the result is disposed.
    /// Keep the scope short and call nothing outside the firewall inside it (no sink, no logging).
    /// </summary>
    public LockedShard Enter(in FlowKey key) => new(this, ShardIndex(key));

    /// <summary>True when a live connection has <paramref name="key"/> in either direction (for ICMP errors quoting it).</summary>
    public bool IsTracked(in FlowKey key, long nowTicks)
    {
        var shard = _shards[ShardIndex(key)];
        lock (shard.Lock)
        {
            return (shard.Flows.TryGetValue(key, out var entry) || shard.Flows.TryGetValue(key.Reverse(), out entry)) && !IsExpired(entry, nowTicks);
        }
    }

    /// <summary>Removes every expired connection; adds them to <paramref name="ended"/> when given.</summary>
    public void RemoveExpired(long nowTicks, List<FlowEntry>? ended)
    {
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                RemoveExpired(shard, nowTicks, ended);
            }
        }
    }

    /// <summary>
    /// Re-judges every tracked connection: those <paramref name="stillAllowed"/> returns false for are removed (and
    /// added to <paramref name="ended"/> when given). The callback runs under the shard's lock and may update the
    /// entry (its rule ID).
    /// </summary>
    public void Review(Func<FlowEntry, bool> stillAllowed, List<FlowEntry>? ended)
    {
        ArgumentNullException.ThrowIfNull(stillAllowed);
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                foreach (var (key, entry) in shard.Flows)
                {
                    if (!stillAllowed(entry))
                    {
                        shard.Flows.Remove(key);
                        ended?.Add(entry);
                    }
                }
            }
        }
    }

    public List<FlowSnapshot> Snapshot()
    {
        var flows = new List<FlowSnapshot>();
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                foreach (var entry in shard.Flows.Values)
                {
                    flows.Add(entry.Snapshot());
                }
            }
        }

        return flows;
    }

    private bool IsExpired(FlowEntry entry, long nowTicks) => _time.GetElapsedTime(entry.LastSeen, nowTicks) > Timeout(entry);

    private TimeSpan Timeout(FlowEntry entry) => entry.State switch
    {
        ConnectionState.SynSent or ConnectionState.SynReceived => _options.TcpHandshakeTimeout,
        ConnectionState.FinWait or ConnectionState.TimeWait => _options.TcpClosingTimeout,
        ConnectionState.Closed => _options.TcpResetTimeout,
        _ when entry.Key.Protocol == IpProtocol.Tcp => _options.TcpEstablishedTimeout,
        _ when entry.Key.Protocol is IpProtocol.Icmp or IpProtocol.IcmpV6 => _options.IcmpTimeout,
        ConnectionState.Established => _options.UdpStreamTimeout,
        _ => _options.UdpTimeout,
    };

    /// <summary>Call with <paramref name="shard"/>'s lock held.</summary>
    private void RemoveExpired(Shard shard, long nowTicks, List<FlowEntry>? ended)
    {
        List<FlowKey>? expired = null;
        foreach (var (key, entry) in shard.Flows)
        {
            if (IsExpired(entry, nowTicks))
            {
                (expired ??= []).Add(key);
            }
        }

        if (expired is null)
        {
            return;
        }

        foreach (var key in expired)
        {
            if (shard.Flows.Remove(key, out var entry))
            {
                ended?.Add(entry);
            }
        }
    }

    private static int ShardIndex(in FlowKey key)
    {
        // Symmetric in the two ends, so a reply lands in the shard of its connection.
        var addresses = key.Source ^ key.Destination;
        var hash = (uint)(ulong)addresses ^ (uint)((ulong)addresses >> 32) ^ (uint)(addresses >> 64) ^ (uint)(key.SourcePort ^ key.DestinationPort) ^ key.Protocol;
        hash ^= hash >> 16;
        hash ^= hash >> 8;
        return (int)(hash % ShardCount);
    }

    /// <summary>One shard's lock, held from <see cref="Enter"/> until disposed: what the packet path does to one connection.</summary>
    public readonly ref struct LockedShard
    {
        private readonly FlowTable _table;
        private readonly Shard _shard;

        internal LockedShard(FlowTable table, int shardIndex)
        {
            _table = table;
            _shard = table._shards[shardIndex];
            _shard.Lock.Enter();
        }

        /// <summary>
        /// The live connection a packet with <paramref name="key"/> going <paramref name="direction"/> belongs to: the
        /// same key and direction (the originator's packets) or the reverse key and the other direction (replies).
        /// One found expired is removed on the way and returned in <paramref name="expired"/> (its End is the caller's).
        /// </summary>
        public bool TryFind(in FlowKey key, RuleDirection direction, long nowTicks, [NotNullWhen(true)] out FlowEntry? entry, out bool isReply, out FlowEntry? expired)
        {
            expired = null;
            if (_shard.Flows.TryGetValue(key, out entry) && entry.Direction == direction)
            {
                isReply = false;
            }
            else if (_shard.Flows.TryGetValue(key.Reverse(), out entry) && entry.Direction != direction)
            {
                isReply = true;
            }
            else
            {
                entry = null;
                isReply = false;
                return false;
            }

            if (_table.IsExpired(entry, nowTicks))
            {
                _shard.Flows.Remove(entry.Key);
                expired = entry;
                entry = null;
                return false;
            }

            return true;
        }

        /// <summary>Stops tracking <paramref name="entry"/>.</summary>
        public void Remove(FlowEntry entry) => _shard.Flows.Remove(entry.Key);

        /// <summary>
        /// Whether a new connection <paramref name="key"/> opened going <paramref name="direction"/> may be tracked: the
        /// one admission decision, asked before the entry is built so a refused flood allocates nothing. A full shard
        /// first drops its expired entries (without End events); a live entry is never evicted, so false means the new
        /// flow is refused.
        /// </summary>
        public bool Admits(in FlowKey key, RuleDirection direction, long nowTicks)
        {
            if (_shard.Flows.Count < _shard.Capacity)
            {
                return true;
            }

            _table.RemoveExpired(_shard, nowTicks, null);
            return _shard.Flows.Count < _shard.Capacity;
        }

        /// <summary>Tracks <paramref name="entry"/>; <see cref="Admits"/> said yes to its key under this same lock.</summary>
        public void Add(FlowEntry entry) => _shard.Flows[entry.Key] = entry;

        public void Dispose() => _shard.Lock.Exit();
    }

    private sealed class Shard(int capacity)
    {
        public Lock Lock { get; } = new();

        /// <summary>Guarded by <see cref="Lock"/>.</summary>
        public Dictionary<FlowKey, FlowEntry> Flows { get; } = [];

        public int Capacity { get; } = capacity;
    }
}
