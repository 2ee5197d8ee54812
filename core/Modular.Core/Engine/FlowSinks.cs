using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Core.Config;
using Modular.Core.Firewall;

namespace Modular.Core.Engine;

/// <summary>One flow sink of <c>[netflow] sinks</c>, by its plugin name.</summary>
internal readonly record struct NamedFlowSink(string Name, IFlowSink Sink);

/// <summary>
/// The sinks created for one run: <see cref="Sink"/> is the one a flow source reports to (the only sink, or a
/// <see cref="FlowSinkFanOut"/> of several), null when none could be created, and then <see cref="Problem"/> says why.
/// </summary>
internal sealed record FlowSinkSet(IFlowSink? Sink, IReadOnlyList<NamedFlowSink> Sinks, string? Problem)
{
    public static FlowSinkSet None(string problem) => new(null, [], problem);
}

/// <summary>
/// Creates the flow sinks <c>[netflow] sinks</c> names, for one run of the engine. Whether flow logging is on is the
/// caller's decision (<see cref="FlowSwitch"/>: the local key, else the account); any flow source (the userspace
/// firewall, a kernel one) reports to the <see cref="FlowSinkSet.Sink"/> this returns.
/// </summary>
internal static class FlowSinks
{
    /// <summary>
    /// The sinks of <c>[netflow] sinks</c>. A userspace interface's firewall tracks the flows itself; in kernel mode
    /// conntrack does (<see cref="Firewall.Nftables.KernelFlowSource"/>). The daemon checked the names at start; a name
    /// missing here (or a sink whose factory throws) is skipped with a warning and the agent runs without it.
    /// Cancelled: the sinks created so far are disposed.
    /// </summary>
    /// <param name="contextFor">The plugin context (its <c>[plugins.NAME]</c> section) for a sink's name.</param>
    public static async Task<FlowSinkSet> CreateAsync(
        AgentConfig config,
        IReadOnlyDictionary<string, IFlowSinkFactory> factories,
        Func<string, IPluginContext> contextFor,
        bool userspace,
        ILogger logger,
        CancellationToken cancellationToken)
    {
        var sinks = new List<NamedFlowSink>();
        var problems = new List<string>();
        try
        {
            foreach (var name in config.Netflow.Sinks)
            {
                if (!factories.TryGetValue(name, out var factory))
                {
                    var available = factories.Count == 0 ? "(none)" : string.Join(", ", factories.Keys.Order(StringComparer.Ordinal));
                    logger.LogWarning("[netflow] sinks: no flow-sink plugin named \"{Name}\" is loaded (available: {Available}); it gets no flows", name, available);
                    problems.Add($"no flow-sink plugin named \"{name}\" is loaded (available: {available})");
                    continue;
                }

                try
                {
                    sinks.Add(new(name, await factory.CreateAsync(contextFor(name), cancellationToken)));
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    logger.LogWarning("[netflow] sinks: the flow sink \"{Name}\" could not be created: {Problem}; it gets no flows", name, e.Message);
                    problems.Add($"the flow sink \"{name}\" could not be created: {e.Message}");
                }
            }
        }
        catch
        {
            foreach (var sink in sinks)
            {
                await sink.Sink.DisposeAsync();
            }

            throw;
        }

        if (sinks.Count == 0)
        {
            return FlowSinkSet.None(problems.Count > 0 ? string.Join("; ", problems) : "[netflow] sinks names no sink");
        }

        logger.LogInformation("Flow logging: the {Source}'s flow events go to {Sinks}",
            userspace ? "userspace firewall" : "kernel's conntrack", string.Join(", ", sinks.Select(s => s.Name)));
        return new FlowSinkSet(sinks.Count == 1 ? sinks[0].Sink : new FlowSinkFanOut(sinks.Select(s => s.Sink)), sinks, null);
    }
}
