using System.Diagnostics.CodeAnalysis;

namespace Modular.Core.Firewall;

/// <summary>
/// The connection-tracking table: every tracked <see cref="FlowEntry"/>, split into shards that each have their own
/// lock, a shard chosen by a hash that is the same for both directions of a connection (so a reply finds its
/// connection in the shard it is already holding). It knows keys, capacity and timeouts, nothing of rules or events.
/// <para>
/// Why callers hold a shard while deciding (<see cref="Enter"/>): a new flow is judged by the rules and inserted
/// under one lock, so a rule update that re-checks every shard (<see cref="Review"/>) cannot miss a flow judged by
/// the rules it replaced. Admission is decided in one place, <see cref="LockedShard.Admits"/>.
/// </para>
/// <para>
/// Why admission is more than "is there room": every peer may open flows to the mesh resolver whatever the
/// policies, so without bounds one peer could fill the table and every new flow of everyone (the host's own
/// outbound ones included) would be refused. So, per shard: inbound flows (opened by a remote peer) may hold at
/// most <see cref="InboundCapacity"/> entries, leaving the rest to this host's outbound flows; one remote source
/// address may hold at most <see cref="FirewallOptions.MaxFlowsPerSource"/> / <see cref="ShardCount"/> inbound
/// entries; and when the inbound share is full, a newcomer whose source holds fewer entries than the heaviest
/// source takes the place of one of the heaviest source's flows (unestablished ones first, then its least recently
/// used): under pressure the table tends to a fair share per source, and a flood only ever evicts the flooder.
/// </para>
/// </summary>
internal sealed class FlowTable
{
    public const int ShardCount = 16;

    /// <summary>
    /// How often, at most, a full shard is swept for expired entries while admitting (the periodic sweep does the
    /// rest): a flood meeting a full shard must not cost a full scan per packet.
    /// </summary>
    public static readonly TimeSpan PressureSweepInterval = TimeSpan.FromSeconds(1);

    // Immutable after construction; each shard's contents are guarded by that shard's own lock.
    private readonly Shard[] _shards;
    private readonly FirewallOptions _options;
    private readonly TimeProvider _time;
    private readonly long _pressureSweepTicks;

