using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Firewall;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Status;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>
/// The agent's enforcement of management's access policies, the same rules in either interface mode:
/// <list type="bullet">
/// <item>userspace: a <see cref="StatefulFirewall"/> installed as the device's packet filter before the device
/// exists;</item>
/// <item>kernel (or any interface the kernel routes): an <see cref="NftablesEnforcer"/> whose table, with no rules
/// yet, is written before the interface is created.</item>
/// </list>
/// Either way inbound mesh traffic is dropped until a network map's rules allow it, and every map the engine
/// accepts replaces the rules. Counters reach <see cref="StatusRecorder"/> every <see cref="StatusInterval"/>
/// (status never waits on nft); changed drop counters are logged at debug at most every
/// <see cref="CounterLogInterval"/>. Disposing removes the nftables table.
/// </summary>
public sealed class EngineFirewall : IAsyncDisposable
{
    /// <summary>How often the counters in status are refreshed.</summary>
    public static readonly TimeSpan StatusInterval = TimeSpan.FromSeconds(3);

    /// <summary>How often changed drop counters are logged (debug), so an operator can see what a policy blocks.</summary>
    public static readonly TimeSpan CounterLogInterval = TimeSpan.FromMinutes(1);

    // Immutable after construction.
    // The local services, by owner (mesh DNS, the Rosenpass exchange); merged into the userspace firewall's list.
    private readonly object _localServicesLock = new();
    private IReadOnlyList<LocalService> _dnsServices = [];
    private IReadOnlyList<LocalService> _exchangeServices = [];
    private readonly StatefulFirewall? _firewall;
    private readonly NftablesEnforcer? _nftables;
    private readonly StatusRecorder? _recorder;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ITimer _statusTimer;
    private NetlinkConntrack? _ownedConntrack;

    // Set once by AttachAsync before the firewall is returned. Kernel mode with a flow sink: the emitter the kernel
    // source reports through (the userspace firewall has its own inside), and the source (disposed with the firewall).
    private FlowEventEmitter? _kernelEvents;
    private KernelFlowSource? _kernelFlows;
    private KernelFlowRules? _kernelFlowRules;

    // No locks. Written by ApplyAsync (the engine calls it with its apply gate held), read by status: Volatile.
    private int _userspaceRules;
    private HashSet<string> _userspaceDropRuleIds = [];

    // The status timer's counter log: Interlocked.
    private long _lastLoggedDrops;
    private long _lastLoggedAt;

    private EngineFirewall(StatefulFirewall? firewall, NftablesEnforcer? nftables, StatusRecorder? recorder, ILogger logger, TimeProvider time)
    {
        _firewall = firewall;
        _nftables = nftables;
        _recorder = recorder;
        _logger = logger;
        _time = time;
        _lastLoggedAt = time.GetTimestamp();
        _statusTimer = time.CreateTimer(_ => _ = RefreshStatusAsync(CancellationToken.None), null, StatusInterval, StatusInterval);
    }

    /// <summary>The userspace firewall; null in nftables mode.</summary>
    public StatefulFirewall? Firewall => _firewall;

    /// <summary>The nftables enforcer; null in userspace mode.</summary>
    public NftablesEnforcer? Nftables => _nftables;

    /// <summary>Where the kernel tables clear old conntrack generations (this firewall's and the routing peer's forward table); null: none.</summary>
    public IConntrack? Conntrack { get; private init; }

    /// <summary>Kernel mode with flow logging: conntrack reports the mesh's flows (routed ones too, marked by the route table).</summary>
    public bool ReportsKernelFlows => _kernelFlows is not null;

    /// <summary>With <see cref="ReportsKernelFlows"/>: the rule IDs behind the conntrack marks, where the route table records its own too.</summary>
    public KernelFlowRules? KernelFlowRules => _kernelFlows is not null ? _kernelFlowRules : null;

