using Microsoft.Extensions.Logging;
using Modular.Control.Management;
using Modular.Abstractions.WireGuard;
using Modular.Core.Firewall;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>
/// The agent's enforcement of management's access policies. In userspace mode a
/// <see cref="StatefulFirewall"/> is installed as the device's packet filter before the first map arrives
/// (so inbound traffic is dropped until rules allow it) and every network map's rules replace the rule set.
/// Kernel mode (and any interface without an in-process packet path) has no filter yet (nftables is not
/// wired): that is logged once and maps are ignored here.
/// </summary>
public sealed class EngineFirewall : IDisposable
{
    /// <summary>How often changed drop counters are logged (debug), so an operator can see what a policy blocks.</summary>
    public static readonly TimeSpan CounterLogInterval = TimeSpan.FromMinutes(1);

    private readonly StatefulFirewall? _firewall;
    private readonly ILogger _logger;
    private readonly ITimer? _counterTimer;
    private long _lastLoggedDrops;

    private EngineFirewall(StatefulFirewall? firewall, ILogger logger, TimeProvider time)
    {
        _firewall = firewall;
        _logger = logger;
        if (firewall is not null && logger.IsEnabled(LogLevel.Debug))
        {
            _counterTimer = time.CreateTimer(_ => LogCountersIfChanged(), null, CounterLogInterval, CounterLogInterval);
        }
    }

    /// <summary>The firewall in use; null in kernel mode.</summary>
    public StatefulFirewall? Firewall => _firewall;

    /// <summary>Creates the firewall for <paramref name="iface"/> and installs it as its packet filter (userspace only).</summary>
    public static EngineFirewall Attach(IWgIface iface, TimeProvider time, ILogger logger, FirewallOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(iface);
        if (iface is UserspaceWgIface userspace)
        {
            var firewall = new StatefulFirewall(options, time);
            userspace.PacketFilter = firewall;
            return new EngineFirewall(firewall, logger, time);
        }

        logger.LogWarning("Access policies are not enforced on {Interface} ({Mode} mode) yet: all mesh traffic is allowed", iface.Name, iface.Mode);
        return new EngineFirewall(null, logger, time);
    }

    /// <summary>Replaces the rule set with the rules of <paramref name="map"/>; unreadable rules are skipped with a warning.</summary>
    public void Apply(NetworkMap map)
    {
        ArgumentNullException.ThrowIfNull(map);
        if (_firewall is null)
        {
            return;
        }

        var mapped = _firewall.ApplyNetworkMap(map.FirewallRules);
        foreach (var reason in mapped.Rejected)
        {
            _logger.LogWarning("Network map {Serial}: skipped a firewall rule: {Reason}", map.Serial, reason);
        }

        _logger.LogInformation("Network map {Serial}: {Rules} firewall rules enforced", map.Serial, mapped.Rules.Count);
        LogCounters();
    }

    /// <summary>Services of this peer every peer may reach whatever the policies (see <see cref="StatefulFirewall.LocalServices"/>).</summary>
    public void SetLocalServices(IReadOnlyList<LocalService> services)
    {
        if (_firewall is not null)
        {
            _firewall.LocalServices = services;
        }
    }

    /// <summary>Logs the drop counters at debug level (per rule ID and per drop reason).</summary>
    public void LogCounters()
    {
        if (_firewall is null || !_logger.IsEnabled(LogLevel.Debug))
        {
            return;
        }

        var byRule = string.Join(", ", _firewall.DropsByRule.Select(pair => $"{pair.Key}={pair.Value}"));
        _logger.LogDebug(
            "Firewall drops: by rule [{ByRule}], default {Default}, invalid {Invalid}, malformed {Malformed}, fragments {Fragments}, table full {TableFull}; {Flows} active flows",
            byRule, _firewall.DefaultDrops, _firewall.InvalidDrops, _firewall.MalformedDrops, _firewall.FragmentDrops,
            _firewall.TableFullDrops, _firewall.ActiveFlows);
    }

    private void LogCountersIfChanged()
    {
        var firewall = _firewall!;
        var total = firewall.DropsByRule.Values.Sum() + firewall.DefaultDrops + firewall.InvalidDrops + firewall.MalformedDrops
            + firewall.FragmentDrops + firewall.TableFullDrops;
        if (Interlocked.Exchange(ref _lastLoggedDrops, total) != total)
        {
            LogCounters();
        }
    }

    public void Dispose()
    {
        _counterTimer?.Dispose();
        LogCounters();
        _firewall?.Dispose();
    }
}