    /// <param name="options">
    /// Capacity (<see cref="FirewallOptions.MaxFlows"/> and <see cref="FirewallOptions.MaxFlowsPerSource"/>, each
    /// split evenly over the shards) and the timeouts per state.
    /// </param>
    public FlowTable(FirewallOptions options, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(time);
        if (options.MaxFlows < ShardCount)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxFlows must be at least {ShardCount}");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxFlowsPerSource, 1, nameof(options));
        _options = options;
        _time = time;
        _pressureSweepTicks = (long)(PressureSweepInterval.TotalSeconds * time.TimestampFrequency);
        var capacity = options.MaxFlows / ShardCount;
        var perSource = Math.Max(1, options.MaxFlowsPerSource / ShardCount);
        _shards = new Shard[ShardCount];
        for (var i = 0; i < ShardCount; i++)
        {
            _shards[i] = new Shard(capacity, InboundCapacity(capacity), perSource);
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
    /// The entries of a shard of <paramref name="capacity"/> that inbound flows may hold: all but an eighth (at least
    /// one entry once a shard holds two), which only this host's outbound flows can use.
    /// </summary>
    public static int InboundCapacity(int capacity) => capacity < 2 ? capacity : capacity - Math.Max(1, capacity / 8);

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

    /// <summary>Inbound connections opened by <paramref name="source"/> (a remote address), expired ones not yet swept included.</summary>
    public int CountFrom(UInt128 source)
    {
        var total = 0;
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                total += shard.InboundBySource.GetValueOrDefault(source);
            }
        }

        return total;
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
                foreach (var entry in shard.Flows.Values)
                {
                    if (!stillAllowed(entry))
                    {
                        shard.Remove(entry);
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

    /// <summary>
    /// Neither a reply nor a finished handshake seen (UDP/ICMP without a reply, TCP before its final ACK), or
    /// already reset: what a flood is made of, and what goes first under pressure.
    /// </summary>
    private static bool IsUnestablished(FlowEntry entry) => entry.State is not (ConnectionState.Established or ConnectionState.FinWait or ConnectionState.TimeWait);

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
        shard.LastSweep = nowTicks;
        foreach (var entry in shard.Flows.Values)
        {
            // Removing the current entry while enumerating is allowed for Dictionary (.NET Core 3.0 and later).
            if (IsExpired(entry, nowTicks))
            {
                shard.Remove(entry);
                ended?.Add(entry);
            }
        }
    }

    /// <summary>Sweeps a shard under pressure, at most once per <see cref="PressureSweepInterval"/>. Call with its lock held.</summary>
    private void SweepUnderPressure(Shard shard, long nowTicks, bool collect, ref List<FlowEntry>? ended)
    {
        if (shard.LastSweep != long.MinValue && nowTicks - shard.LastSweep < _pressureSweepTicks)
        {
            return;
        }

        var before = shard.Flows.Count;
        if (collect)
        {
            ended ??= [];
        }

        RemoveExpired(shard, nowTicks, collect ? ended : null);
        if (collect && ended!.Count == 0 && before == shard.Flows.Count)
        {
            ended = null;
        }
    }

    /// <summary>
    /// The flow a new inbound flow from <paramref name="source"/> (holding <paramref name="sourceCount"/> entries here)
    /// may take the place of, or null: one of the heaviest source's when it holds more than the newcomer
    /// (unestablished first, then the least recently seen), else only one of the newcomer's own unestablished
    /// flows. One pass; only when the shard's inbound share is full. Call with the lock held.
    /// </summary>
    private static FlowEntry? FindVictim(Shard shard, UInt128 source, int sourceCount)
    {
        var heaviest = source;
        var heaviestCount = sourceCount;
        foreach (var (address, count) in shard.InboundBySource)
        {
            if (count > heaviestCount)
            {
                (heaviest, heaviestCount) = (address, count);
            }
        }

        var fromOther = heaviest != source;
        FlowEntry? victim = null;
        foreach (var entry in shard.Flows.Values)
        {
            if (entry.Direction != RuleDirection.Inbound || entry.Key.Source != heaviest)
            {
                continue;
            }

            var unestablished = IsUnestablished(entry);
            if (!unestablished && !fromOther)
            {
                continue;
            }

            if (victim is null
                || (unestablished && !IsUnestablished(victim))
                || (unestablished == IsUnestablished(victim) && entry.LastSeen < victim.LastSeen))
            {
                victim = entry;
            }
        }

        return victim;
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
                _shard.Remove(entry);
                expired = entry;
                entry = null;
                return false;
            }

            return true;
        }

        /// <summary>Stops tracking <paramref name="entry"/> (its End is the caller's).</summary>
        public void Remove(FlowEntry entry) => _shard.Remove(entry);

        /// <summary>The same as <see cref="Admits(in FlowKey, RuleDirection, long, bool, ref List{FlowEntry}?)"/>, dropping the End of whatever it removes.</summary>
        public bool Admits(in FlowKey key, RuleDirection direction, long nowTicks)
        {
            List<FlowEntry>? ended = null;
            return Admits(key, direction, nowTicks, collect: false, ref ended);
        }

        /// <summary>
        /// Whether a new connection <paramref name="key"/> opened going <paramref name="direction"/> may be tracked: the
        /// one admission decision, asked before the entry is built so a refused flood allocates nothing. In order:
        /// an inbound source at its per-shard bound is refused (after a sweep); a full shard, or a full inbound share
        /// for an inbound flow, is swept of expired entries (at most once per <see cref="PressureSweepInterval"/>);
        /// if still full, an inbound newcomer may take a victim's place (see the type's remarks) and an outbound one
        /// is refused. Entries it removes are added to <paramref name="ended"/> (created on demand) when
        /// <paramref name="collect"/>, so the caller emits their End events once the lock is released.
        /// </summary>
        public bool Admits(in FlowKey key, RuleDirection direction, long nowTicks, bool collect, ref List<FlowEntry>? ended)
        {
            var shard = _shard;
            if (direction != RuleDirection.Inbound)
            {
                if (shard.Flows.Count < shard.Capacity)
                {
                    return true;
                }

                _table.SweepUnderPressure(shard, nowTicks, collect, ref ended);
                return shard.Flows.Count < shard.Capacity;
            }

            var source = key.Source;
            var sourceCount = shard.InboundBySource.GetValueOrDefault(source);
            if (sourceCount >= shard.PerSourceCapacity)
            {
                _table.SweepUnderPressure(shard, nowTicks, collect, ref ended);
                sourceCount = shard.InboundBySource.GetValueOrDefault(source);
                if (sourceCount >= shard.PerSourceCapacity)
                {
                    return false;
                }
            }

            if (shard.Flows.Count < shard.Capacity && shard.InboundCount < shard.InboundCapacity)
            {
                return true;
            }

            _table.SweepUnderPressure(shard, nowTicks, collect, ref ended);
            if (shard.Flows.Count < shard.Capacity && shard.InboundCount < shard.InboundCapacity)
            {
                return true;
            }

            // The inbound share is full (outbound flows never fill it: they are bounded by the whole shard only).
            if (shard.InboundCount < shard.InboundCapacity || FindVictim(shard, source, shard.InboundBySource.GetValueOrDefault(source)) is not { } victim)
            {
                return false;
            }

            shard.Remove(victim);
            if (collect)
            {
                (ended ??= []).Add(victim);
            }

            return true;
        }

        /// <summary>
        /// Tracks <paramref name="entry"/>; <see cref="Admits(in FlowKey, RuleDirection, long)"/> said yes to its key under
        /// this same lock. Returns the entry it replaced (same key, tracked the other way), whose End is the caller's.
        /// </summary>
        public FlowEntry? Add(FlowEntry entry)
        {
            var replaced = _shard.Flows.GetValueOrDefault(entry.Key);
            if (replaced is not null)
            {
                _shard.Remove(replaced);
            }

            _shard.Add(entry);
            return replaced;
        }

        public void Dispose() => _shard.Lock.Exit();
    }

