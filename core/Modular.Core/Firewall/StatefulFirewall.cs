using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Modular.Abstractions.Flows;

namespace Modular.Core.Firewall;

/// <summary>
/// The userspace stateful firewall of the in-process packet path. Packets of tracked connections pass
/// (replies included); the first packet of a new connection is checked against the compiled rules of its
/// direction and, when accepted, starts tracking. It is the in-process WireGuard device's
/// <see cref="Modular.WireGuard.Device.IPacketFilter"/>: set it as <c>WgDevice.PacketFilter</c>.
/// <para>
/// This type holds the rules and composes the parts on the packet path: <see cref="FlowTable"/> (sharded
/// connection tracking: capacity, timeouts, the shard locks), <see cref="TcpStateTracker"/> (TCP states) and
/// <see cref="FlowEventEmitter"/> (Start/End/Drop events to the optional sink). Thread-safe; the packet path
/// allocates nothing for a tracked connection or a dropped one without a sink (a new connection allocates its entry).
/// </para>
/// </summary>
public sealed class StatefulFirewall : Modular.WireGuard.Device.IPacketFilter, IDisposable
{
    // Immutable after construction (the table, tracker and emitter guard their own state).
    private readonly FirewallOptions _options;
    private readonly TimeProvider _time;
    private readonly FlowTable _flows;
    private readonly FlowEventEmitter _events;
    private readonly FragmentTracker _fragmentTracker;
    private readonly UInt128[] _localAddresses;
    private readonly ConcurrentDictionary<string, StrongBox<long>> _dropsByRule = new(StringComparer.Ordinal);
    private readonly ITimer _sweepTimer;

    // Written under _rulesLock (so updates serialize), read without it through Volatile.Read: each value is immutable.
    private readonly Lock _rulesLock = new();
    private RuleSets _rules;

    // Replaced whole through Volatile.Write, read through Volatile.Read; no lock. Host addresses are written under _rulesLock.
    // (The routed resources and peers that name a flow's ends live in the emitter's scope.)
    private UInt128[] _hostAddresses = [];
    private LocalService[] _localServices = [];

    // Counters: Interlocked only.
    private long _malformed;
    private long _fragments;
    private long _invalid;
    private long _tableFull;
    private long _defaultDrops;

    public StatefulFirewall(FirewallOptions? options = null, TimeProvider? timeProvider = null, IFlowSink? sink = null)
    {
        _options = options ?? new FirewallOptions();
        _time = timeProvider ?? TimeProvider.System;
        _flows = new FlowTable(_options, _time);
        _events = new FlowEventEmitter(sink, _time, _options.MaxDropEventsPerSecond);
        _fragmentTracker = new FragmentTracker(_time);
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

    /// <summary>
    /// New flows dropped because the connection table had no room for them: the table (or its inbound share) full
    /// with nothing to evict, or their source at <see cref="FirewallOptions.MaxFlowsPerSource"/>.
    /// </summary>
    public long TableFullDrops => Interlocked.Read(ref _tableFull);

    /// <summary>New flows no rule matched and the direction's default dropped.</summary>
    public long DefaultDrops => Interlocked.Read(ref _defaultDrops);

    /// <summary>Drop events not emitted because more than <see cref="FirewallOptions.MaxDropEventsPerSecond"/> came in one second.</summary>
    public long SuppressedDropEvents => _events.SuppressedDropEvents;

    /// <summary>Flow events the sink threw on.</summary>
    public long SinkFailures => _events.SinkFailures;

    public int ActiveFlows => _flows.Count;

    /// <summary>Packets dropped per rule ID, kept across rule updates.</summary>
    public IReadOnlyDictionary<string, long> DropsByRule => _dropsByRule.ToDictionary(pair => pair.Key, pair => Interlocked.Read(ref pair.Value.Value), StringComparer.Ordinal);

    /// <summary>
    /// Services of this peer that every peer may reach whatever the policies (the mesh resolver on the
    /// overlay address, port 53): a new inbound flow to one of them is accepted before any rule is looked at,
    /// and rule updates never end it. Replaces the previous list; empty by default.
    /// </summary>
    public IReadOnlyList<LocalService> LocalServices
    {
        get => Volatile.Read(ref _localServices);
        set
        {
            LocalService[] services = [.. value ?? []];
            Volatile.Write(ref _localServices, services);
            _events.UpdateScope(scope => scope with { Resolver = services });
        }
    }

    /// <summary>
    /// Replaces the rules. Tracked connections the new rules would no longer open are ended at once,
    /// so removing a policy cuts existing traffic too, not only new connections. Routed rules (with a
    /// destination) decide only inbound packets to addresses other than <see cref="FirewallOptions.LocalAddresses"/>
    /// and the host's own (<see cref="UpdateHostAddresses"/>), the others only packets of this peer's own: a policy to a peer never opens the networks it routes, and a
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
        var ended = _events.Enabled ? new List<FlowEntry>() : null;
        var now = _time.GetUtcNow();

        // Updates serialize, so the re-check below always runs against the rules that end up in force. New flows
        // are judged and tracked under their shard's lock, which the review takes too: none slips between the two.
        lock (_rulesLock)
        {
            Volatile.Write(ref _rules, compiled);
            _flows.Review(entry => StillAllowed(compiled, entry), ended);
        }

        _events.EmitEnded(ended, now);
    }

