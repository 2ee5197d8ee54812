using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.WireGuard.Kernel;

namespace Modular.Core.Firewall.Nftables;

/// <summary>
/// Maps what the kernel reports back to policy rule IDs, for every table generation still in conntrack: a
/// connection's mark carries the generation of the table that accepted it and the accept rule's index in that table
/// (<see cref="ConntrackMarks"/>), a logged drop's prefix the generation and the drop counter. The enforcer records
/// each table it puts in force; a generation's entry is replaced when its number comes round again (the enforcer has
/// cleared it from conntrack by then). Thread-safe: the enforcer writes, the flow readers read.
/// </summary>
public sealed class KernelFlowRules
{
    private readonly Lock _lock = new();
    // Only the names, not the policies: a table's script can be hundreds of KiB, and 127 generations are kept.
    private readonly Dictionary<int, (IReadOnlyList<string> Accepts, IReadOnlyDictionary<string, string> Drops)> _byGeneration = [];
    // The routing peer's forward table has generations of its own (the mark's forwarded bit tells them apart).
    private readonly Dictionary<int, IReadOnlyList<string>> _forwardedByGeneration = [];

    /// <summary>The table of <paramref name="generation"/> is in force.</summary>
    public void Record(int generation, NftablesPolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        lock (_lock)
        {
            _byGeneration[generation] = (policy.AcceptRuleIds ?? [], policy.DropRuleIdByCounter);
        }
    }

    /// <summary>
    /// The routing peer's forward table of <paramref name="generation"/> is in force, its accept rules stamped as
    /// <see cref="Routing.ForwardingTable.AcceptRuleIds"/> lists them.
    /// </summary>
    public void RecordForwarded(int generation, IReadOnlyList<string> acceptRuleIds)
    {
        ArgumentNullException.ThrowIfNull(acceptRuleIds);
        lock (_lock)
        {
            _forwardedByGeneration[generation] = acceptRuleIds;
        }
    }

    /// <summary>
    /// The accept rule that let in the connection of <paramref name="mark"/> (the policy table's, or the forward
    /// table's for a routed connection); null for none (default accept, mesh DNS) or unknown.
    /// </summary>
    public string? AcceptRuleId(uint mark)
    {
        var generation = (int)((mark & ConntrackMarks.GenerationMask) >> ConntrackMarks.GenerationShift);
        var index = (int)(mark & ConntrackMarks.RuleIndexMask);
        if (generation == 0 || index == 0)
        {
            return null;
        }

        lock (_lock)
        {
            if ((mark & ConntrackMarks.ForwardedBit) != 0)
            {
                return _forwardedByGeneration.TryGetValue(generation, out var forwarded) && index <= forwarded.Count ? forwarded[index - 1] : null;
            }

            return _byGeneration.TryGetValue(generation, out var names) && index <= names.Accepts.Count ? names.Accepts[index - 1] : null;
        }
    }

    /// <summary>
    /// Reads a drop log's prefix (<see cref="NftablesFlowLog.Prefix"/>): false when it is not one of this agent's;
    /// else the drop rule's ID, null for the default drop (or a table no longer known).
    /// </summary>
    public bool TryDropRuleId(string prefix, out string? ruleId)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        ruleId = null;
        if (!prefix.StartsWith(NftablesFlowLog.PrefixStart, StringComparison.Ordinal))
        {
            return false;
        }

        var parts = prefix[NftablesFlowLog.PrefixStart.Length..].Split(' ');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var generation))
        {
            return false;
        }

        if (parts[1] == NftablesRenderer.DefaultDropCounter)
        {
            return true;
        }

        lock (_lock)
        {
            ruleId = _byGeneration.TryGetValue(generation, out var names) ? names.Drops.GetValueOrDefault(parts[1]) : null;
        }

        return true;
    }
}