    private sealed class Shard(int capacity, int inboundCapacity, int perSourceCapacity)
    {
        public Lock Lock { get; } = new();

        /// <summary>Guarded by <see cref="Lock"/>; changed only through <see cref="Add"/> and <see cref="Remove"/>.</summary>
        public Dictionary<FlowKey, FlowEntry> Flows { get; } = [];

        /// <summary>Inbound entries per remote source address (no zero counts). Guarded by <see cref="Lock"/>.</summary>
        public Dictionary<UInt128, int> InboundBySource { get; } = [];

        /// <summary>Inbound entries in <see cref="Flows"/>. Guarded by <see cref="Lock"/>.</summary>
        public int InboundCount { get; private set; }

        /// <summary>The TimeProvider timestamp of the last sweep (long.MinValue: never). Guarded by <see cref="Lock"/>.</summary>
        public long LastSweep { get; set; } = long.MinValue;

        public int Capacity { get; } = capacity;

        public int InboundCapacity { get; } = inboundCapacity;

        public int PerSourceCapacity { get; } = perSourceCapacity;

        public void Add(FlowEntry entry)
        {
            Flows.Add(entry.Key, entry);
            if (entry.Direction == RuleDirection.Inbound)
            {
                InboundCount++;
                InboundBySource[entry.Key.Source] = InboundBySource.GetValueOrDefault(entry.Key.Source) + 1;
            }
        }

        public void Remove(FlowEntry entry)
        {
            if (!Flows.Remove(entry.Key, out var removed) || removed.Direction != RuleDirection.Inbound)
            {
                return;
            }

            InboundCount--;
            var left = InboundBySource[removed.Key.Source] - 1;
            if (left == 0)
            {
                InboundBySource.Remove(removed.Key.Source);
            }
            else
            {
                InboundBySource[removed.Key.Source] = left;
            }
        }
    }
}
