using Modular.Core.Config;

namespace Modular.Core.Engine;

/// <summary>The settings a flow-sink plugin gets: its <c>[plugins.NAME]</c> section, and for the built-in sink the agent's export address.</summary>
internal static class FlowSinkSettings
{
    /// <summary>The built-in sink (plugins/netflow), which stores, ships and exports.</summary>
    public const string BuiltInSink = "netflow";

    /// <summary>The key the built-in sink reads the IPFIX collector from.</summary>
    public const string IpfixCollectorKey = "ipfix_collector";

    /// <summary>
    /// <c>[plugins.NAME]</c>; for <see cref="BuiltInSink"/>, <c>ipfix_collector</c> is <c>[netflow] ipfix_collector</c>
    /// (the loader checked it is "host:port") or absent when that is empty, whatever <c>[plugins.netflow]</c> says: the
    /// collector is the agent's setting, but the built-in plugin is what exports, and plugins see only their own section.
    /// </summary>
    public static IReadOnlyDictionary<string, object?> For(AgentConfig config, string sinkName)
    {
        var settings = config.SettingsFor(sinkName);
        var collector = config.Netflow.IpfixCollector;
        if (sinkName != BuiltInSink || (collector.Length == 0 && !settings.ContainsKey(IpfixCollectorKey)))
        {
            return settings;
        }

        var withCollector = new Dictionary<string, object?>(settings, StringComparer.Ordinal);
        if (collector.Length == 0)
        {
            withCollector.Remove(IpfixCollectorKey);
        }
        else
        {
            withCollector[IpfixCollectorKey] = collector;
        }

        return withCollector;
    }
}
