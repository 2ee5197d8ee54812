using System.Diagnostics;

namespace Modular.Testing;

/// <summary>
/// A Linux network namespace owned by one test: unique name, deleted (with every process
/// still running in it) on Dispose, even when the test failed. Traffic stays inside it.
/// </summary>
public sealed class NetworkNamespace : IDisposable
{
    private static int _counter;

    private NetworkNamespace(string name) => Name = name;

    public string Name { get; }

    /// <summary>Creates "mdl-&lt;prefix&gt;-&lt;pid&gt;-&lt;n&gt;" with loopback up.</summary>
    public static NetworkNamespace Create(string prefix)
    {
        var name = $"mdl-{prefix}-{Environment.ProcessId}-{Interlocked.Increment(ref _counter)}";
        if (name.Length > 60)
        {
            name = name[..60];
        }

        Shell.Run("ip", $"netns add {name}");
        var ns = new NetworkNamespace(name);
        ns.Exec("ip link set lo up");
        return ns;
    }

    /// <summary>Runs a command inside the namespace and returns its stdout; throws on a non-zero exit.</summary>
    public string Exec(string commandLine, TimeSpan? timeout = null) => Shell.Run("ip", $"netns exec {Name} {commandLine}", timeout);

    /// <summary>Runs a command inside the namespace; returns exit code and output without throwing.</summary>
    public Shell.Result TryExec(string commandLine, TimeSpan? timeout = null) => Shell.TryRun("ip", $"netns exec {Name} {commandLine}", timeout);

    /// <summary>Starts a long-running process inside the namespace; the caller disposes it.</summary>
    public Shell.BackgroundProcess Start(string commandLine, IDictionary<string, string>? environment = null)
        => Shell.Start("ip", $"netns exec {Name} {commandLine}", environment);

    /// <summary>
    /// Waits (bounded) until something in the namespace listens on TCP <paramref name="port"/>: a server
    /// started a moment ago may not be listening yet, and on a loaded machine no fixed sleep is long enough.
    /// </summary>
    public void WaitForTcpListener(int port, TimeSpan timeout)
    {
        var stopwatch = Stopwatch.StartNew();
        while (string.IsNullOrWhiteSpace(TryExec($"ss -ltnH sport = :{port}").Output))
        {
            if (stopwatch.Elapsed > timeout)
            {
                throw new TimeoutException($"nothing listened on TCP port {port} in {Name} within {timeout.TotalSeconds} s");
            }

            Thread.Sleep(50);
        }
    }

    /// <summary>Joins this namespace and <paramref name="other"/> with a veth pair and addresses (CIDR), links up.</summary>
    public void Link(NetworkNamespace other, string localCidr, string remoteCidr)
    {
        var suffix = Interlocked.Increment(ref _counter);
        var a = $"va{Environment.ProcessId % 10000}x{suffix}";
        var b = $"vb{Environment.ProcessId % 10000}x{suffix}";
        Shell.Run("ip", $"link add {a} netns {Name} type veth peer name {b} netns {other.Name}");
        Exec($"ip addr add {localCidr} dev {a}");
        Exec($"ip link set {a} up");
        other.Exec($"ip addr add {remoteCidr} dev {b}");
        other.Exec($"ip link set {b} up");
    }

    public void Dispose()
    {
        // Kill whatever still runs in the namespace, then delete it (which removes its links).
        var pids = Shell.TryRun("ip", $"netns pids {Name}");
        foreach (var pid in pids.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            Shell.TryRun("kill", $"-9 {pid}");
        }

        Shell.TryRun("ip", $"netns delete {Name}");
    }
}

/// <summary>Small process helpers for tests: bounded in time, output captured.</summary>
public static class Shell
{
    public sealed record Result(int ExitCode, string Output, string Error);

    public static string Run(string file, string arguments, TimeSpan? timeout = null)
    {
        var result = TryRun(file, arguments, timeout);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException($"'{file} {arguments}' exited {result.ExitCode}: {result.Error}{result.Output}");
        }

        return result.Output;
    }

    public static Result TryRun(string file, string arguments, TimeSpan? timeout = null, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (environment is not null)
        {
            foreach (var (k, v) in environment)
            {
                psi.Environment[k] = v;
            }
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            return new Result(-1, stdout.Result, $"timed out after {timeout ?? TimeSpan.FromSeconds(60)}; {stderr.Result}");
        }

        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }

    public static BackgroundProcess Start(string file, string arguments, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(file, arguments)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (environment is not null)
        {
            foreach (var (k, v) in environment)
            {
                psi.Environment[k] = v;
            }
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {file}");
        return new BackgroundProcess(process);
    }

    /// <summary>A process killed (with its tree) on Dispose; its output is kept for failure messages.</summary>
    public sealed class BackgroundProcess : IDisposable
    {
        private readonly System.Text.StringBuilder _output = new();
        private readonly TaskCompletionSource _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _openStreams = 2;

        internal BackgroundProcess(Process process)
        {
            Process = process;
            process.OutputDataReceived += (_, e) => Append(e.Data);
            process.ErrorDataReceived += (_, e) => Append(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        public Process Process { get; }

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        /// <summary>
        /// Waits until stdout and stderr have both ended, so <see cref="Output"/> holds everything the process wrote:
        /// Process.HasExited can turn true before the last lines have been read.
        /// </summary>
        public bool WaitForOutputEnd(TimeSpan timeout) => _ended.Task.Wait(timeout);

        private void Append(string? line)
        {
            if (line is null)
            {
                // A null line is a stream's end.
                if (Interlocked.Decrement(ref _openStreams) == 0)
                {
                    _ended.TrySetResult();
                }

                return;
            }

            lock (_output)
            {
                _output.AppendLine(line);
            }
        }

        public void Dispose()
        {
            try
            {
                if (!Process.HasExited)
                {
                    Process.Kill(entireProcessTree: true);
                    Process.WaitForExit(5000);
                }
            }
            catch (InvalidOperationException)
            {
            }

            Process.Dispose();
        }
    }
}
