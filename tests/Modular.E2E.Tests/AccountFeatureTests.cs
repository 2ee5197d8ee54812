using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// The one rule for features the account also sets, through the real engine and a real server: a local setting (TOML
/// key, environment) overrides the account either way; absent locally, the account decides; a feature the account
/// turns on that is not built yet is shown as unavailable, not on; and flow logging (or Rosenpass) the account turns on
/// runs its sink (its PSK provider), or, with no such plugin, the agent runs and status says why, never "on".
/// </summary>
public sealed class AccountFeatureTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Registered = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Account_on_with_the_toml_key_false_is_off_and_an_agent_without_a_key_follows_the_account()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "fa");
        WriteServerConfig(rig, accountOn: true);
        rig.StartServer();
        var key = rig.CreateSetupKey();
        rig.AddAgent("fa1").WriteConfig(key, "[features]\nlazy_connections = false\n[netflow]\nenabled = false");
        rig.AddAgent("fa2").WriteConfig(key);
        var noPlugins = Directory.CreateDirectory(Path.Combine(rig.Root, "no-plugins")).FullName;
        rig.AddAgent("fa3").WriteConfig(key, pluginsDir: noPlugins);
        rig["fa1"].Start();
        rig["fa2"].Start();
        rig["fa3"].Start();

        var optedOut = WaitForMap(rig, "fa1");
        Assert.False(optedOut.GetProperty("lazy_connections").GetBoolean());
        Assert.Equal("config", optedOut.GetProperty("lazy_connections_source").GetString());
        Assert.Equal("config", optedOut.GetProperty("netflow_source").GetString());
        Assert.False(optedOut.GetProperty("unavailable").TryGetProperty("netflow", out _), "a local false overrides the account's flows");
        Assert.False(optedOut.GetProperty("unavailable").TryGetProperty("rosenpass", out _), "rosenpass is built (issue 15)");
        Assert.Equal("account", optedOut.GetProperty("rosenpass_source").GetString());

        var follower = WaitForMap(rig, "fa2");
        Assert.True(follower.GetProperty("lazy_connections").GetBoolean());
        Assert.Equal("account", follower.GetProperty("lazy_connections_source").GetString());
        Assert.True(follower.GetProperty("rosenpass").GetBoolean(), "the account turns Rosenpass on and it is built (issue 15)");
        Assert.Equal("account", follower.GetProperty("rosenpass_source").GetString());
        Assert.False(follower.GetProperty("unavailable").TryGetProperty("rosenpass", out _));
        Assert.True(follower.GetProperty("netflow").GetBoolean(), "the account turns flow logging on and the netflow sink runs");
        Assert.Equal("account", follower.GetProperty("netflow_source").GetString());
        Assert.False(follower.GetProperty("unavailable").TryGetProperty("netflow", out _));
        Assert.True(rig["fa2"].Status()!.Value.GetProperty("flows").GetProperty("running").GetBoolean());

        var text = rig["fa2"].StatusText();
        Assert.Matches(@"Lazy connections: +on \(idle after 15m\), source: account\n", text);
        Assert.Matches(@"Flow logging: +on, to netflow", text);

        // The account asks for flows and Rosenpass, but this agent has no plugins: it runs, warns once, and says why.
        var withoutSink = WaitForMap(rig, "fa3");
        Assert.False(withoutSink.GetProperty("netflow").GetBoolean());
        Assert.StartsWith("requested by the account, not available: no flow-sink plugin named \"netflow\"", withoutSink.GetProperty("unavailable").GetProperty("netflow").GetString(), StringComparison.Ordinal);
        Assert.False(withoutSink.GetProperty("rosenpass").GetBoolean(), "no PSK provider plugin: Rosenpass must not be shown on");
        Assert.StartsWith("requested by the account, not available: no PSK provider plugin named \"rosenpass\"", withoutSink.GetProperty("unavailable").GetProperty("rosenpass").GetString(), StringComparison.Ordinal);
        var withoutPluginsText = rig["fa3"].StatusText();
        Assert.Matches(@"Flow logging: +requested by the account, not available: no flow-sink plugin", withoutPluginsText);
        Assert.Matches(@"Quantum resistance: +requested by the account, not available: no PSK provider plugin named ""rosenpass""", withoutPluginsText);
        Assert.Single(Regex.Matches(rig["fa3"].Output, "Flow logging is on \\(account\\), but not available"));
    }

    [SkippableFact]
    public void Account_off_with_NB_LAZY_CONN_on_is_on()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "fb");
        WriteServerConfig(rig, accountOn: false);
        rig.StartServer();
        var key = rig.CreateSetupKey();
        rig.AddAgent("fb1").WriteConfig(key);
        rig.AddAgent("fb2").WriteConfig(key);
        rig["fb1"].Start(new Dictionary<string, string> { ["NB_LAZY_CONN"] = "on" });
        rig["fb2"].Start();

        var optedIn = WaitForMap(rig, "fb1");
        Assert.True(optedIn.GetProperty("lazy_connections").GetBoolean());
        Assert.Equal("environment", optedIn.GetProperty("lazy_connections_source").GetString());

        var follower = WaitForMap(rig, "fb2");
        Assert.False(follower.GetProperty("lazy_connections").GetBoolean());
        Assert.Equal("account", follower.GetProperty("lazy_connections_source").GetString());
        Assert.False(follower.GetProperty("unavailable").TryGetProperty("netflow", out _));
    }

    private static void WriteServerConfig(MeshRig rig, bool accountOn)
    {
        var on = accountOn ? "true" : "false";
        File.WriteAllText(rig.ServerConfig, $"""
            listen = "{MeshRig.ServerIp}:33073"
            data_dir = "{Path.Combine(rig.Root, "server")}"
            relay = {"{"} listen = "{MeshRig.ServerIp}:33080" {"}"}
            stun = {"{"} listen = "{MeshRig.ServerIp}:3478" {"}"}

            [account]
            lazy_connections = {on}
            flows = {"{"} enabled = {on} {"}"}
            rosenpass = {"{"} enabled = {on} {"}"}
            """);
    }

    /// <summary>The agent's `features` once its first network map is applied (no agent here sets Rosenpass, so the account then decides it).</summary>
    private static JsonElement WaitForMap(MeshRig rig, string name)
    {
        JsonElement features = default;
        rig.WaitUntil(
            () => rig[name].Status() is { } status
                && (features = status.GetProperty("features")).GetProperty("rosenpass_source").GetString() == "account",
            Registered,
            $"{name} applying its first network map",
            () => rig[name].Output);
        return features;
    }
}
