using System.Text.Json;
using Modular.Core.Config;

namespace Modular.Agent.Tests;

/// <summary>
/// The flow keys that left <see cref="NotBuiltYet"/> (they were "requested, not available" tests): written in the file,
/// `config check` accepts them without a warning, and a running daemon shows flow logging on, from the config, with the
/// built-in netflow sink running before any traffic (or any management login).
/// </summary>
public sealed class NetflowOnTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    public static TheoryData<string> Written => new()
    {
        "enabled = true",
        "enabled = true\ncollect_dns = true",
        "enabled = true\ncollect_exit_node = true",
        "enabled = true\n[plugins.netflow]\ncapacity = 100",
    };

    [Theory]
    [MemberData(nameof(Written))]
    public void A_flow_key_is_accepted_without_a_warning_and_flow_logging_shows_on_with_its_sink(string written)
    {
        var path = _agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir, extra: $"[netflow]\n{written}");

        var check = AgentHarness.Run($"config check {path}");
        Assert.True(check.ExitCode == 0, check.Error);
        Assert.DoesNotContain("warning:", check.Error, StringComparison.Ordinal);

        var daemon = _agent.StartDaemon(path);
        var output = AgentHarness.WaitForOutput(daemon, "Flow logging on (config)");
        Assert.Contains("Flow logging on (config)", output, StringComparison.Ordinal);
        Assert.DoesNotContain("accepted, but", output, StringComparison.Ordinal);

        var status = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        Assert.True(status.ExitCode == 0, status.Error);
        var root = JsonDocument.Parse(status.Output).RootElement;
        var features = root.GetProperty("features");
        Assert.True(features.GetProperty("netflow").GetBoolean(), status.Output);
        Assert.Equal("config", features.GetProperty("netflow_source").GetString());
        Assert.False(features.GetProperty("unavailable").TryGetProperty("netflow", out _), status.Output);
        var flows = root.GetProperty("flows");
        Assert.True(flows.GetProperty("running").GetBoolean());
        Assert.Equal("netflow", Assert.Single(flows.GetProperty("sinks").EnumerateArray()).GetProperty("name").GetString());

        var text = AgentHarness.Run($"status --socket {_agent.SocketPath}").Output;
        Assert.Matches(@"Flow logging: +on, to netflow", text);
        Assert.DoesNotMatch(@"Flow logging: +requested", text);
    }

    [Fact]
    public void Asked_for_with_the_firewall_off_the_daemon_runs_and_status_says_why()
    {
        // Flows come from the firewall's connection tracking. (A missing plugin is refused at start while the local key
        // asks for flows; at run time only the account can ask for it: FlowSwitchTests and the E2E AccountFeatureTests.)
        var path = _agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir, extra: "[firewall]\nenabled = false\n[netflow]\nenabled = true");
        var daemon = _agent.StartDaemon(path);
        Assert.Contains("not available", AgentHarness.WaitForOutput(daemon, "not available"), StringComparison.Ordinal);

        var root = JsonDocument.Parse(AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output).RootElement;
        var features = root.GetProperty("features");
        Assert.False(features.GetProperty("netflow").GetBoolean());
        Assert.Contains("connection tracking, which is off", features.GetProperty("unavailable").GetProperty("netflow").GetString(), StringComparison.Ordinal);
        Assert.False(root.GetProperty("flows").GetProperty("running").GetBoolean());
        Assert.Matches(@"Flow logging: +requested, not available: flows come from the firewall", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output);
    }

    public void Dispose() => _agent.Dispose();
}