    /// <summary>
    /// Replaces this host's own addresses besides its overlay address (<see cref="FirewallOptions.LocalAddresses"/>):
    /// its LAN, docker0 or public addresses. An inbound packet to one of them is for this peer itself, so it is judged
    /// by the rules of this peer (like one to the overlay address), never by routed rules, even when a routed
    /// network contains the address: a route opens the hosts behind a routing peer, not the routing peer. Kernel mode
    /// gets this from the kernel (such packets take the input path, not the forward one). Tracked connections the
    /// change would no longer open are ended, as by <see cref="UpdateRules"/>. Has no effect while
    /// <see cref="FirewallOptions.LocalAddresses"/> is empty (then every inbound packet is this peer's own).
    /// </summary>
    public void UpdateHostAddresses(IEnumerable<System.Net.IPAddress> addresses)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        UInt128[] updated = [.. addresses.Select(IpPrefix128.ToUInt128).Distinct().Order()];
        var ended = _events.Enabled ? new List<FlowEntry>() : null;
        var now = _time.GetUtcNow();
        lock (_rulesLock)
        {
            if (updated.AsSpan().SequenceEqual(Volatile.Read(ref _hostAddresses)))
            {
                return;
            }

            Volatile.Write(ref _hostAddresses, updated);
            var rules = Volatile.Read(ref _rules);
            _flows.Review(entry => StillAllowed(rules, entry), ended);
        }

