using System.Text.Json;
using System.Text.RegularExpressions;
using Modular.Core.Config;

namespace Modular.Agent.Tests;

/// <summary>
/// Every key of <see cref="NotBuiltYet.Keys"/>, one case each (a row deleted when its feature is built takes its case
/// with it): `config check` and `up` warn with file:line:col and exit as before, and `status` lists the feature as
/// unavailable, never as on.
/// </summary>
public sealed class NotBuiltYetTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    // A fact over the rows, not a theory: the table is empty now (Rosenpass left with issue 15), and a theory without
    // data fails. It checks each row again once one is added.
    [Fact]
    public void An_accepted_key_that_is_not_built_warns_and_shows_as_unavailable_not_on()
    {
        foreach (var row in NotBuiltYet.Keys)
        {
            using var agent = new AgentHarness();
            Warns(agent, row);
        }
    }

    [Fact]
    public void Rosenpass_keys_are_built_config_check_accepts_them_without_a_warning()
    {
        Assert.DoesNotContain(NotBuiltYet.Keys, row => row.Feature == "rosenpass");
        var path = _agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir, extra: "[rosenpass]\nenabled = true\npermissive = true");
        var check = AgentHarness.Run($"config check {path}");
        Assert.True(check.ExitCode == 0, check.Error);
        Assert.DoesNotContain("warning:", check.Error, StringComparison.Ordinal);
    }

    private static void Warns(AgentHarness agent, NotBuiltYet.Row row)
    {
        var dot = row.Key.LastIndexOf('.');
        var written = $"{row.Key[(dot + 1)..]} = {row.Example}";
        var path = agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir, extra: $"[{row.Key[..dot]}]\n{written}");
        var line = Array.IndexOf(File.ReadAllLines(path), written) + 1;
        var warning = $@"warning: {Regex.Escape(path)}:{line}:\d+: {Regex.Escape(row.Key)}: accepted, but {Regex.Escape(NotBuiltYet.Reasons[row.Feature])}{Regex.Escape(NotBuiltYet.Effect(row.Feature))}";

        var check = AgentHarness.Run($"config check {path}");
        Assert.True(check.ExitCode == 0, check.Error);
        Assert.Equal($"{path}: OK", check.Output.Trim());
        Assert.Matches(warning, check.Error);

        var daemon = agent.StartDaemon(path);
        Assert.Matches(warning, daemon.Output);
        var status = AgentHarness.Run($"status --json --socket {agent.SocketPath}");
        Assert.True(status.ExitCode == 0, status.Error);
        var features = JsonDocument.Parse(status.Output).RootElement.GetProperty("features");
        Assert.Equal(NotBuiltYet.Reasons[row.Feature], features.GetProperty("unavailable").GetProperty(row.Feature).GetString());
        if (features.TryGetProperty(row.Feature, out var inEffect))
        {
            Assert.False(inEffect.GetBoolean(), $"features.{row.Feature} is shown on although it is not built");
        }

        var text = AgentHarness.Run($"status --socket {agent.SocketPath}").Output;
        Assert.Contains($"requested, not available: {NotBuiltYet.Reasons[row.Feature]}", text, StringComparison.Ordinal);
        Assert.DoesNotMatch(@"(Flow logging|Quantum resistance): +on", text);
    }

    [Fact]
    public void Metrics_are_built_the_default_address_draws_no_warning_and_nothing_is_unavailable()
    {
        Assert.DoesNotContain(NotBuiltYet.Keys, row => row.Feature == "metrics");
        var path = _agent.WriteConfig(metrics: "127.0.0.1:9090");
        var check = AgentHarness.Run($"config check {path}");
        Assert.True(check.ExitCode == 0, check.Error);
        Assert.DoesNotContain("warning:", check.Error, StringComparison.Ordinal);

        // Turned off: nothing listens, nothing is asked for, so nothing is unavailable either.
        _agent.StartDaemon(_agent.WriteConfig(fileName: "no-metrics.toml"));
        var status = JsonDocument.Parse(AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output).RootElement;
        Assert.Empty(status.GetProperty("features").GetProperty("unavailable").EnumerateObject());
        Assert.Equal("default", status.GetProperty("features").GetProperty("lazy_connections_source").GetString());
        Assert.False(status.GetProperty("metrics").GetProperty("serving").GetBoolean());
        Assert.Equal("", status.GetProperty("metrics").GetProperty("listen").GetString());
    }

    [Fact]
    public void Every_unavailable_feature_has_a_key_in_the_table()
        => Assert.Equal(NotBuiltYet.Reasons.Keys, NotBuiltYet.Keys.Select(r => r.Feature).Distinct().Order(StringComparer.Ordinal));

    public void Dispose() => _agent.Dispose();
}