/// <summary>
/// Kernel mode's flow events: conntrack's own events and counters over ctnetlink, and the policy table's drop logs
/// over NFLOG, turned into the <see cref="FlowEvent"/>s the userspace firewall gives and reported through a
/// <see cref="FlowEventEmitter"/> as the userspace firewall's are (<see cref="FlowEventEmitter.Report"/>): the same
/// on/off switch, <c>collect_dns</c> and <c>collect_exit_node</c> filters, and peer and resource IDs.
/// <list type="bullet">
/// <item>Start/End: a ctnetlink socket subscribed to NFNLGRP_CONNTRACK_NEW and _DESTROY. Only connections the policy
/// table marked as this peer's mesh flows (<see cref="ConntrackMarks.FlowBit"/>) are reported: a classic BPF socket
/// filter (<see cref="KernelFlowMessages.MarkFilter"/>) keeps the host's other connections in the kernel, and the
/// mark is checked again here. Direction from <see cref="ConntrackMarks.EgressBit"/>, the rule from the mark's
/// rule index (<see cref="KernelFlowRules"/>), packets and bytes each way from the entry's counters, which need
/// <c>net.netfilter.nf_conntrack_acct = 1</c>: set while collecting (as it was before restored at stop). A
/// connection that was set up before the source started, or before acct was on, ends with the counters conntrack has.</item>
/// <item>Drop: an NFLOG socket bound to the table's group; each drop rule logs (rate-limited in the rule) with a prefix
/// naming the rule (<see cref="NftablesFlowLog"/>).</item>
/// </list>
/// Both sockets and the sysctl are opened in the constructor, so in the network namespace of the thread that creates
/// it; each is read by a thread of its own. Events the kernel dropped because a reader fell behind are counted.
/// </summary>
public sealed class KernelFlowSource : IAsyncDisposable
{
    /// <summary>Where conntrack's accounting switch lives (per network namespace).</summary>
    public const string AcctSysctlPath = "/proc/sys/net/netfilter/nf_conntrack_acct";