    /// <summary>"userspace" or "nftables".</summary>
    public string Mode => _firewall is not null ? FirewallStatus.UserspaceMode : FirewallStatus.NftablesMode;

    /// <summary>The mode and counters as last read.</summary>
    public FirewallStatus Status => _nftables?.Status ?? UserspaceStatus();

    /// <summary>
    /// Sets up enforcement for <paramref name="iface"/> before it is created: the packet filter of a userspace
    /// interface, else the nftables table (default drop, replacing a stale one of a crashed run). A table nft
    /// refuses is logged and shown in status; the agent goes on.
    /// <para>
    /// <paramref name="flowSink"/> receives the flow events (Start/End/Drop): the userspace firewall's, or in nftables
    /// mode a <see cref="KernelFlowSource"/>'s (conntrack events and the table's drop logs; only with the host's nft,
    /// as conntrack: a test's nft double gets no kernel source). Both report through a <see cref="FlowEventEmitter"/>
    /// (the same filters and names). The sink stays the caller's (the engine's <see cref="FlowSwitch"/> owns and
    /// closes the real sinks, after this firewall): the firewall never disposes it.
    /// </para>
    /// </summary>
    public static async Task<EngineFirewall> AttachAsync(
        IWgIface iface,
        TimeProvider time,
        ILogger logger,
        StatusRecorder? recorder = null,
        FirewallOptions? options = null,
        INftables? nftables = null,
        IConntrack? conntrack = null,
        IFlowSink? flowSink = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(iface);
        // The host's conntrack goes with the host's nft (the kernel tables, and the routing peer's forward table in
        // either mode); a test's nft double gets only the conntrack it passes.
        var owned = nftables is null && conntrack is null ? NetlinkConntrack.TryOpen(logger) : null;
        conntrack ??= owned;
        EngineFirewall attached;
        if (iface is UserspaceWgIface userspace)
        {
            var firewall = new StatefulFirewall(options, time, flowSink);
            userspace.PacketFilter = firewall;
            attached = new EngineFirewall(firewall, null, recorder, logger, time) { _ownedConntrack = owned, Conntrack = conntrack };
            attached.RefreshHostAddresses();
        }
        else
        {
            var flowRules = flowSink is not null && nftables is null ? new KernelFlowRules() : null;
            var kernelEvents = flowRules is not null ? new FlowEventEmitter(flowSink, time, (options ?? new FirewallOptions()).MaxDropEventsPerSecond) : null;
            var flowLog = flowRules is not null ? new NftablesFlowLog(NftablesFlowLog.DefaultGroup) : null;
            var enforcer = new NftablesEnforcer(iface.Name, iface.OverlayIp, options, nftables ?? HostNftables.Instance, logger, time, conntrack, flowLog, flowRules);
            attached = new EngineFirewall(null, enforcer, recorder, logger, time) { _ownedConntrack = owned, Conntrack = conntrack, _kernelEvents = kernelEvents, _kernelFlowRules = flowRules };
            try
            {
                await enforcer.ApplyAsync([], cancellationToken);
                // After the first table: it loaded conntrack, whose accounting switch the source turns on.
                attached._kernelFlows = flowRules is not null ? StartKernelFlows(kernelEvents!, flowRules, flowLog!, time, logger) : null;
            }
            catch (OperationCanceledException)
            {
                // Stopped while starting: the caller never gets this firewall, so remove the table here.
                await attached.DisposeAsync();
                throw;
            }
        }

        recorder?.SetFirewall(attached.Status);
        return attached;
    }

