using System.Diagnostics;

namespace Modular.WireGuard.Interface;

/// <summary>
/// Runs iproute2's `ip` for the link settings the OS owns (address, MTU, state). Every run is bounded by
/// <see cref="Timeout"/>: a hung `ip` (a wedged netlink, a stuck namespace) is killed and reported, so the
/// engine's start or stop never waits on it forever. (Modular.Core's HostCommand does the same for nft and
/// sysctl; this assembly does not reference Core.)
/// </summary>
internal static class IpCommand
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    public static void Run(string arguments)
    {
        var result = TryRun(arguments);
        if (result.ExitCode != 0)
        {
            throw new IOException($"ip {arguments}: {result.Error.Trim()}");
        }
    }

    public static (int ExitCode, string Output, string Error) TryRun(string arguments) => RunBounded("ip", arguments, Timeout);

    /// <summary>
    /// Starts `ip` on the calling thread (so it inherits that thread's network namespace) and
    /// awaits its exit.
    /// </summary>
    public static Task RunAsync(string arguments, CancellationToken cancellationToken) => RunBoundedAsync("ip", arguments, Timeout, cancellationToken);

    /// <summary>Runs <paramref name="file"/>; exit code -1 and "timed out" when it outlives <paramref name="timeout"/> (it is killed).</summary>
    internal static (int ExitCode, string Output, string Error) RunBounded(string file, string arguments, TimeSpan timeout)
    {
        using var process = Start(file, arguments);
        using var pipes = new ProcessPipes(process);
        // Both pipes are read in the background: reading one to its end first would wait on a hung process
        // before the timeout even starts.
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout) || !Task.WaitAll([output, error], timeout))
        {
            Kill(process);
            return (-1, "", $"{file} timed out after {timeout.TotalSeconds:0.#} s");
        }

        return (process.ExitCode, output.Result, error.Result);
    }

    /// <summary>Runs <paramref name="file"/>; throws an <see cref="IOException"/> when it fails or outlives <paramref name="timeout"/>.</summary>
    internal static async Task RunBoundedAsync(string file, string arguments, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var process = Start(file, arguments);
        using var pipes = new ProcessPipes(process);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bounded.CancelAfter(timeout);
        var error = process.StandardError.ReadToEndAsync(bounded.Token);
        var output = process.StandardOutput.ReadToEndAsync(bounded.Token);
        try
        {
            await process.WaitForExitAsync(bounded.Token);
            await output;
            if (process.ExitCode != 0)
            {
                throw new IOException($"{file} {arguments}: {(await error).Trim()}");
            }
        }
        catch (OperationCanceledException)
        {
            Kill(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new IOException($"{file} {arguments}: timed out after {timeout.TotalSeconds:0.#} s");
        }
    }

    /// <summary>True when the interface exists in this network namespace (or in the named one).</summary>
    public static bool LinkExists(string name, string? networkNamespace = null) => networkNamespace is null
        ? Directory.Exists(Path.Combine("/sys/class/net", name))
        : TryRun($"-n {networkNamespace} link show dev {name}").ExitCode == 0;

    /// <summary>"-n ns " for commands aimed at a named namespace, else empty.</summary>
    public static string In(string? networkNamespace) => networkNamespace is null ? string.Empty : $"-n {networkNamespace} ";

    private static Process Start(string file, string arguments)
    {
        var psi = new ProcessStartInfo(file, arguments) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        return Process.Start(psi) ?? throw new IOException($"cannot start {file}");
    }

    private static void Kill(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // It exited just now.
        }
    }
}
