using System.Diagnostics;
using System.Net.Sockets;
using Modular.Testing;

namespace Modular.Agent.Tests;

/// <summary>
/// Runs the real `modular` binary of this build: one temp folder per test with the config,
/// state dir, socket and log inside it, deleted on Dispose with every daemon it started.
/// </summary>
public sealed class AgentHarness : IDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);
    private readonly List<Shell.BackgroundProcess> _daemons = [];

    public AgentHarness()
    {
        Root = Directory.CreateTempSubdirectory("modular-agent-test-").FullName;
        SocketPath = Path.Combine(Root, "run", "agent.sock");
        StateDir = Path.Combine(Root, "state");
        LogFile = Path.Combine(Root, "log", "agent.log");
        EmptyPluginsDir = Directory.CreateDirectory(Path.Combine(Root, "no-plugins")).FullName;
    }

    public string Root { get; }

    public string SocketPath { get; }

    public string StateDir { get; }

    public string LogFile { get; }

    /// <summary>A plugins folder with nothing in it: for tests about the daemon, not its plugins.</summary>
    public string EmptyPluginsDir { get; }

    /// <summary>The `modular` under test (see <see cref="BuiltBinaries.Agent"/>).</summary>
    public static string Binary => BuiltBinaries.Agent;

    /// <summary>The built-in plugins the agent's build laid out beside it.</summary>
    public static string BuiltInPluginsDir => Path.Combine(Path.GetDirectoryName(Binary)!, "plugins");

    /// <summary>
    /// Writes an agent TOML with the given interface name and plugins folder; <paramref name="extra"/>
    /// is appended verbatim (sections go there). The local UI is off unless <paramref name="ui"/> gives
    /// its listen address: daemons of parallel tests must not race for the default port. Returns its path.
    /// </summary>
    public string WriteConfig(string interfaceName = "mdt0", string? pluginsDir = null, string extra = "", string setupKey = "", string fileName = "agent.toml", string ui = "", string metrics = "")
    {
        var path = Path.Combine(Root, fileName);
        File.WriteAllText(path, $"""
            management_url = "https://mgmt.test.invalid:33073"
            setup_key = "{setupKey}"
            state_dir = "{StateDir}"
            socket = "{SocketPath}"
            interface = {"{"} name = "{interfaceName}", mode = "userspace", port = 51820, mtu = 1280 {"}"}
            log = {"{"} level = "info", file = "{LogFile}" {"}"}
            plugins_dir = "{pluginsDir ?? EmptyPluginsDir}"
            {extra}

            [ui]
            listen = "{ui}"
            [metrics]
            listen = "{metrics}"
            """);
        return path;
    }

    /// <summary>Runs a short `modular` command to completion.</summary>
    public static Shell.Result Run(string arguments, TimeSpan? timeout = null)
        => Shell.TryRun(Binary, arguments, timeout ?? TimeSpan.FromSeconds(90), CleanEnvironment());

    /// <summary>Starts `modular up` and waits until its socket answers; fails with its output if it exits first.</summary>
    public Shell.BackgroundProcess StartDaemon(string configPath, string? extraArguments = null)
    {
        var daemon = Shell.Start(Binary, $"up --config {configPath} --socket {SocketPath} {extraArguments}".TrimEnd(), CleanEnvironment());
        _daemons.Add(daemon);
        var stopwatch = Stopwatch.StartNew();
        while (!IsAnswering(SocketPath))
        {
            if (daemon.Process.HasExited)
            {
                throw new InvalidOperationException($"modular up exited {daemon.Process.ExitCode} before its socket answered:\n{daemon.Output}");
            }

            if (stopwatch.Elapsed > StartTimeout)
            {
                throw new TimeoutException($"modular up did not answer on {SocketPath} within {StartTimeout}:\n{daemon.Output}");
            }

            Thread.Sleep(50);
        }

        // The socket accepts a moment before the daemon has set its mode; the daemon says when it is ready.
        WaitForOutput(daemon, "Listening for `modular` commands");
        return daemon;
    }

    /// <summary>Waits (bounded) for a daemon to exit and returns its exit code.</summary>
    public static int WaitForExit(Shell.BackgroundProcess daemon)
    {
        if (!daemon.Process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            throw new TimeoutException($"the daemon did not exit:\n{daemon.Output}");
        }

        daemon.Process.WaitForExit();
        return daemon.Process.ExitCode;
    }

    /// <summary>Waits (bounded) until the process printed <paramref name="text"/>: its output arrives asynchronously.</summary>
    public static string WaitForOutput(Shell.BackgroundProcess process, string text)
    {
        var stopwatch = Stopwatch.StartNew();
        while (!process.Output.Contains(text, StringComparison.Ordinal) && stopwatch.Elapsed < TimeSpan.FromSeconds(20))
        {
            Thread.Sleep(50);
        }

        return process.Output;
    }

    public static bool IsAnswering(string socketPath)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(socketPath));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        foreach (var daemon in _daemons)
        {
            daemon.Dispose();
        }

        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    // Only additions: Shell cannot unset a variable, and an empty NB_* value would be a config error of its own.
    private static Dictionary<string, string> CleanEnvironment() => new() { ["DOTNET_NOLOGO"] = "1" };
}
