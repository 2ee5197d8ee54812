using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// The userspace stateful firewall of the in-process packet path. Packets of tracked connections pass
/// (replies included); the first packet of a new connection is checked against the compiled rules of its
/// direction and, when accepted, starts tracking. Thread-safe: the table is split into shards, each with
/// its own lock, and a shard is chosen by a hash that is the same for both directions of a connection.
/// It is the in-process WireGuard device's <see cref="Modular.WireGuard.Device.IPacketFilter"/>: set it as
/// <c>WgDevice.PacketFilter</c>.
/// </summary>
public sealed class StatefulFirewall : Modular.WireGuard.Device.IPacketFilter, IDisposable
{
    private const int ShardCount = 16;

    private readonly FirewallOptions _options;
    private readonly TimeProvider _time;
    private readonly IFlowSink? _sink;
    private readonly Shard[] _shards;
    private readonly ConcurrentDictionary<string, StrongBox<long>> _dropsByRule = new(StringComparer.Ordinal);
    private readonly ITimer _sweepTimer;
    private readonly Lock _rulesLock = new();
    private readonly UInt128[] _localAddresses;
    private RuleSets _rules;
    private RoutedResources _resources = RoutedResources.Empty;
    private LocalService[] _localServices = [];
    private long _malformed;
    private long _fragments;
    private readonly FragmentTracker _fragmentTracker;
    private long _invalid;
    private long _tableFull;
    private long _defaultDrops;
    private long _sinkFailures;
    private long _dropEventWindow;
    private long _dropEventsInWindow;
    private long _suppressedDropEvents;

