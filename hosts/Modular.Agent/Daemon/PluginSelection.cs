using Modular.Abstractions.Flows;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Composition;
using Modular.Core.Config;

namespace Modular.Agent.Daemon;

/// <summary>
/// Checks that every plugin the config selects is loaded. A plugin that is present but failed
/// to load is reported with its own reason (not as "unknown"), at the key that selected it.
/// </summary>
internal static class PluginSelection
{
    /// <summary>Throws <see cref="ConfigException"/> naming file, line, column and key.</summary>
    public static void Validate(AgentConfig config, PluginCatalog catalog)
    {
        if (!string.Equals(config.Proxy.Kind, "auto", StringComparison.OrdinalIgnoreCase))
        {
            ThrowIfFailed(config, catalog, config.Proxy.Kind, "proxy.kind");
        }

        AgentConfigLoader.ValidatePluginNames(config, catalog.NamesOf<IProxyFactory>());
        RequireModeServed(config, catalog);

        if (config.Rosenpass.Enabled.Value == true)
        {
            // A present provider that failed says why; a missing one lists the available PSK providers.
            ThrowIfFailed(config, catalog, config.Rosenpass.Provider, config.Positions.ContainsKey("rosenpass.provider") ? "rosenpass.provider" : "rosenpass.enabled");
            AgentConfigLoader.ValidatePskProviderName(config, catalog.NamesOf<IPresharedKeyProviderFactory>());
        }

        if (config.Netflow.Enabled.Value == true)
        {
            // Each sink named: a present plugin that failed says why; a missing one lists the available sinks.
            foreach (var sink in config.Netflow.Sinks)
            {
                ThrowIfFailed(config, catalog, sink, config.Positions.ContainsKey("netflow.sinks") ? "netflow.sinks" : "netflow.enabled");
            }

            AgentConfigLoader.ValidateFlowSinkNames(config, catalog.NamesOf<IFlowSinkFactory>());
        }
    }

    /// <summary>
    /// An explicit proxy kind must be able to serve the configured interface mode (bind cannot serve kernel mode),
    /// asked through <see cref="IProxyFactory.CanServe"/> since no interface exists yet. "auto" picks per mode.
    /// </summary>
    private static void RequireModeServed(AgentConfig config, PluginCatalog catalog)
    {
        var kind = config.Proxy.Kind;
        if (string.Equals(kind, "auto", StringComparison.OrdinalIgnoreCase))
        {
            return;
        }

        var mode = config.Interface.Mode;
        var capability = catalog.Get<IProxyFactory>(kind).CanServe(mode);
        if (!capability.CanProxy)
        {
            var modeName = mode.ToString().ToLowerInvariant();
            throw At(config, "proxy.kind", $"the \"{kind}\" proxy cannot serve interface mode \"{modeName}\": {capability.Reason}");
        }
    }

    private static void ThrowIfFailed(AgentConfig config, PluginCatalog catalog, string name, string key)
    {
        var failed = catalog.Plugins.FirstOrDefault(p => !p.Loaded && string.Equals(p.Name, name, StringComparison.Ordinal));
        if (failed is not null)
        {
            throw At(config, key, $"plugin \"{name}\" ({failed.AssemblyPath}) failed to load: {failed.Error}");
        }
    }

    private static ConfigException At(AgentConfig config, string key, string problem)
    {
        var position = config.Positions.TryGetValue(key, out var p) ? p : default;
        return new ConfigException(config.SourcePath, position.Line, position.Column, key, problem);
    }
}
