using System.Text.Json;

namespace Modular.Agent.Tests;

/// <summary>`modular up`'s lazy-connection flags against the TOML key, as `status` reports them (what and from where).</summary>
public sealed class FeatureSourceTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    [Theory]
    [InlineData("true", "--lazy-connections off", false, "flag")]
    [InlineData("false", "--lazy-connections on", true, "flag")]
    [InlineData("false", "--enable-lazy-connection", true, "flag")]
    [InlineData("false", "", false, "config")]
    public void A_flag_overrides_the_toml_key_either_way_and_status_names_the_source(string toml, string flag, bool expected, string source)
    {
        _agent.StartDaemon(_agent.WriteConfig(extra: $"[features]\nlazy_connections = {toml}"), flag);

        var features = JsonDocument.Parse(AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output).RootElement.GetProperty("features");
        Assert.Equal(expected, features.GetProperty("lazy_connections").GetBoolean());
        Assert.Equal(source, features.GetProperty("lazy_connections_source").GetString());
        Assert.Matches($@"Lazy connections: +{(expected ? "on" : "off")}.*, source: {source}\n", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output);
    }

    [Fact]
    public void Contradicting_lazy_flags_are_a_usage_error()
    {
        var result = AgentHarness.Run($"up --config {_agent.WriteConfig()} --socket {_agent.SocketPath} --enable-lazy-connection --lazy-connections off");

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("contradict", result.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(_agent.SocketPath));
    }

    public void Dispose() => _agent.Dispose();
}