    public StatefulFirewall(FirewallOptions? options = null, TimeProvider? timeProvider = null, IFlowSink? sink = null)
    {
        _options = options ?? new FirewallOptions();
        if (_options.MaxFlows < ShardCount)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"MaxFlows must be at least {ShardCount}");
        }

        _time = timeProvider ?? TimeProvider.System;
        _fragmentTracker = new FragmentTracker(_time);
        _sink = sink;
        _shards = new Shard[ShardCount];
        for (var i = 0; i < ShardCount; i++)
        {
            _shards[i] = new Shard(_options.MaxFlows / ShardCount);
        }

        _localAddresses = [.. _options.LocalAddresses.Select(IpPrefix128.ToUInt128)];
        _rules = new RuleSets(CompiledRuleSet.Empty, CompiledRuleSet.Empty, RoutedRuleSet.Empty);
        _sweepTimer = _time.CreateTimer(_ => SweepExpired(), null, _options.SweepInterval, _options.SweepInterval);
    }

    /// <summary>Packets dropped because they could not be parsed.</summary>
    public long MalformedDrops => Interlocked.Read(ref _malformed);

    /// <summary>Later IP fragments dropped: their first fragment was not allowed, not seen (yet), or too long ago.</summary>
    public long FragmentDrops => Interlocked.Read(ref _fragments);

    /// <summary>Inbound TCP that belongs to no tracked connection and is not an opening SYN.</summary>
    public long InvalidDrops => Interlocked.Read(ref _invalid);

    /// <summary>New flows dropped because the connection table was full.</summary>
    public long TableFullDrops => Interlocked.Read(ref _tableFull);

    /// <summary>New flows no rule matched and the direction's default dropped.</summary>
    public long DefaultDrops => Interlocked.Read(ref _defaultDrops);

    /// <summary>Drop events not emitted because more than <see cref="FirewallOptions.MaxDropEventsPerSecond"/> came in one second.</summary>
    public long SuppressedDropEvents => Interlocked.Read(ref _suppressedDropEvents);

    /// <summary>Flow events the sink threw on.</summary>
    public long SinkFailures => Interlocked.Read(ref _sinkFailures);

    public int ActiveFlows
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

    /// <summary>Packets dropped per rule ID, kept across rule updates.</summary>
    public IReadOnlyDictionary<string, long> DropsByRule => _dropsByRule.ToDictionary(pair => pair.Key, pair => Interlocked.Read(ref pair.Value.Value), StringComparer.Ordinal);

    /// <summary>
    /// Replaces the rules. Tracked connections the new rules would no longer open are ended at once,
    /// so removing a policy cuts existing traffic too, not only new connections. Routed rules (with a
    /// destination) decide only inbound packets to addresses other than <see cref="FirewallOptions.LocalAddresses"/>,
    /// the others only packets of this peer's own: a policy to a peer never opens the networks it routes, and a
    /// route rule never opens the peer itself.
    /// </summary>
    public void UpdateRules(IEnumerable<FirewallRule> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var all = rules.ToList();
        var own = all.Where(r => !r.IsRouted).ToList();
        var compiled = new RuleSets(
            CompiledRuleSet.Compile(own.Where(r => r.Direction == RuleDirection.Inbound).ToList(), CounterFor),
            CompiledRuleSet.Compile(own.Where(r => r.Direction == RuleDirection.Outbound).ToList(), CounterFor),
            RoutedRuleSet.Compile(all.Where(r => r.IsRouted && r.Direction == RuleDirection.Inbound).ToList(), CounterFor));
        var ended = new List<FlowEvent>();
        var now = _time.GetUtcNow();

        // Updates serialize, so the re-check below always runs against the rules that end up in force.
        lock (_rulesLock)
        {
            Volatile.Write(ref _rules, compiled);
            ReviewTrackedFlows(compiled, ended, now);
        }

        ended.ForEach(Emit);
    }

    private void ReviewTrackedFlows(RuleSets compiled, List<FlowEvent> ended, DateTimeOffset now)
    {
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                foreach (var (key, entry) in shard.Flows)
                {
                    var inbound = entry.Direction == RuleDirection.Inbound;
                    var (action, ruleSet, ruleIndex) = Decide(compiled, entry.Direction, entry.Key.Protocol, inbound ? entry.Key.Source : entry.Key.Destination, inbound ? entry.Key.Destination : entry.Key.Source, entry.Key.DestinationPort);
                    if (action == RuleAction.Drop)
                    {
                        shard.Flows.Remove(key);
                        if (_sink is not null)
                        {
                            ended.Add(ToEvent(entry, FlowEventType.End, now, entry.RuleId));
                        }
                    }
                    else
                    {
                        entry.RuleId = ruleIndex >= 0 ? ruleSet!.Rules[ruleIndex].RuleId : null;
                    }
                }
            }
        }
    }

    /// <summary>Names the network resources (routes) flows may go to, for their events' <c>DestinationResourceId</c>.</summary>
    public void UpdateResources(RoutedResources resources)
    {
        ArgumentNullException.ThrowIfNull(resources);
        Volatile.Write(ref _resources, resources);
    }

    /// <summary>
    /// Services of this peer that every peer may reach whatever the policies (the mesh resolver on the
    /// overlay address, port 53): a new inbound flow to one of them is accepted before any rule is looked at,
    /// and rule updates never end it. Replaces the previous list; empty by default.
    /// </summary>
    public IReadOnlyList<LocalService> LocalServices
    {
        get => Volatile.Read(ref _localServices);
        set => Volatile.Write(ref _localServices, [.. value ?? []]);
    }

    /// <summary>A packet leaving towards the mesh (read from the TUN). False: drop it.</summary>
    public bool AllowOutbound(ReadOnlySpan<byte> ipPacket) => Filter(ipPacket, RuleDirection.Outbound);

    /// <summary>A packet that arrived from the mesh (decrypted). False: drop it.</summary>
    public bool AllowInbound(ReadOnlySpan<byte> ipPacket) => Filter(ipPacket, RuleDirection.Inbound);

    public IReadOnlyList<FlowSnapshot> SnapshotFlows()
    {
        var flows = new List<FlowSnapshot>();
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                foreach (var entry in shard.Flows.Values)
                {
                    flows.Add(new FlowSnapshot(entry.FlowId, entry.Key, entry.Direction, entry.State, entry.RuleId, entry.OriginalPackets, entry.OriginalBytes, entry.ReplyPackets, entry.ReplyBytes));
                }
            }
        }

        return flows;
    }

    /// <summary>Removes expired connections and emits their End events. Runs on a timer; callable directly.</summary>
    public void SweepExpired()
    {
        var nowTicks = _time.GetTimestamp();
        var now = _time.GetUtcNow();
        var ended = new List<FlowEvent>();
        foreach (var shard in _shards)
        {
            lock (shard.Lock)
            {
                shard.RemoveExpired(nowTicks, this, ended, now);
            }
        }

        ended.ForEach(Emit);
    }

    public void Dispose() => _sweepTimer.Dispose();

    private bool Filter(ReadOnlySpan<byte> ipPacket, RuleDirection direction)
    {
        if (!PacketParser.TryParse(ipPacket, out var header))
        {
            Interlocked.Increment(ref _malformed);
            return false;
        }

        if (header.IsFragment)
        {
            if (_fragmentTracker.IsAllowed(header.FragmentKey))
            {
                return true;
            }

            Interlocked.Increment(ref _fragments);
            return false;
        }

        if (header.QuotedKey is { } quoted && IsTracked(quoted))
        {
            // An ICMP error about a tracked connection (e.g. "packet too big" for path MTU discovery) belongs to it.
            return true;
        }

        var key = header.Key;
        var shard = _shards[ShardIndex(key)];
        var nowTicks = _time.GetTimestamp();
        FlowEvent? pending = null;
        bool allowed;
        lock (shard.Lock)
        {
            if (TryTrack(shard, key, header, direction, nowTicks, ref pending))
            {
                allowed = true;
            }
            else
            {
                allowed = Open(shard, key, header, direction, nowTicks, ref pending);
            }
        }

        if (pending is not null)
        {
            Emit(pending);
        }

        if (allowed && header.IsFirstFragment)
        {
            _fragmentTracker.AllowFirst(header.FragmentKey);
        }

        return allowed;
    }

    private bool IsTracked(FlowKey key)
    {
        var shard = _shards[ShardIndex(key)];
        var nowTicks = _time.GetTimestamp();
        lock (shard.Lock)
        {
            return (shard.Flows.TryGetValue(key, out var entry) || shard.Flows.TryGetValue(key.Reverse(), out entry)) && !IsExpired(entry, nowTicks);
        }
    }

    /// <summary>A packet of a connection already tracked (either direction): update state and counters.</summary>
    private bool TryTrack(Shard shard, FlowKey key, in PacketHeader header, RuleDirection direction, long nowTicks, ref FlowEvent? pending)
    {
        bool isReply;
        if (shard.Flows.TryGetValue(key, out var entry) && entry.Direction == direction)
        {
            isReply = false;
        }
        else if (shard.Flows.TryGetValue(key.Reverse(), out entry) && entry.Direction != direction)
        {
            isReply = true;
        }
        else
        {
            return false;
        }

        if (IsExpired(entry, nowTicks))
        {
            shard.Flows.Remove(entry.Key);
            if (_sink is not null)
            {
                pending = ToEvent(entry, FlowEventType.End, _time.GetUtcNow(), entry.RuleId);
            }

            return false;
        }

        // A fresh SYN on a connection that already closed is a new connection reusing the ports: re-check it.
        if (!isReply && header.Protocol == IpProtocol.Tcp && entry.State is ConnectionState.TimeWait or ConnectionState.Closed
            && (header.TcpFlags & (TcpFlags.Syn | TcpFlags.Ack)) == TcpFlags.Syn)
        {
            shard.Flows.Remove(entry.Key);
            return false;
        }

        entry.LastSeen = nowTicks;
        if (isReply)
        {
            entry.ReplyPackets++;
            entry.ReplyBytes += (ulong)header.Length;
        }
        else
        {
            entry.OriginalPackets++;
            entry.OriginalBytes += (ulong)header.Length;
        }

        entry.State = header.Protocol == IpProtocol.Tcp
            ? NextTcpState(entry, header.TcpFlags, isReply)
            : isReply ? ConnectionState.Established : entry.State;
        return true;
    }

    /// <summary>The first packet of a connection: decide by the rules, then track it.</summary>
    private bool Open(Shard shard, FlowKey key, in PacketHeader header, RuleDirection direction, long nowTicks, ref FlowEvent? pending)
    {
        var isTcp = header.Protocol == IpProtocol.Tcp;
        var isOpeningSyn = isTcp && (header.TcpFlags & (TcpFlags.Syn | TcpFlags.Ack | TcpFlags.Rst)) == TcpFlags.Syn;
        if (isTcp && !isOpeningSyn && direction == RuleDirection.Inbound)
        {
            // Mid-stream, SYN-ACK or RST from outside with nothing tracked: not a connection anyone opened.
            Interlocked.Increment(ref _invalid);
            return false;
        }

        var rules = Volatile.Read(ref _rules);
        var inbound = direction == RuleDirection.Inbound;
        var (action, ruleSet, ruleIndex) = Decide(rules, direction, header.Protocol, inbound ? header.Source : header.Destination, inbound ? header.Destination : header.Source, header.DestinationPort);
        var ruleId = ruleIndex >= 0 ? ruleSet!.Rules[ruleIndex].RuleId : null;
        if (action == RuleAction.Drop)
        {
            if (ruleIndex >= 0)
            {
                Interlocked.Increment(ref ruleSet!.DropCounters[ruleIndex].Value);
            }
            else
            {
                Interlocked.Increment(ref _defaultDrops);
            }

            if (_sink is not null && TakeDropEventToken(nowTicks))
            {
                pending = DropEvent(header, direction, ruleId, Volatile.Read(ref _resources).Find(header.Destination));
            }

            return false;
        }

        // Only connection openers are tracked: ICMP errors and stray echo replies pass on the rules alone.
        var trackable = !header.IsIcmp || header.IsIcmpEchoRequest;
        if (!trackable || (isTcp && (header.TcpFlags & TcpFlags.Rst) != 0))
        {
            return true;
        }

        if (shard.Flows.Count >= shard.Capacity)
        {
            shard.RemoveExpired(nowTicks, this, null, default);
            if (shard.Flows.Count >= shard.Capacity)
            {
                Interlocked.Increment(ref _tableFull);
                return false;
            }
        }

        var entry = new FlowEntry(Guid.NewGuid(), key, direction, ruleId)
        {
            ResourceId = _sink is null ? null : Volatile.Read(ref _resources).Find(header.Destination),
            LastSeen = nowTicks,
            OriginalPackets = 1,
            OriginalBytes = (ulong)header.Length,

            // Our own stack picking up a connection mid-stream (e.g. after the rules changed) is trusted.
            State = !isTcp ? ConnectionState.New : isOpeningSyn ? ConnectionState.SynSent : ConnectionState.Established,
        };
        shard.Flows[key] = entry;
        if (_sink is not null)
        {
            pending = ToEvent(entry, FlowEventType.Start, _time.GetUtcNow(), ruleId);
        }

        return true;
    }

    /// <summary>A fixed one-second window; racing threads may let a few extra through at a window's edge, which is harmless.</summary>
    private bool TakeDropEventToken(long nowTicks)
    {
        var window = nowTicks / _time.TimestampFrequency;
        if (Interlocked.Read(ref _dropEventWindow) != window)
        {
            Interlocked.Exchange(ref _dropEventWindow, window);
            Interlocked.Exchange(ref _dropEventsInWindow, 0);
        }

        if (Interlocked.Increment(ref _dropEventsInWindow) <= _options.MaxDropEventsPerSecond)
        {
            return true;
        }

        Interlocked.Increment(ref _suppressedDropEvents);
        return false;
    }

    /// <summary>
    /// The action for a new flow, with the rule set and index of the rule that decided it (-1: the default or a
    /// local service). <paramref name="local"/> is this side's address (the destination of an inbound flow):
    /// inbound to a local service is accepted first; inbound to an address that is not this peer's own is
    /// forwarded traffic, decided by the routed rules for it alone.
    /// </summary>
    private (RuleAction Action, CompiledRuleSet? RuleSet, int RuleIndex) Decide(RuleSets rules, RuleDirection direction, byte protocol, UInt128 remote, UInt128 local, ushort port)
    {
        if (direction == RuleDirection.Inbound)
        {
            foreach (var service in Volatile.Read(ref _localServices))
            {
                if (service.Protocol == protocol && service.Port == port && service.Address == local)
                {
                    return (RuleAction.Accept, null, -1);
                }
            }
        }

        var ruleSet = direction == RuleDirection.Inbound && IsForwarded(local) ? rules.Routed.For(local) : rules.For(direction);
        var index = ruleSet?.Match(remote, protocol, port) ?? -1;
        if (index >= 0)
        {
            return (ruleSet!.Rules[index].Action, ruleSet, index);
        }

        return (direction == RuleDirection.Inbound ? _options.DefaultInbound : _options.DefaultOutbound, null, -1);
    }

    /// <summary>True when <paramref name="destination"/> is not one of this peer's own addresses (and those are known).</summary>
    private bool IsForwarded(UInt128 destination)
    {
        var locals = _localAddresses;
        if (locals.Length == 0)
        {
            return false;
        }

        foreach (var local in locals)
        {
            if (local == destination)
            {
                return false;
            }
        }

        return true;
    }

    private static ConnectionState NextTcpState(FlowEntry entry, TcpFlags flags, bool isReply)
    {
        if ((flags & TcpFlags.Rst) != 0)
        {
            return ConnectionState.Closed;
        }

        if ((flags & TcpFlags.Fin) != 0)
        {
            if (isReply)
            {
                entry.ReplyFin = true;
            }
            else
            {
                entry.OriginalFin = true;
            }

            return entry.OriginalFin && entry.ReplyFin ? ConnectionState.TimeWait : ConnectionState.FinWait;
        }

        return entry.State switch
        {
            ConnectionState.SynSent when isReply && (flags & (TcpFlags.Syn | TcpFlags.Ack)) == (TcpFlags.Syn | TcpFlags.Ack) => ConnectionState.SynReceived,
            ConnectionState.SynReceived when !isReply && (flags & (TcpFlags.Syn | TcpFlags.Ack)) == TcpFlags.Ack => ConnectionState.Established,
            _ => entry.State,
        };
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

    private StrongBox<long> CounterFor(string ruleId) => _dropsByRule.GetOrAdd(ruleId, _ => new StrongBox<long>());

    private static int ShardIndex(in FlowKey key)
    {
        // Symmetric in the two ends, so a reply lands in the shard of its connection.
        var addresses = key.Source ^ key.Destination;
        var hash = (uint)(ulong)addresses ^ (uint)((ulong)addresses >> 32) ^ (uint)(addresses >> 64) ^ (uint)(key.SourcePort ^ key.DestinationPort) ^ key.Protocol;
        hash ^= hash >> 16;
        hash ^= hash >> 8;
        return (int)(hash % ShardCount);
    }

    private void Emit(FlowEvent flowEvent)
    {
        try
        {
            _sink!.Emit(flowEvent);
        }
        catch (Exception)
        {
            // A broken sink must never take the packet path down with it.
            Interlocked.Increment(ref _sinkFailures);
        }
    }

    private FlowEvent DropEvent(in PacketHeader header, RuleDirection direction, string? ruleId, string? resourceId)
    {
        var inbound = direction == RuleDirection.Inbound;
        return new FlowEvent(
            Guid.NewGuid(),
            Guid.NewGuid(),
            _time.GetUtcNow(),
            FlowEventType.Drop,
            inbound ? FlowDirection.Ingress : FlowDirection.Egress,
            header.Protocol,
            IpPrefix128.ToAddress(header.Source),
            header.IsIcmp ? (ushort)0 : header.SourcePort,
            IpPrefix128.ToAddress(header.Destination),
            header.IsIcmp ? (ushort)0 : header.DestinationPort,
            header.IcmpType,
            header.IcmpCode,
            inbound ? 1UL : 0,
            inbound ? (ulong)header.Length : 0,
            inbound ? 0 : 1UL,
            inbound ? 0 : (ulong)header.Length,
            ruleId,
            null,
            resourceId);
    }

    private static FlowEvent ToEvent(FlowEntry entry, FlowEventType type, DateTimeOffset now, string? ruleId)
    {
        var inbound = entry.Direction == RuleDirection.Inbound;
        var isIcmp = entry.Key.Protocol is IpProtocol.Icmp or IpProtocol.IcmpV6;
        return new FlowEvent(
            Guid.NewGuid(),
            entry.FlowId,
            now,
            type,
            inbound ? FlowDirection.Ingress : FlowDirection.Egress,
            entry.Key.Protocol,
            IpPrefix128.ToAddress(entry.Key.Source),
            isIcmp ? (ushort)0 : entry.Key.SourcePort,
            IpPrefix128.ToAddress(entry.Key.Destination),
            isIcmp ? (ushort)0 : entry.Key.DestinationPort,
            isIcmp ? (byte)(entry.Key.Protocol == IpProtocol.Icmp ? 8 : 128) : (byte)0,
            0,
            inbound ? entry.OriginalPackets : entry.ReplyPackets,
            inbound ? entry.OriginalBytes : entry.ReplyBytes,
            inbound ? entry.ReplyPackets : entry.OriginalPackets,
            inbound ? entry.ReplyBytes : entry.OriginalBytes,
            ruleId,
            null,
            entry.ResourceId);
    }

    private sealed record RuleSets(CompiledRuleSet Inbound, CompiledRuleSet Outbound, RoutedRuleSet Routed)
    {
        public CompiledRuleSet For(RuleDirection direction) => direction == RuleDirection.Inbound ? Inbound : Outbound;
    }

    private sealed class FlowEntry(Guid flowId, FlowKey key, RuleDirection direction, string? ruleId)
    {
        public Guid FlowId { get; } = flowId;

        public FlowKey Key { get; } = key;

        public RuleDirection Direction { get; } = direction;

        public string? RuleId { get; set; } = ruleId;

        /// <summary>The network resource the connection goes to (set only when flow events are emitted).</summary>
        public string? ResourceId { get; init; }

        public ConnectionState State { get; set; }

        public long LastSeen { get; set; }

        public ulong OriginalPackets { get; set; }

        public ulong OriginalBytes { get; set; }

        public ulong ReplyPackets { get; set; }

        public ulong ReplyBytes { get; set; }

        public bool OriginalFin { get; set; }

        public bool ReplyFin { get; set; }
    }

    private sealed class Shard(int capacity)
    {
        public Lock Lock { get; } = new();

        public Dictionary<FlowKey, FlowEntry> Flows { get; } = [];

        public int Capacity { get; } = capacity;

        public void RemoveExpired(long nowTicks, StatefulFirewall owner, List<FlowEvent>? ended, DateTimeOffset now)
        {
            List<FlowKey>? expired = null;
            foreach (var (key, entry) in Flows)
            {
                if (owner.IsExpired(entry, nowTicks))
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
                if (Flows.Remove(key, out var entry) && ended is not null && owner._sink is not null)
                {
                    ended.Add(ToEvent(entry, FlowEventType.End, now, entry.RuleId));
                }
            }
        }
    }
}
