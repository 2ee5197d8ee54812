using Modular.Testing;

namespace Modular.Agent.Tests;

/// <summary>
/// The layout scripts/publish installs (scripts/test runs every agent test against it): a
/// native-AOT `modular` that serves status and down itself and hands the plugin-loading
/// commands to the managed `modulard` beside it.
/// </summary>
public sealed class InstalledLayoutTests : IDisposable
{
    private readonly AgentHarness _agent = new();

    private static string InstalledDir()
    {
        Prerequisites.Require(BuiltBinaries.InstalledAgentDir is not null, $"needs {BuiltBinaries.AgentDirVariable} (scripts/test publishes the agent and sets it)");
        return BuiltBinaries.InstalledAgentDir!;
    }

    [SkippableFact]
    public void The_native_client_runs_without_the_managed_program_and_says_what_is_missing_for_up()
    {
        var lonely = Path.Combine(_agent.Root, "lonely");
        Directory.CreateDirectory(lonely);
        var client = Path.Combine(lonely, "modular");
        File.Copy(Path.Combine(InstalledDir(), "modular"), client);
        File.SetUnixFileMode(client, UnixFileMode.UserRead | UnixFileMode.UserExecute);
        var absent = Path.Combine(_agent.Root, "absent.sock");

        // A managed apphost alone could not start at all (its modular.dll is not there).
        var version = Shell.TryRun(client, "--version", TimeSpan.FromSeconds(30));
        Assert.True(version.ExitCode == 0, version.Error + version.Output);
        var status = Shell.TryRun(client, $"status --socket {absent}", TimeSpan.FromSeconds(30));
        Assert.Equal(1, status.ExitCode);
        Assert.Contains($"no modular daemon at {absent}", status.Error, StringComparison.Ordinal);

        var up = Shell.TryRun(client, $"up --config {_agent.WriteConfig()}", TimeSpan.FromSeconds(30));
        Assert.Equal(1, up.ExitCode);
        Assert.Contains(Path.Combine(lonely, "modulard") + " is missing", up.Error, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Up_becomes_modulard_in_the_same_process_and_the_native_client_reads_status_and_stops_it()
    {
        Assert.Equal(Path.Combine(InstalledDir(), "modular"), AgentHarness.Binary);
        var daemon = _agent.StartDaemon(_agent.WriteConfig(interfaceName: "mdtaot0"));

        // exec, not a child: the pid a service manager started is the daemon's.
        Assert.Equal("modulard", File.ReadAllText($"/proc/{daemon.Process.Id}/comm").Trim());
        // ...started with glibc's malloc capped at two arenas (MallocArenas), unless the caller set its own cap.
        if (Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is not { Length: > 0 })
        {
            Assert.Contains("MALLOC_ARENA_MAX=2", File.ReadAllText($"/proc/{daemon.Process.Id}/environ").Split('\0'));
        }

        var status = AgentHarness.Run($"status -d --socket {_agent.SocketPath}");
        Assert.True(status.ExitCode == 0, status.Error + status.Output);
        Assert.Contains("Interface:           mdtaot0 (userspace", status.Output, StringComparison.Ordinal);

        var down = AgentHarness.Run($"down --socket {_agent.SocketPath}");
        Assert.True(down.ExitCode == 0, down.Error + down.Output);
        Assert.Contains($"modular daemon (pid {daemon.Process.Id}) stopped", down.Output, StringComparison.Ordinal);
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));
    }

    public void Dispose() => _agent.Dispose();
}
