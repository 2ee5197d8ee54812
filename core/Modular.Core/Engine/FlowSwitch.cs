using Microsoft.Extensions.Logging;
using Modular.Abstractions.Config;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Control.Management;
using Modular.Core.Config;
using Modular.Core.Firewall;
using Modular.Core.Status;

namespace Modular.Core.Engine;

/// <summary>
/// Flow logging at run time, by DESIGN's rule for account features (<see cref="FeatureResolver"/>): the agent's
/// flag, environment or TOML key overrides the account's <c>[account.flows]</c> (from each network map) either way;
/// absent locally, the account decides. Likewise <c>collect_dns</c> and <c>collect_exit_node</c>, each on its own.
/// <para>
/// The firewall is built with <see cref="Sink"/> (a <see cref="SwitchableFlowSink"/>) whatever the setting; the
/// <c>[netflow] sinks</c> are created the first time flow logging is on (<see cref="FlowSinks"/>), stay for the
/// run when it is switched off again (nothing is reported then), and are disposed at stop. When they cannot be
/// created (plugin missing, the firewall off) the agent runs, warns once, and
/// <see cref="NotAvailable"/> says why for status.
/// </para>
/// <para>
/// Locks: <see cref="_applying"/> serialises <see cref="ApplyAsync"/> and <see cref="DisposeAsync"/> (engine start,
/// the map applier's gate, stop); the fields status reads are volatile.
/// </para>
/// </summary>
internal sealed class FlowSwitch : IAsyncDisposable
{
    // Immutable after construction.
    private readonly AgentConfig _config;
    private readonly IReadOnlyDictionary<string, IFlowSinkFactory> _factories;
    private readonly Func<string, IPluginContext> _contextFor;
    private readonly bool _userspace;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _applying = new(1, 1);

    // Written under _applying: the sinks of this run once tried (null before; volatile, status reads it), and whether
    // it was on last time.
    private volatile FlowSinkSet? _created;
    private bool? _wasOn;
    private bool _disposed;

    // Read by status without a lock.
    private volatile IReadOnlyDictionary<string, string> _notAvailable = NoReasons;

    /// <param name="userspace">Whether the interface is userspace (its firewall reports flows; in kernel mode conntrack does).</param>
    public FlowSwitch(AgentConfig config, IReadOnlyDictionary<string, IFlowSinkFactory> factories, Func<string, IPluginContext> contextFor, bool userspace, ILogger logger)
    {
        _config = config;
        _factories = factories;
        _contextFor = contextFor;
        _userspace = userspace;
        _logger = logger;
    }

    private static readonly IReadOnlyDictionary<string, string> NoReasons = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>What the firewall is built with: it reports to the sinks while flow logging is on.</summary>
    public SwitchableFlowSink Sink { get; } = new();

    /// <summary>
    /// "netflow" and why, while flow logging is asked for but no sink takes its events; else empty. For
    /// <see cref="FeatureStatusBuilder.Build"/>.
    /// </summary>
    public IReadOnlyDictionary<string, string> NotAvailable => _notAvailable;

    /// <summary>
    /// Resolves flow logging for <paramref name="map"/> (null: before the first map, only the local setting counts),
    /// creates the sinks the first time it is on, and switches the firewall's reporting.
    /// </summary>
    public async Task ApplyAsync(NetworkMap? map, CancellationToken cancellationToken)
    {
        var flows = map?.Settings is { } settings ? settings.Flows ?? new FlowSettings() : null;
        var decision = FeatureResolver.Resolve(_config.Netflow.Enabled, null, flows?.Enabled);
        await _applying.WaitAsync(cancellationToken);
        try
        {
            if (_disposed)
            {
                return;
            }

            if (!decision.Enabled)
            {
                Sink.Collection = FlowCollection.Off;
                _notAvailable = NoReasons;
                if (_wasOn == true)
                {
                    _logger.LogInformation("Flow logging off ({Source})", decision.Source);
                }

                _wasOn = false;
                return;
            }

            if (_created is null)
            {
                _created = _config.Firewall.Enabled
                    ? await FlowSinks.CreateAsync(_config, _factories, _contextFor, _userspace, _logger, cancellationToken)
                    : FlowSinkSet.None("flows come from the firewall's connection tracking, which is off ([firewall] enabled = false)");
                Sink.Target = _created.Sink;
                if (_created.Problem is { } problem && _created.Sink is null)
                {
                    // Said once per run: the sinks are not tried again (the plugins loaded at start do not change).
                    _logger.LogWarning("Flow logging is on ({Source}), but not available: {Problem}; the agent runs without it", decision.Source, problem);
                }
            }

            if (_created.Sink is null)
            {
                Sink.Collection = FlowCollection.Off;
                _notAvailable = new Dictionary<string, string>(StringComparer.Ordinal) { ["netflow"] = _created.Problem ?? "no flow sink" };
                _wasOn = false;
                return;
            }

            var collection = new FlowCollection(
                true,
                Pick("netflow.collect_dns", _config.Netflow.CollectDns, flows?.CollectDns),
                Pick("netflow.collect_exit_node", _config.Netflow.CollectExitNode, flows?.CollectExitNode));
            if (_wasOn != true || collection != Sink.Collection)
            {
                _logger.LogInformation("Flow logging on ({Source}): DNS flows {Dns}, exit-node flows {Exit}", decision.Source,
                    collection.CollectDns ? "collected" : "left out", collection.CollectExitNode ? "collected" : "left out");
            }

            Sink.Collection = collection;
            _notAvailable = NoReasons;
            _wasOn = true;
        }
        finally
        {
            _applying.Release();
        }
    }

    /// <summary>The sinks and their counters now (cheap: status refreshes it every second).</summary>
    public FlowStatus Status()
    {
        var created = _created;
        if (created is null || created.Sinks.Count == 0)
        {
            return FlowStatus.Off;
        }

        return new FlowStatus(
            Sink.Active,
            [.. created.Sinks.Select(s => new FlowSinkStatus(s.Name, s.Sink is IFlowSinkStatus counted ? counted.Counters : null))]);
    }

    /// <summary>Stops reporting and disposes the sinks (after the firewall, which no longer calls them).</summary>
    public async ValueTask DisposeAsync()
    {
        await _applying.WaitAsync(CancellationToken.None);
        try
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            Sink.Collection = FlowCollection.Off;
            Sink.Target = null;
            if (_created?.Sink is { } sink)
            {
                try
                {
                    await sink.DisposeAsync();
                }
#pragma warning disable CA1031 // A plugin's failure to close must not stop the rest of the engine from closing.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    _logger.LogWarning("Closing the flow sinks failed: {Problem}", e.Message);
                }
            }
        }
        finally
        {
            _applying.Release();
        }
    }

    /// <summary>The local key when written in the file, else the account's value, else the file's default.</summary>
    private bool Pick(string key, bool local, bool? account)
        => _config.Positions.ContainsKey(key) ? local : account ?? local;
}
