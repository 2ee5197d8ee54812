using System.Text.RegularExpressions;
using Modular.Testing;

namespace Modular.Agent.Tests;

/// <summary>
/// Running as a systemd service without a running systemd: the units pass `systemd-analyze verify`, the daemon speaks
/// sd_notify to a NOTIFY_SOCKET the test holds (READY=1 only once its socket listens, STOPPING=1 when it stops), and
/// scripts/package-deb packs the published layouts with their units.
/// </summary>
public sealed class ServiceTests : IDisposable
{
    private static readonly TimeSpan NotifyTimeout = TimeSpan.FromSeconds(60);
    private readonly AgentHarness _agent = new();

    private static string Unit(string name) => Path.Combine(BuiltBinaries.RepoRoot, "packaging", "systemd", name);

    /// <summary>
    /// Runs `systemd-analyze verify` on <paramref name="unitText"/> with its ExecStart program replaced by
    /// <paramref name="program"/> (verify insists the program exists); returns its exit code and output.
    /// </summary>
    private Shell.Result Verify(string fileName, string unitText, string installedProgram, string program)
    {
        Assert.Contains($"ExecStart={installedProgram} ", unitText, StringComparison.Ordinal);
        var dir = Directory.CreateDirectory(Path.Combine(_agent.Root, "units-" + Guid.NewGuid().ToString("N"))).FullName;
        var path = Path.Combine(dir, fileName);
        File.WriteAllText(path, unitText.Replace($"ExecStart={installedProgram} ", $"ExecStart={program} ", StringComparison.Ordinal));
        return Shell.TryRun("systemd-analyze", $"verify {path}", TimeSpan.FromSeconds(60));
    }

    private static string Setting(string unitText, string key)
        => Assert.Single(Regex.Matches(unitText, $"^{key}=(.*)$", RegexOptions.Multiline)).Groups[1].Value;

    [SkippableFact]
    public void The_units_pass_systemd_analyze_verify_and_run_the_daemons_as_notify_services()
    {
        Prerequisites.RequireTool("systemd-analyze");
        var agent = File.ReadAllText(Unit("modular.service"));
        var server = File.ReadAllText(Unit("modular-server.service"));

        // Any warning (an unknown key, a bad value) fails too, not only an error.
        var agentResult = Verify("modular.service", agent, "/usr/lib/modular/modulard", AgentHarness.Binary);
        Assert.True(agentResult.ExitCode == 0 && agentResult.Error.Trim().Length == 0, agentResult.Error + agentResult.Output);
        var serverResult = Verify("modular-server.service", server, "/usr/lib/modular-server/modular-server", BuiltBinaries.Server);
        Assert.True(serverResult.ExitCode == 0 && serverResult.Error.Trim().Length == 0, serverResult.Error + serverResult.Output);

        foreach (var unit in new[] { agent, server })
        {
            Assert.Equal("notify", Setting(unit, "Type"));
            Assert.Equal("on-failure", Setting(unit, "Restart"));
            Assert.Equal("yes", Setting(unit, "NoNewPrivileges"));
            Assert.Equal("strict", Setting(unit, "ProtectSystem"));
        }

        // The agent keeps what it manages the network with; the server only binds ports.
        Assert.Equal("CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_BPF", Setting(agent, "CapabilityBoundingSet"));
        Assert.Equal("/dev/net/tun rw", Setting(agent, "DeviceAllow"));
        Assert.Equal("MALLOC_ARENA_MAX=2", Setting(agent, "Environment")); // capped before the runtime's first thread
        Assert.StartsWith("/usr/lib/modular/modulard up ", Setting(agent, "ExecStart"), StringComparison.Ordinal);
        Assert.Equal("CAP_NET_BIND_SERVICE", Setting(server, "CapabilityBoundingSet"));
    }