    /// <summary>Flows whose Start was seen and whose End is awaited, at most (beyond that an End gets a flow ID of its own).</summary>
    public const int MaxOpenFlows = 65_536;

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);
    private const int ReceiveBufferBytes = 4 << 20;

    // Immutable after construction.
    private readonly FlowEventEmitter _emitter;
    private readonly ILogger _logger;
    private readonly GenericNetlinkSocket _conntrack;
    private readonly GenericNetlinkSocket? _nflog;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle? _acct;

    private readonly KernelFlowEvents _events;

    // Set by Start / DisposeAsync.
    private readonly List<Thread> _readers = [];
    private volatile bool _stopping;
    private string? _acctBefore;

    // Interlocked.
    private long _lostEvents;

    /// <summary>Opens the sockets and the sysctl in the caller's network namespace; nothing is read until <see cref="Start"/>.</summary>
    /// <exception cref="IOException">The ctnetlink socket could not be opened or subscribed (no flow events at all).</exception>
    /// <param name="emitter">Filters, names and hands the events to the sink (the engine's, shared with nothing else in kernel mode).</param>
    internal KernelFlowSource(FlowEventEmitter emitter, KernelFlowRules rules, ushort nflogGroup, ILogger logger, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(emitter);
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(logger);
        _emitter = emitter;
        _logger = logger;
        _events = new KernelFlowEvents(rules, time ?? TimeProvider.System);
        _conntrack = new GenericNetlinkSocket(GenericNetlinkSocket.NetlinkNetfilter);
        try
        {
            _conntrack.ConfigureReader(PollInterval, ReceiveBufferBytes);
            _conntrack.AttachFilter(KernelFlowMessages.MarkFilter(ConntrackMarks.FlowBit));
            _conntrack.Subscribe(KernelFlowMessages.GroupConntrackNew);
            _conntrack.Subscribe(KernelFlowMessages.GroupConntrackDestroy);
        }
        catch
        {
            _conntrack.Dispose();
            throw;
        }

        _nflog = OpenNflog(nflogGroup, logger);
        try
        {
            _acct = File.OpenHandle(AcctSysctlPath, FileMode.Open, FileAccess.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            logger.LogWarning("Flow logging: {Path} cannot be changed ({Problem}): flows are reported without packet and byte counters unless it is 1", AcctSysctlPath, e.Message);
        }
    }

    /// <summary>Events the kernel could not queue for a reader that fell behind (ENOBUFS).</summary>
    public long LostEvents => Interlocked.Read(ref _lostEvents);

    /// <summary>Events the sink threw on (counted by the emitter).</summary>
    public long SinkFailures => _emitter.SinkFailures;

    /// <summary>Conntrack events of other connections that got past the kernel's filter (read by the reader thread; for tests).</summary>
    internal long UnmarkedEvents => _events.UnmarkedEvents;

    /// <summary>Turns conntrack accounting on (noting what it was) and starts reading.</summary>
    public void Start()
    {
        if (_acct is not null)
        {
            try
            {
                var before = ReadAcct();
                if (before != "1")
                {
                    WriteAcct("1");
                    _acctBefore = before;
                }
            }
            catch (IOException e)
            {
                _logger.LogWarning("Flow logging: could not turn on {Path} ({Problem}): flows are reported without counters", AcctSysctlPath, e.Message);
            }
        }

        StartReader("conntrack flows", () => Read(_conntrack, OnConntrack));
        if (_nflog is not null)
        {
            StartReader("nflog drops", () => Read(_nflog, OnNflog));
        }
    }

    /// <summary>Stops reading, closes the sockets and puts nf_conntrack_acct back as it was. The sink stays the caller's.</summary>
    public async ValueTask DisposeAsync()
    {
        _stopping = true;
        foreach (var reader in _readers)
        {
            await Task.Run(() => reader.Join());
        }

        _conntrack.Dispose();
        _nflog?.Dispose();
        if (_acct is not null)
        {
            if (_acctBefore is { } before)
            {
                try
                {
                    WriteAcct(before);
                }
                catch (IOException e)
                {
                    _logger.LogWarning("Flow logging: could not put {Path} back to {Value} ({Problem})", AcctSysctlPath, before, e.Message);
                }
            }

            _acct.Dispose();
        }
    }

    private static GenericNetlinkSocket? OpenNflog(ushort group, ILogger logger)
    {
        GenericNetlinkSocket? socket = null;
        try
        {
            socket = new GenericNetlinkSocket(GenericNetlinkSocket.NetlinkNetfilter);
            socket.ConfigureReader(PollInterval, ReceiveBufferBytes);
            socket.Request(KernelFlowMessages.NflogBind(group, socket.NextSequence()), static (_, _) => { });
            return socket;
        }
        catch (IOException e)
        {
            // EBUSY: another program reads this group (see [netflow] nflog_group).
            socket?.Dispose();
            logger.LogWarning("Flow logging: NFLOG group {Group} cannot be read ({Problem}): drops are counted but give no flow events", group, e.Message);
            return null;
        }
    }

    private void StartReader(string name, ThreadStart loop)
    {
        var thread = new Thread(loop) { IsBackground = true, Name = name };
        _readers.Add(thread);
        thread.Start();
    }

    private void Read(GenericNetlinkSocket socket, Action<byte[], int> handle)
    {
        var buffer = new byte[1 << 16];
        while (!_stopping)
        {
            int received;
            try
            {
                received = socket.Receive(buffer);
            }
            catch (IOException e)
            {
                _logger.LogWarning("Flow logging: reading netlink failed ({Problem}); flow events stop", e.Message);
                return;
            }

            if (received < 0)
            {
                Interlocked.Increment(ref _lostEvents);
            }
            else if (received > 0)
            {
                handle(buffer, received);
            }
        }
    }

    private void OnConntrack(byte[] buffer, int length)
    {
        foreach (var entry in KernelFlowMessages.ParseConntrack(buffer.AsSpan(0, length)))
        {
            Emit(_events.ToFlowEvent(entry));
        }
    }

    private void OnNflog(byte[] buffer, int length)
    {
        foreach (var packet in KernelFlowMessages.ParseNflog(buffer.AsSpan(0, length)))
        {
            Emit(_events.ToFlowEvent(packet));
        }
    }

    private void Emit(FlowEvent? flowEvent)
    {
        if (flowEvent is not null)
        {
            _emitter.Emit(_emitter.Report(flowEvent));
        }
    }

    private string ReadAcct()
    {
        var bytes = new byte[16];
        var read = RandomAccess.Read(_acct!, bytes, 0);
        return System.Text.Encoding.ASCII.GetString(bytes, 0, read).Trim();
    }

    private void WriteAcct(string value) => RandomAccess.Write(_acct!, System.Text.Encoding.ASCII.GetBytes(value + "\n"), 0);
}

