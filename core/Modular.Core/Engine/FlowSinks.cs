using Microsoft.Extensions.Logging;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Plugins;
using Modular.Core.Config;
using Modular.Core.Firewall;

namespace Modular.Core.Engine;

/// <summary>Creates the flow sinks <c>[netflow] sinks</c> names, for one run of the engine.</summary>
internal static class FlowSinks
{
    /// <summary>
    /// The sinks of <c>[netflow] sinks</c> (one, or several behind a <see cref="FlowSinkFanOut"/>) when flow logging is
    /// on locally (<c>netflow.enabled = true</c>); else null. A userspace interface's firewall tracks the flows itself;
    /// in kernel mode conntrack does (<see cref="Firewall.Nftables.KernelFlowSource"/>). The daemon checked the names at start; a name missing here (or a sink whose factory throws) is skipped
    /// with a warning and the agent runs without it. Only the agent's own key turns flows on here so far: the
    /// account's setting (the network map) is not applied yet. Cancelled: the sinks created so far are disposed.
    /// </summary>
    /// <param name="contextFor">The plugin context (its <c>[plugins.NAME]</c> section) for a sink's name.</param>
    public static async Task<IFlowSink?> CreateAsync(
        AgentConfig config,
        IReadOnlyDictionary<string, IFlowSinkFactory> factories,
        Func<string, IPluginContext> contextFor,
        bool userspace,
        ILogger logger,
        CancellationToken cancellationToken)
    {
        if (config.Netflow.Enabled.Value != true)
        {
            return null;
        }

        var sinks = new List<IFlowSink>();
        var names = new List<string>();
        try
        {
            foreach (var name in config.Netflow.Sinks)
            {
                if (!factories.TryGetValue(name, out var factory))
                {
                    var available = factories.Count == 0 ? "(none)" : string.Join(", ", factories.Keys.Order(StringComparer.Ordinal));
                    logger.LogWarning("[netflow] sinks: no flow-sink plugin named \"{Name}\" is loaded (available: {Available}); it gets no flows", name, available);
                    continue;
                }

                try
                {
                    sinks.Add(await factory.CreateAsync(contextFor(name), cancellationToken));
                    names.Add(name);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    logger.LogWarning("[netflow] sinks: the flow sink \"{Name}\" could not be created: {Problem}; it gets no flows", name, e.Message);
                }
            }
        }
        catch
        {
            foreach (var sink in sinks)
            {
                await sink.DisposeAsync();
            }

            throw;
        }

        if (sinks.Count == 0)
        {
            return null;
        }

        logger.LogInformation("Flow logging: the {Source}'s flow events go to {Sinks} (kept on this host: nothing ships them to the server yet)",
            userspace ? "userspace firewall" : "kernel's conntrack", string.Join(", ", names));
        return sinks.Count == 1 ? sinks[0] : new FlowSinkFanOut(sinks);
    }
}