        _events.EmitEnded(ended, now);
    }

    /// <summary>
    /// Names the network resources (routes) flows may go to or come from, for their events' resource IDs, and marks
    /// the exit nodes this peer uses (for <c>collect_exit_node</c>).
    /// </summary>
    public void UpdateResources(RoutedResources resources)
    {
        ArgumentNullException.ThrowIfNull(resources);
        _events.UpdateScope(scope => scope with { Resources = resources });
    }

    /// <summary>Names the peers of the map in force by overlay address, for flow events' resource IDs.</summary>
    public void UpdatePeers(PeerDirectory peers)
    {
        ArgumentNullException.ThrowIfNull(peers);
        _events.UpdateScope(scope => scope with { Peers = peers });
    }

    /// <summary>A packet leaving towards the mesh (read from the TUN). False: drop it.</summary>
    public bool AllowOutbound(ReadOnlySpan<byte> ipPacket) => Filter(ipPacket, RuleDirection.Outbound);

    /// <summary>A packet that arrived from the mesh (decrypted). False: drop it.</summary>
    public bool AllowInbound(ReadOnlySpan<byte> ipPacket) => Filter(ipPacket, RuleDirection.Inbound);

    public IReadOnlyList<FlowSnapshot> SnapshotFlows() => _flows.Snapshot();

    /// <summary>Removes expired connections and emits their End events. Runs on a timer; callable directly.</summary>
    public void SweepExpired()
    {
        var nowTicks = _time.GetTimestamp();
        var now = _time.GetUtcNow();
        var ended = _events.Enabled ? new List<FlowEntry>() : null;
        _flows.RemoveExpired(nowTicks, ended);
        _events.EmitEnded(ended, now);
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

        var nowTicks = _time.GetTimestamp();
        if (header.QuotedKey is { } quoted && _flows.IsTracked(quoted, nowTicks))
        {
            // An ICMP error about a tracked connection (e.g. "packet too big" for path MTU discovery) belongs to it.
            return true;
        }

        var key = header.Key;
        FlowEvent? ended;
        FlowEvent? pending = null;
        List<FlowEntry>? evicted = null;
        bool allowed;
        using (var shard = _flows.Enter(key))
        {
            allowed = TryTrack(shard, key, header, direction, nowTicks, out ended)
                || Open(shard, key, header, direction, nowTicks, ref pending, ref evicted);
        }

        // Ends before the Start of what took their place: a reused 5-tuple's old flow ends before its new one starts.
        _events.Emit(ended);
        if (evicted is not null)
        {
            _events.EmitEnded(evicted, _time.GetUtcNow());
        }

        _events.Emit(pending);
        if (allowed && header.IsFirstFragment)
        {
            _fragmentTracker.AllowFirst(header.FragmentKey);
        }

        return allowed;
    }

    /// <summary>
    /// A packet of a connection already tracked (either direction): update state and counters. False when there is
    /// none (any more): <paramref name="ended"/> is then the End of a connection this packet's key had, found expired
    /// or closed and re-opened by this packet, which the caller emits whatever becomes of the packet.
    /// </summary>
    private bool TryTrack(in FlowTable.LockedShard shard, in FlowKey key, in PacketHeader header, RuleDirection direction, long nowTicks, out FlowEvent? ended)
    {
        ended = null;
        if (!shard.TryFind(key, direction, nowTicks, out var entry, out var isReply, out var expired))
        {
            if (expired is not null)
            {
                ended = _events.Ended(expired);
            }

            return false;
        }

        var isTcp = header.Protocol == IpProtocol.Tcp;
        if (isTcp && TcpStateTracker.ReopensClosed(entry.State, header.TcpFlags, isReply))
        {
            shard.Remove(entry);
            ended = _events.Ended(entry);
            return false;
        }

        entry.LastSeen = nowTicks;
        entry.Count(isReply, header.Length);
        if (isTcp)
        {
            (entry.State, entry.Fins) = TcpStateTracker.Next(entry.State, entry.Fins, header.TcpFlags, isReply);
        }
        else if (isReply)
        {
            entry.State = ConnectionState.Established;
        }

        return true;
    }

    /// <summary>
    /// The first packet of a connection: decide by the rules, then track it. Runs under the shard's lock. Flows it
    /// removes to make room (expired, or evicted under pressure) go to <paramref name="evicted"/> for their End events.
    /// </summary>
    private bool Open(in FlowTable.LockedShard shard, in FlowKey key, in PacketHeader header, RuleDirection direction, long nowTicks, ref FlowEvent? pending, ref List<FlowEntry>? evicted)
    {
        var isTcp = header.Protocol == IpProtocol.Tcp;
        var isOpeningSyn = isTcp && TcpStateTracker.IsOpeningSyn(header.TcpFlags);
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

            pending = _events.Dropped(header, direction, ruleId, nowTicks);
            return false;
        }

        // Only connection openers are tracked: ICMP errors and stray echo replies pass on the rules alone.
        var trackable = !header.IsIcmp || header.IsIcmpEchoRequest;
        if (!trackable || (isTcp && (header.TcpFlags & TcpFlags.Rst) != 0))
        {
            return true;
        }

        if (!shard.Admits(key, direction, nowTicks, _events.Enabled, ref evicted))
        {
            Interlocked.Increment(ref _tableFull);
            return false;
        }

        var entry = new FlowEntry(Guid.NewGuid(), key, direction, ruleId)
        {
            ResourceId = _events.NameOf(header.Destination),
            SourceResourceId = _events.NameOf(header.Source),
            IcmpType = header.IsIcmp ? header.IcmpType : (byte)0,
            IcmpCode = header.IsIcmp ? header.IcmpCode : (byte)0,
            LastSeen = nowTicks,
            OriginalPackets = 1,
            OriginalBytes = (ulong)header.Length,
            State = isTcp ? TcpStateTracker.Initial(header.TcpFlags) : ConnectionState.New,
        };
        if (shard.Add(entry) is { } replaced && _events.Enabled)
        {
            // The same key tracked the other way (a packet looped back through this peer): it ends here.
            (evicted ??= []).Add(replaced);
        }

        pending = _events.Started(entry);
        return true;
    }

    /// <summary>Whether <paramref name="compiled"/> would still open a tracked connection; re-points its rule ID if so.</summary>
    private bool StillAllowed(RuleSets compiled, FlowEntry entry)
    {
        var inbound = entry.Direction == RuleDirection.Inbound;
        var (action, ruleSet, ruleIndex) = Decide(compiled, entry.Direction, entry.Key.Protocol, inbound ? entry.Key.Source : entry.Key.Destination, inbound ? entry.Key.Destination : entry.Key.Source, entry.Key.DestinationPort);
        if (action == RuleAction.Drop)
        {
            return false;
        }

        entry.RuleId = ruleIndex >= 0 ? ruleSet!.Rules[ruleIndex].RuleId : null;
        return true;
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

    /// <summary>
    /// True when <paramref name="destination"/> is neither one of this peer's overlay addresses nor another address of
    /// this host (<see cref="UpdateHostAddresses"/>), and the overlay addresses are known.
    /// </summary>
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

        foreach (var host in Volatile.Read(ref _hostAddresses))
        {
            if (host == destination)
            {
                return false;
            }
        }

        return true;
    }

    private StrongBox<long> CounterFor(string ruleId) => _dropsByRule.GetOrAdd(ruleId, _ => new StrongBox<long>());

    private sealed record RuleSets(CompiledRuleSet Inbound, CompiledRuleSet Outbound, RoutedRuleSet Routed)
    {
        public CompiledRuleSet For(RuleDirection direction) => direction == RuleDirection.Inbound ? Inbound : Outbound;
    }
}