/// <summary>
/// Turns ctnetlink events and NFLOG packets into <see cref="FlowEvent"/>s as the userspace firewall builds them: rx is
/// what came in from the overlay, a flow's End carries its Start's flow ID. Not thread-safe: one per reader (the
/// conntrack reader keeps the open flows).
/// </summary>
internal sealed class KernelFlowEvents(KernelFlowRules rules, TimeProvider time)
{
    private readonly KernelFlowRules _rules = rules;
    private readonly TimeProvider _time = time;
    private readonly Dictionary<FlowIdentity, Guid> _open = [];

    /// <summary>Flows started and not ended yet (bounded by <see cref="KernelFlowSource.MaxOpenFlows"/>).</summary>
    public int OpenFlows => _open.Count;

    /// <summary>Conntrack events that reached user space without the flow bit (the kernel filter should leave none).</summary>
    public long UnmarkedEvents { get; private set; }

    /// <summary>The event for one ctnetlink event, or null when it is not one of this peer's mesh flows.</summary>
    internal FlowEvent? ToFlowEvent(ConntrackEvent entry)
    {
        if ((entry.Mark & ConntrackMarks.FlowBit) == 0)
        {
            // The socket's filter keeps these in the kernel; counted, so a test can tell that it does.
            UnmarkedEvents++;
            return null;
        }

        var identity = new FlowIdentity(entry.Id, entry.Protocol, entry.Source, entry.Destination, entry.SourcePort, entry.DestinationPort);
        Guid flowId;
        if (entry.Destroyed)
        {
            flowId = _open.Remove(identity, out var started) ? started : Guid.NewGuid();
        }
        else
        {
            flowId = Guid.NewGuid();
            if (_open.Count < KernelFlowSource.MaxOpenFlows)
            {
                _open[identity] = flowId;
            }
        }

        var egress = (entry.Mark & ConntrackMarks.EgressBit) != 0;
        var icmp = entry.Protocol is IpProtocol.Icmp or IpProtocol.IcmpV6;
        return new FlowEvent(
            Guid.NewGuid(),
            flowId,
            _time.GetUtcNow(),
            entry.Destroyed ? FlowEventType.End : FlowEventType.Start,
            egress ? FlowDirection.Egress : FlowDirection.Ingress,
            entry.Protocol,
            entry.Source,
            icmp ? (ushort)0 : entry.SourcePort,
            entry.Destination,
            icmp ? (ushort)0 : entry.DestinationPort,
            icmp ? entry.IcmpType : (byte)0,
            icmp ? entry.IcmpCode : (byte)0,
            // As in userspace: rx is what came in from the overlay (the opener's direction when the remote opened it).
            egress ? entry.ReplyPackets : entry.OriginalPackets,
            egress ? entry.ReplyBytes : entry.OriginalBytes,
            egress ? entry.OriginalPackets : entry.ReplyPackets,
            egress ? entry.OriginalBytes : entry.ReplyBytes,
            _rules.AcceptRuleId(entry.Mark),
            // Named (peer, resource) by the emitter's Report, with the userspace firewall's scope.
            null,
            null);
    }

    /// <summary>The Drop event for one logged packet, or null when the prefix is not this agent's.</summary>
    internal FlowEvent? ToFlowEvent(NflogPacket packet)
    {
        if (!_rules.TryDropRuleId(packet.Prefix, out var ruleId))
        {
            return null;
        }

        // Named (peer, resource) by the emitter's Report, as every kernel event is.
        return FlowEvents.Drop(packet.Header, packet.Inbound, ruleId, _time.GetUtcNow(), null, null);
    }

    private readonly record struct FlowIdentity(uint Id, byte Protocol, IPAddress Source, IPAddress Destination, ushort SourcePort, ushort DestinationPort);
}
