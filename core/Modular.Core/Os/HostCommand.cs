using System.Diagnostics;
using Modular.WireGuard.Interface;

namespace Modular.Core.Os;

/// <summary>What a host command printed and how it exited.</summary>
public sealed record CommandResult(int ExitCode, string Output, string Error)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>
/// Runs the host's networking tools (nft, ip, sysctl) for the settings the OS owns. Arguments are passed
/// as a list (no shell), input can be piped (nft -f -), and every run is bounded in time: a hung tool is
/// killed and reported, never waited on forever. The one place the agent core starts processes.
/// </summary>
public static class HostCommand
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Runs <paramref name="file"/> and returns its result whatever the exit code.</summary>
    /// <param name="time">The clock of <paramref name="timeout"/>; the system clock when null.</param>
    public static async Task<CommandResult> RunAsync(string file, IReadOnlyList<string> arguments, string? input = null, TimeSpan? timeout = null, TimeProvider? time = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            RedirectStandardInput = input is not null,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            psi.ArgumentList.Add(argument);
        }

        using var process = Process.Start(psi) ?? throw new IOException($"cannot start {file}");
        // Closes the redirected pipes now, not when the finalizer runs (see ProcessPipes).
        using var pipes = new ProcessPipes(process, input is not null);
        using var timer = new CancellationTokenSource(timeout ?? DefaultTimeout, time ?? TimeProvider.System);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token);
        var output = process.StandardOutput.ReadToEndAsync(bounded.Token);
        var error = process.StandardError.ReadToEndAsync(bounded.Token);
        try
        {
            if (input is not null)
            {
                await process.StandardInput.WriteAsync(input.AsMemory(), bounded.Token);
                process.StandardInput.Close();
            }

            await process.WaitForExitAsync(bounded.Token);
            return new CommandResult(process.ExitCode, await output, await error);
        }
        catch (OperationCanceledException)
        {
            try
            {
                process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // It exited just now.
            }

            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            return new CommandResult(-1, "", $"{file} timed out");
        }
    }

    /// <summary>Runs <paramref name="file"/> and throws an <see cref="IOException"/> with its error output when it fails.</summary>
    public static async Task<string> RunCheckedAsync(string file, IReadOnlyList<string> arguments, string? input = null, CancellationToken cancellationToken = default)
    {
        var result = await RunAsync(file, arguments, input, cancellationToken: cancellationToken);
        return result.Succeeded
            ? result.Output
            : throw new IOException($"{file} {string.Join(' ', arguments)}: {(result.Error.Length > 0 ? result.Error : result.Output).Trim()}");
    }
}
