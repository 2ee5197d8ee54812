using Modular.Core.Config;

namespace Modular.Core.Tests.Dns;

/// <summary>The agent's [dns] section: defaults, values, and errors that name the key.</summary>
public sealed class DnsConfigTests
{
    private const string Base = "management_url = \"https://m.example\"\n";

    private static AgentConfig Parse(string toml) => AgentConfigLoader.Parse(Base + toml, "agent.toml", new Dictionary<string, string?>(), new AgentConfigOverrides());

    [Fact]
    public void The_resolver_is_on_port_53_by_default()
    {
        var config = Parse("");
        Assert.True(config.Dns.Enabled);
        Assert.Equal(53, config.Dns.ListenPort);
    }

    [Fact]
    public void The_section_turns_it_off_or_moves_it()
    {
        var config = Parse("[dns]\nenabled = false\nlisten_port = 5353\n");
        Assert.False(config.Dns.Enabled);
        Assert.Equal(5353, config.Dns.ListenPort);
    }

    [Theory]
    [InlineData("[dns]\nlisten_port = 0\n", "dns.listen_port")]
    [InlineData("[dns]\nlisten_port = 70000\n", "dns.listen_port")]
    [InlineData("[dns]\nenabled = \"yes\"\n", "dns.enabled")]
    [InlineData("[dns]\nconfigure_resolver = true\n", "dns.configure_resolver")]
    public void Bad_values_and_unknown_keys_name_the_key(string toml, string key)
    {
        var e = Assert.Throws<ConfigException>(() => Parse(toml));
        Assert.Equal(key, e.Key);
        Assert.Equal("agent.toml", e.File);
        Assert.True(e.Line > 1);
    }
}
