namespace Modular.Agent.Tests;

/// <summary>
/// A broken agent.toml is one clear line naming file:line:col, from `config check` and from
/// `up` alike, with a non-zero exit and no daemon left behind.
/// </summary>
public sealed class BrokenConfigTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    // Each case: the file's text and the 1-based line the error must cite.
    public static TheoryData<string, string, int> BrokenFiles => new()
    {
        {
            "syntax error",
            "management_url = \"https://mgmt.test.invalid:33073\"\nstate_dir = \"/tmp/x\"\nsocket = \"/tmp/y.sock\n",
            3
        },
        {
            "wrong type",
            "management_url = \"https://mgmt.test.invalid:33073\"\n\n[interface]\nname = \"mdl0\"\nport = \"fifty-one thousand\"\n",
            5
        },
        {
            "unknown key",
            "management_url = \"https://mgmt.test.invalid:33073\"\n\n[connection]\nforce_relay = false\nforce_relai = true\n",
            5
        },
        {
            "unknown plugin",
            "management_url = \"https://mgmt.test.invalid:33073\"\nplugins_dir = \"PLUGINS\"\n\n[proxy]\nkind = \"no-such-proxy\"\n",
            5
        },
        {
            "ui on every address",
            "management_url = \"https://mgmt.test.invalid:33073\"\n\n[ui]\nlisten = \"0.0.0.0:9091\"\n",
            4
        },
        {
            "hostname not a DNS label",
            "management_url = \"https://mgmt.test.invalid:33073\"\nhostname = \"db1.example.com\"\n",
            2
        },
    };

    [Theory]
    [MemberData(nameof(BrokenFiles))]
    public void Config_check_reports_file_line_and_column(string problem, string toml, int line)
    {
        var path = Write(problem, toml);

        var result = AgentHarness.Run($"config check {path}");

        Assert.True(result.ExitCode == 1, $"{problem}: exit {result.ExitCode}\n{result.Output}{result.Error}");
        Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(path)}:{line + 1}:\d+: ", result.Error);
        Assert.DoesNotContain(": OK", result.Output, StringComparison.Ordinal);
    }

    [Theory]
    [MemberData(nameof(BrokenFiles))]
    public void Up_refuses_to_start_with_the_same_error(string problem, string toml, int line)
    {
        var path = Write(problem, toml);

        var result = AgentHarness.Run($"up --config {path} --socket {_agent.SocketPath}", TimeSpan.FromSeconds(30));

        Assert.True(result.ExitCode == 1, $"{problem}: exit {result.ExitCode}\n{result.Output}{result.Error}");
        Assert.Matches($@"{System.Text.RegularExpressions.Regex.Escape(path)}:{line + 1}:\d+: ", result.Error);
        Assert.False(File.Exists(_agent.SocketPath), "a daemon that refused to start left a socket");
    }

    [Fact]
    public void Unknown_plugin_error_lists_the_available_names()
    {
        var path = Write("unknown plugin", "management_url = \"https://mgmt.test.invalid:33073\"\nplugins_dir = \"PLUGINS\"\n[proxy]\nkind = \"no-such-proxy\"\n");

        var result = AgentHarness.Run($"config check {path}");

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("proxy.kind", result.Error, StringComparison.Ordinal);
        Assert.Contains("no-such-proxy", result.Error, StringComparison.Ordinal);
        Assert.Contains("udp", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_file_is_an_error_naming_it()
    {
        var path = Path.Combine(_agent.Root, "absent.toml");

        var check = AgentHarness.Run($"config check {path}");
        var up = AgentHarness.Run($"up --config {path} --socket {_agent.SocketPath}");

        Assert.Equal(1, check.ExitCode);
        Assert.Contains(path, check.Error, StringComparison.Ordinal);
        Assert.Equal(1, up.ExitCode);
        Assert.Contains(path, up.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_ui_on_a_non_loopback_address_is_refused_at_its_key_by_check_and_up_alike()
    {
        var path = Write("ui open", "management_url = \"https://mgmt.test.invalid:33073\"\n[ui]\nlisten = \"0.0.0.0:9091\"\n");

        foreach (var result in new[] { AgentHarness.Run($"config check {path}"), AgentHarness.Run($"up --config {path} --socket {_agent.SocketPath}", TimeSpan.FromSeconds(30)) })
        {
            Assert.Equal(1, result.ExitCode);
            Assert.Contains($"{path}:4:10: ui.listen: expected a loopback address and port", result.Error, StringComparison.Ordinal);
            Assert.Contains("the UI has no login", result.Error, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void A_hostname_flag_that_is_not_a_DNS_label_is_refused_naming_the_flag()
    {
        var path = _agent.WriteConfig();

        var result = AgentHarness.Run($"up --config {path} --socket {_agent.SocketPath} --hostname db1.example", TimeSpan.FromSeconds(30));

        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--hostname: expected a DNS label", result.Error, StringComparison.Ordinal);
        Assert.Contains("\"db1.example\"", result.Error, StringComparison.Ordinal);
        Assert.False(File.Exists(_agent.SocketPath), "a daemon that refused to start left a socket");
    }

    [Fact]
    public void A_valid_file_checks_ok()
    {
        var path = _agent.WriteConfig(pluginsDir: AgentHarness.BuiltInPluginsDir);

        var result = AgentHarness.Run($"config check {path}");

        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Equal($"{path}: OK", result.Output.Trim());
    }

    /// <summary>
    /// Writes the case with a state_dir inside the test folder as its second line (so a loader that
    /// wrongly accepted the file could not touch /var/lib/modular); the cited line moves down by one.
    /// </summary>
    private string Write(string problem, string toml)
    {
        var path = Path.Combine(_agent.Root, problem.Replace(' ', '-') + ".toml");
        var lines = toml.Replace("PLUGINS", AgentHarness.BuiltInPluginsDir, StringComparison.Ordinal).Split('\n').ToList();
        lines.Insert(1, $"state_dir = \"{_agent.StateDir}\"");
        File.WriteAllText(path, string.Join('\n', lines));
        return path;
    }

    public void Dispose() => _agent.Dispose();
}