    [Fact]
    public async Task Under_systemd_the_daemon_says_ready_once_its_socket_listens_and_stopping_when_it_stops()
    {
        using var notify = new NotifySocket();
        // Management cannot be reached (mgmt.test.invalid): ready means the socket listens and the engine is retrying.
        var config = _agent.WriteConfig(interfaceName: "mdtsd0");
        using var daemon = Shell.Start(AgentHarness.Binary, $"up --config {config} --socket {_agent.SocketPath}",
            new Dictionary<string, string> { ["DOTNET_NOLOGO"] = "1", [NotifySocket.Variable] = notify.Path });

        Assert.Equal("READY=1", await notify.ReceiveAsync(NotifyTimeout));
        Assert.True(AgentHarness.IsAnswering(_agent.SocketPath), "READY=1 came before the socket listened:\n" + daemon.Output);
        // A loaded machine can miss the CLI's deadline once; the daemon answering at all was asserted above.
        var status = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        for (var attempt = 1; attempt < 3 && status.Error.Contains("DeadlineExceeded", StringComparison.Ordinal); attempt++)
        {
            status = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        }

        Assert.True(status.ExitCode == 0, status.Error + status.Output);
        var management = System.Text.Json.JsonDocument.Parse(status.Output).RootElement.GetProperty("management");
        Assert.False(management.GetProperty("connected").GetBoolean()); // retrying, not up: ready all the same

        Shell.Run("kill", $"-TERM {daemon.Process.Id}");
        Assert.Equal("STOPPING=1", await notify.ReceiveAsync(NotifyTimeout));
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));
        Assert.False(File.Exists(_agent.SocketPath));
    }

    [Fact]
    public async Task A_stop_by_modular_down_says_stopping_too()
    {
        // `modular down` is the other way a service stops: STOPPING=1 must come from it too.
        using var notify = new NotifySocket();
        var config = _agent.WriteConfig(interfaceName: "mdtsd1");
        using var daemon = Shell.Start(AgentHarness.Binary, $"up --config {config} --socket {_agent.SocketPath}",
            new Dictionary<string, string> { ["DOTNET_NOLOGO"] = "1", [NotifySocket.Variable] = notify.Path });
        Assert.Equal("READY=1", await notify.ReceiveAsync(NotifyTimeout));

        var down = AgentHarness.Run($"down --socket {_agent.SocketPath}");
        Assert.True(down.ExitCode == 0, down.Error + down.Output);
        Assert.Equal("STOPPING=1", await notify.ReceiveAsync(NotifyTimeout));
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));
    }

    [SkippableFact]
    public void The_debian_packages_hold_the_units_and_the_programs_where_the_units_look()
    {
        Prerequisites.RequireTool("dpkg-deb");
        Prerequisites.RequireTool("systemd-analyze");
        Prerequisites.Require(BuiltBinaries.InstalledAgentDir is not null, $"needs {BuiltBinaries.AgentDirVariable} (scripts/test publishes the agent and sets it)");

        // The server's layout from its build output (scripts/publish --server makes the same shape, slower).
        var serverLayout = Path.Combine(_agent.Root, "server-layout");
        Shell.Run("cp", $"-a {Path.GetDirectoryName(BuiltBinaries.Server)} {serverLayout}");
        Directory.CreateDirectory(Path.Combine(serverLayout, "systemd"));
        File.Copy(Unit("modular-server.service"), Path.Combine(serverLayout, "systemd", "modular-server.service"));
        var debs = Path.Combine(_agent.Root, "deb");
        var built = Shell.TryRun(Path.Combine(BuiltBinaries.RepoRoot, "scripts", "package-deb"),
            $"--agent {BuiltBinaries.InstalledAgentDir} --server {serverLayout} {debs}", TimeSpan.FromMinutes(5));
        Assert.True(built.ExitCode == 0, built.Error + built.Output);

        var agentDeb = Assert.Single(Directory.GetFiles(debs, "modular_*.deb"));
        var serverDeb = Assert.Single(Directory.GetFiles(debs, "modular-server_*.deb"));
        var info = Shell.Run("dpkg-deb", $"--info {agentDeb}");
        Assert.Contains("Package: modular\n", info, StringComparison.Ordinal);
        Assert.Contains("Depends: iproute2, nftables", info, StringComparison.Ordinal);
        Assert.Contains("Package: modular-server\n", Shell.Run("dpkg-deb", $"--info {serverDeb}"), StringComparison.Ordinal);

        var agentFiles = Shell.Run("dpkg-deb", $"--contents {agentDeb}");
        foreach (var path in new[] { "./lib/systemd/system/modular.service", "./usr/lib/modular/modulard", "./usr/lib/modular/modular", "./usr/lib/modular/modular.dll", "./usr/bin/modular -> ../lib/modular/modular" })
        {
            Assert.Contains(path, agentFiles, StringComparison.Ordinal);
        }

        Assert.Matches(@"\./usr/lib/modular/plugins/\S+", agentFiles);
        var serverFiles = Shell.Run("dpkg-deb", $"--contents {serverDeb}");
        foreach (var path in new[] { "./lib/systemd/system/modular-server.service", "./usr/lib/modular-server/modular-server", "./usr/bin/modular-server -> ../lib/modular-server/modular-server" })
        {
            Assert.Contains(path, serverFiles, StringComparison.Ordinal);
        }

        // Unpacked: /usr/bin/modular runs through its link, and each unit's ExecStart names a program the package holds.
        var root = Path.Combine(_agent.Root, "unpacked");
        Shell.Run("dpkg-deb", $"-x {agentDeb} {root}");
        Shell.Run("dpkg-deb", $"-x {serverDeb} {root}");
        var version = Shell.TryRun(Path.Combine(root, "usr", "bin", "modular"), "--version", TimeSpan.FromSeconds(30));
        Assert.True(version.ExitCode == 0, version.Error + version.Output);
        var agentUnit = File.ReadAllText(Path.Combine(root, "lib", "systemd", "system", "modular.service"));
        var agentResult = Verify("modular.service", agentUnit, "/usr/lib/modular/modulard", Path.Combine(root, "usr", "lib", "modular", "modulard"));
        Assert.True(agentResult.ExitCode == 0 && agentResult.Error.Trim().Length == 0, agentResult.Error + agentResult.Output);
        var serverUnit = File.ReadAllText(Path.Combine(root, "lib", "systemd", "system", "modular-server.service"));
        var serverResult = Verify("modular-server.service", serverUnit, "/usr/lib/modular-server/modular-server", Path.Combine(root, "usr", "lib", "modular-server", "modular-server"));
        Assert.True(serverResult.ExitCode == 0 && serverResult.Error.Trim().Length == 0, serverResult.Error + serverResult.Output);
    }

    public void Dispose() => _agent.Dispose();
}
