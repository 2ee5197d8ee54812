using Modular.Core.Config;
using Modular.Core.Engine;

namespace Modular.Core.Tests.Engine;

/// <summary>What a flow-sink plugin's context carries: its own section, and for the built-in sink the IPFIX collector.</summary>
public sealed class FlowSinkSettingsTests
{
    private static AgentConfig Config(string collector) => new()
    {
        ManagementUrls = [new Uri("https://management.invalid")],
        Netflow = new NetflowConfig { Enabled = new LocalToggle(Config: true), IpfixCollector = collector, Sinks = ["netflow", "jsonlines"] },
        PluginSettings = new Dictionary<string, IReadOnlyDictionary<string, object?>>
        {
            ["netflow"] = new Dictionary<string, object?> { ["capacity"] = 5L, ["ipfix_collector"] = "old.example:1" },
            ["jsonlines"] = new Dictionary<string, object?> { ["path"] = "/tmp/flows.jsonl" },
        },
    };

    [Fact]
    public void The_builtin_sink_gets_the_agents_ipfix_collector_beside_its_own_section()
    {
        var settings = FlowSinkSettings.For(Config("collector.example:4739"), "netflow");

        Assert.Equal(5L, settings["capacity"]);
        Assert.Equal("collector.example:4739", settings["ipfix_collector"]); // [netflow] wins over [plugins.netflow]
    }

    [Fact]
    public void Without_an_agent_collector_the_builtin_sink_exports_nowhere_whatever_its_section_says()
    {
        var settings = FlowSinkSettings.For(Config(""), "netflow");

        Assert.Equal(5L, settings["capacity"]);
        Assert.False(settings.ContainsKey("ipfix_collector"));
    }

    [Fact]
    public void Other_sinks_get_their_section_as_written()
    {
        var config = Config("collector.example:4739");
        Assert.Same(config.PluginSettings["jsonlines"], FlowSinkSettings.For(config, "jsonlines"));
        Assert.Empty(FlowSinkSettings.For(config, "absent"));
    }
}
