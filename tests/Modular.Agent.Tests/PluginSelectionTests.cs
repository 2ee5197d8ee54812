using Microsoft.Extensions.Logging.Abstractions;
using Modular.Agent.Daemon;
using Modular.Composition;
using Modular.Core.Config;

namespace Modular.Agent.Tests;

/// <summary>The daemon's start-up check of the plugins the config names, against the built-in plugins folder.</summary>
public sealed class PluginSelectionTests
{
    private static AgentConfig Parse(string toml)
        => AgentConfigLoader.Parse("management_url = \"https://m.example\"\n" + toml, "agent.toml", new Dictionary<string, string?>(), new AgentConfigOverrides());

    [Fact]
    public void An_unknown_flow_sink_fails_at_netflow_sinks_listing_the_loaded_ones()
    {
        using var catalog = PluginCatalog.Load(AgentHarness.BuiltInPluginsDir, NullLogger.Instance);
        var config = Parse("[netflow]\nenabled = true\nsinks = [\"netflow\", \"netflo\"]\n");

        var ex = Assert.Throws<ConfigException>(() => PluginSelection.Validate(config, catalog));

        Assert.Equal("netflow.sinks", ex.Key);
        Assert.Equal(4, ex.Line);
        Assert.Equal("unknown flow-sink plugin \"netflo\"; available: netflow; did you mean \"netflow\"?", ex.Problem);
    }

    [Fact]
    public void The_default_sink_passes_and_sinks_are_not_checked_while_flow_logging_is_off()
    {
        using var catalog = PluginCatalog.Load(AgentHarness.BuiltInPluginsDir, NullLogger.Instance);

        PluginSelection.Validate(Parse("[netflow]\nenabled = true\n"), catalog);
        PluginSelection.Validate(Parse("[netflow]\nsinks = [\"elsewhere\"]\n"), catalog);
    }
}
