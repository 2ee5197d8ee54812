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

    [Fact]
    public void The_bind_proxy_with_kernel_mode_is_refused_at_proxy_kind()
    {
        using var catalog = PluginCatalog.Load(AgentHarness.BuiltInPluginsDir, NullLogger.Instance);
        var config = Parse("[interface]\nmode = \"kernel\"\n\n[proxy]\nkind = \"bind\"\n");

        var ex = Assert.Throws<ConfigException>(() => PluginSelection.Validate(config, catalog));

        Assert.Equal("proxy.kind", ex.Key);
        Assert.Equal(6, ex.Line);
        Assert.Equal(8, ex.Column); // the value, as every config error cites it
        Assert.StartsWith("the \"bind\" proxy cannot serve interface mode \"kernel\": ", ex.Problem, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("userspace", "bind")]
    [InlineData("userspace", "udp")]
    [InlineData("kernel", "udp")]
    [InlineData("kernel", "auto")]
    [InlineData("userspace", "auto")]
    public void A_kind_that_serves_the_mode_passes(string mode, string kind)
    {
        using var catalog = PluginCatalog.Load(AgentHarness.BuiltInPluginsDir, NullLogger.Instance);

        PluginSelection.Validate(Parse($"[interface]\nmode = \"{mode}\"\n\n[proxy]\nkind = \"{kind}\"\n"), catalog);
    }
}
