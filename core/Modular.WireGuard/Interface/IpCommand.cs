using System.Diagnostics;

namespace Modular.WireGuard.Interface;

/// <summary>Runs iproute2's `ip` for the link settings the OS owns (address, MTU, state).</summary>
internal static class IpCommand
{
    public static void Run(string arguments)
    {
        var result = TryRun(arguments);
        if (result.ExitCode != 0)
        {
            throw new IOException($"ip {arguments}: {result.Error.Trim()}");
        }
    }

    public static (int ExitCode, string Output, string Error) TryRun(string arguments)
    {
        var psi = new ProcessStartInfo("ip", arguments) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(psi) ?? throw new IOException("cannot start ip");
        var error = process.StandardError.ReadToEndAsync();
        var output = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(30_000))
        {
            process.Kill();
            return (-1, output, "timed out");
        }

        return (process.ExitCode, output, error.Result);
    }

    /// <summary>
    /// Starts `ip` on the calling thread (so it inherits that thread's network namespace) and
    /// awaits its exit.
    /// </summary>
    public static async Task RunAsync(string arguments, CancellationToken cancellationToken)
    {
        var psi = new ProcessStartInfo("ip", arguments) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(psi) ?? throw new IOException("cannot start ip");
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        try
        {
            await process.WaitForExitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw;
        }

        await output;
        if (process.ExitCode != 0)
        {
            throw new IOException($"ip {arguments}: {(await error).Trim()}");
        }
    }

    /// <summary>True when the interface exists in this network namespace (or in the named one).</summary>
    public static bool LinkExists(string name, string? networkNamespace = null) => networkNamespace is null
        ? Directory.Exists(Path.Combine("/sys/class/net", name))
        : TryRun($"-n {networkNamespace} link show dev {name}").ExitCode == 0;

    /// <summary>"-n ns " for commands aimed at a named namespace, else empty.</summary>
    public static string In(string? networkNamespace) => networkNamespace is null ? string.Empty : $"-n {networkNamespace} ";
}