    /// <summary>The kernel's flow events, reported through <paramref name="events"/>, or null (logged) when ctnetlink cannot be read.</summary>
    private static KernelFlowSource? StartKernelFlows(FlowEventEmitter events, KernelFlowRules rules, NftablesFlowLog flowLog, TimeProvider time, ILogger logger)
    {
        try
        {
            var source = new KernelFlowSource(events, rules, flowLog.NflogGroup, logger, time);
            source.Start();
            logger.LogInformation("Flow logging: conntrack events of the mesh's connections and the policy's drop logs (NFLOG group {Group}) are recorded", flowLog.NflogGroup);
            return source;
        }
        catch (IOException e)
        {
            logger.LogWarning("Flow logging: conntrack events cannot be read ({Problem}): kernel mode records no flows", e.Message);
            return null;
        }
    }

    /// <summary>Enforces the rules of <paramref name="map"/> (done when this returns); unreadable rules are skipped with a warning.</summary>
    public async Task ApplyAsync(NetworkMap map, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(map);
        var mapped = FirewallRuleMapper.Map(map.FirewallRules);
        foreach (var reason in mapped.Rejected)
        {
            _logger.LogWarning("Network map {Serial}: skipped a firewall rule: {Reason}", map.Serial, reason);
        }

        // In kernel mode routed rules belong to the routes' nftables table (forwarded traffic) and the
        // enforcer takes the rest; the userspace firewall sees forwarded packets itself and takes them all.
        var own = mapped.Rules.Where(r => !r.IsRouted).ToList();
        if (_firewall is not null)
        {
            RefreshHostAddresses();
            _firewall.UpdatePeers(PeerDirectory.From(map));
            _firewall.UpdateRules(mapped.Rules);
            Volatile.Write(ref _userspaceRules, mapped.Rules.Count);
            Volatile.Write(ref _userspaceDropRuleIds, mapped.Rules.Where(r => r.Action == RuleAction.Drop).Select(r => r.RuleId).ToHashSet(StringComparer.Ordinal));
            _logger.LogInformation("Network map {Serial}: {Rules} firewall rules enforced ({Routed} for routed traffic)", map.Serial, mapped.Rules.Count, mapped.Rules.Count - own.Count);
        }
        else
        {
            _kernelEvents?.UpdateScope(scope => scope with { Peers = PeerDirectory.From(map) });
            // The enforcer logs the outcome (with nft's timing or its error).
            await _nftables!.ApplyAsync(own, cancellationToken);
        }

        _recorder?.SetFirewall(Status);
        LogCounters();
    }

    /// <summary>Reads the counters (nft, bounded; skipped while nft is busy) into status. Runs on a timer; never throws.</summary>
    public async Task RefreshStatusAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (_nftables is not null)
            {
                await _nftables.RefreshAsync(cancellationToken);
            }

            RefreshHostAddresses();

            var status = Status;
            _recorder?.SetFirewall(status);
            var total = status.TotalDrops;
            if (Interlocked.Read(ref _lastLoggedDrops) != total && _time.GetElapsedTime(Interlocked.Read(ref _lastLoggedAt)) >= CounterLogInterval)
            {
                LogCounters();
            }
        }
