using System.Text.Json;
using System.Text.RegularExpressions;
using Modular.Agent.Cli;
using Modular.Core.Status;

namespace Modular.Agent.Tests;

/// <summary>
/// Nothing pretends: `status` shows Rosenpass on only while a PSK provider is in effect. Before the first network map
/// (its provider starts with the map) it is pending; without its provider plugin it is requested but not available,
/// with why; the daemon says so from its start.
/// </summary>
public sealed class RosenpassStatusTests : IDisposable
{
    private static readonly DateTimeOffset Now = new(2026, 12, 7, 12, 0, 0, TimeSpan.Zero);
    private readonly AgentHarness _agent = new();

    [Fact]
    public void The_quantum_resistance_line_says_on_only_in_effect_and_otherwise_what_is_true()
    {
        Assert.Matches(@"Quantum resistance: +on \(permissive\)\n", Line(Features(rosenpass: true, permissive: true)));
        Assert.Matches(@"Quantum resistance: +on\n", Line(Features(rosenpass: true)));
        Assert.Matches(@"Quantum resistance: +off\n", Line(Features()));
        Assert.Matches(@"Quantum resistance: +pending first network map \(the PSK provider ""rosenpass"" starts with it\)\n",
            Line(Features(unavailable: RosenpassAvailability.Pending("rosenpass"))));
        Assert.Matches(@"Quantum resistance: +requested, not available: no PSK provider plugin named ""rosenpass"" is loaded \(available: \(none\)\)\n",
            Line(Features(unavailable: RosenpassAvailability.MissingProvider("rosenpass", []))));
        Assert.Matches(@"Quantum resistance: +requested by the account, not available: no PSK provider plugin named ""rosenpass""",
            Line(Features(unavailable: "requested by the account, not available: " + RosenpassAvailability.MissingProvider("rosenpass", []))));
    }

    [Fact]
    public void A_daemon_with_Rosenpass_on_locally_shows_it_pending_before_its_first_map_in_text_and_json()
    {
        // Management is unreachable (mgmt.test.invalid): no map ever comes, so this is the state until the first one.
        var path = _agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir, extra: "[rosenpass]\nenabled = true\npermissive = true");
        _agent.StartDaemon(path);

        var json = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        Assert.True(json.ExitCode == 0, json.Error);
        var features = JsonDocument.Parse(json.Output).RootElement.GetProperty("features");
        Assert.False(features.GetProperty("rosenpass").GetBoolean(), "Rosenpass shown on before its provider started");
        Assert.False(features.GetProperty("rosenpass_permissive").GetBoolean());
        Assert.Equal("config", features.GetProperty("rosenpass_source").GetString());
        Assert.Equal(RosenpassAvailability.Pending("rosenpass"), features.GetProperty("unavailable").GetProperty("rosenpass").GetString());

        var text = AgentHarness.Run($"status --socket {_agent.SocketPath}").Output;
        Assert.Matches(@"Quantum resistance: +pending first network map \(the PSK provider ""rosenpass"" starts with it\)", text);
    }

    public void Dispose() => _agent.Dispose();

    private static string Line(FeatureStatus features)
    {
        var status = new AgentStatus(
            "100.64.0.1", new string('k', 43) + "=", new InterfaceStatus("mdl0", "userspace", 51820, 1280), features,
            new ServiceStatus("https://m", true, null), new ServiceStatus("https://s", true, null), [], []);
        return Regex.Match(StatusText.Format(status, 0, 0, detail: false, Now).ReplaceLineEndings("\n"), "Quantum resistance:[^\n]*\n").Value;
    }

    private static FeatureStatus Features(bool rosenpass = false, bool permissive = false, string? unavailable = null)
        => new(false, "15m", [], false, "auto", rosenpass, rosenpass && permissive, false)
        {
            Unavailable = unavailable is null
                ? System.Collections.Immutable.ImmutableSortedDictionary<string, string>.Empty
                : System.Collections.Immutable.ImmutableSortedDictionary<string, string>.Empty.Add("rosenpass", unavailable),
        };
}