#pragma warning disable CA1031 // A timer callback: a failure to read counters must not take the agent down.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _logger.LogDebug("Refreshing firewall counters failed: {Problem}", e.Message);
        }
    }

    /// <summary>
    /// Userspace: tells the firewall this host's own addresses (they change: DHCP, docker0, a new LAN), so a route
    /// rule never opens the routing peer itself (see <see cref="StatefulFirewall.UpdateHostAddresses"/>). Runs at
    /// attach, at every map and with every status refresh; an unchanged list costs a comparison.
    /// </summary>
    public void RefreshHostAddresses()
    {
        if (_firewall is not null)
        {
            _firewall.UpdateHostAddresses(HostAddresses.Read());
        }
    }

    /// <summary>Services of this peer every peer may reach whatever the policies (see <see cref="StatefulFirewall.LocalServices"/>): mesh DNS's.</summary>
    public void SetLocalServices(IReadOnlyList<LocalService> services)
    {
        lock (_localServicesLock)
        {
            _dnsServices = services;
            PushLocalServices();
        }
    }

    /// <summary>
    /// The Rosenpass exchange's UDP port while a PSK provider runs (null: none), whether the local flag or the account
    /// turned it on: userspace admits it as a local service, kernel mode renders its accept into the table in force.
    /// </summary>
    public async Task SetExchangeServiceAsync(LocalService? exchange, CancellationToken cancellationToken)
    {
        if (_nftables is not null)
        {
            await _nftables.SetRosenpassPortAsync(exchange?.Port, cancellationToken);
            return;
        }

        lock (_localServicesLock)
        {
            _exchangeServices = exchange is { } service ? [service] : [];
            PushLocalServices();
        }
    }

    /// <summary>
    /// Names the network resources flows may go to or come from, and marks the exit nodes this peer uses
    /// (<c>collect_exit_node</c>): the userspace firewall's, or kernel mode's flow events'.
    /// </summary>
    public void UpdateResources(RoutedResources resources)
    {
        ArgumentNullException.ThrowIfNull(resources);
        _firewall?.UpdateResources(resources);
        _kernelEvents?.UpdateScope(scope => scope with { Resources = resources });
    }

    private void PushLocalServices()
    {
        if (_firewall is not null)
        {
            _firewall.LocalServices = [.. _dnsServices, .. _exchangeServices];
        }

        // Kernel mode: the nftables table renders its accepts itself; flow events only need the mesh resolver (collect_dns).
        LocalService[] resolver = [.. _dnsServices];
        _kernelEvents?.UpdateScope(scope => scope with { Resolver = resolver });
    }

    /// <summary>Logs the drop counters at debug level (per rule ID and per drop reason).</summary>
    public void LogCounters()
    {
        if (!_logger.IsEnabled(LogLevel.Debug))
        {
            return;
        }

        var status = Status;
        Interlocked.Exchange(ref _lastLoggedDrops, status.TotalDrops);
        Interlocked.Exchange(ref _lastLoggedAt, _time.GetTimestamp());
        var byRule = string.Join(", ", status.DropsByRule.Select(pair => $"{pair.Key}={pair.Value}"));
        _logger.LogDebug(
            "Firewall ({Mode}) drops: by rule [{ByRule}], default {Default}, invalid {Invalid}, malformed {Malformed}, fragments {Fragments}, table full {TableFull}; {Flows} active flows",
            status.Mode, byRule, status.DefaultDrops, Show(status.InvalidDrops), Show(status.MalformedDrops), Show(status.FragmentDrops),
            Show(status.TableFullDrops), Show(status.ActiveFlows));
    }

    public async ValueTask DisposeAsync()
    {
        await _statusTimer.DisposeAsync();
        LogCounters();
        _firewall?.Dispose();
        if (_kernelFlows is not null)
        {
            await _kernelFlows.DisposeAsync();
        }

        if (_nftables is not null)
        {
            await _nftables.DisposeAsync();
        }

        // The flow sink is not ours to close: the engine's FlowSwitch closes the real sinks after this firewall.
        _ownedConntrack?.Dispose();
    }

    private FirewallStatus UserspaceStatus()
    {
        var firewall = _firewall!;
        var dropRuleIds = Volatile.Read(ref _userspaceDropRuleIds);
        return new FirewallStatus(
            FirewallStatus.UserspaceMode,
            Volatile.Read(ref _userspaceRules),
            // As in nftables mode: drop rules in force, and any rule ID that ever dropped (the firewall counts per ID seen).
            firewall.DropsByRule.Where(pair => pair.Value > 0 || dropRuleIds.Contains(pair.Key)).ToImmutableSortedDictionary(StringComparer.Ordinal),
            firewall.DefaultDrops,
            firewall.InvalidDrops,
            firewall.MalformedDrops,
            firewall.FragmentDrops,
            firewall.TableFullDrops,
            firewall.ActiveFlows,
            null);
    }

    private static string Show<T>(T? value)
        where T : struct => value?.ToString() ?? "-";
}
