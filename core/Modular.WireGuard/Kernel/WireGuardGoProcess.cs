using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Interface;
using Modular.WireGuard.Uapi;

namespace Modular.WireGuard.Kernel;

/// <summary>
/// An external userspace WireGuard (wireguard-go, or modular-wg) run in the foreground as our
/// child, for machines without the kernel module. It creates the interface and its UAPI
/// socket; we configure it through <see cref="Uapi"/>. Dispose stops it and makes sure the
/// interface and socket are gone.
/// </summary>
public sealed class WireGuardGoProcess : IAsyncDisposable
{
    /// <summary>Debian's wireguard-go refuses to run without this.</summary>
    public const string PreferUserspaceVariable = "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD";

    private readonly Process _process;
    private readonly ILogger _logger;
    private int _disposed;

    private readonly string? _networkNamespace;

    private WireGuardGoProcess(string interfaceName, Process process, ILogger logger, string? networkNamespace)
    {
        _networkNamespace = networkNamespace;
        InterfaceName = interfaceName;
        _process = process;
        _logger = logger;
        Uapi = new UapiClient(UapiServer.PathFor(interfaceName));
    }

    public string InterfaceName { get; }

    public int ProcessId => _process.Id;

    public UapiClient Uapi { get; }

    public bool HasExited => _process.HasExited;

    /// <summary>
    /// Starts <paramref name="executable"/> -f <paramref name="interfaceName"/> (inside
    /// <paramref name="networkNamespace"/> when given) and waits until its interface and socket exist.
    /// </summary>
    public static async Task<WireGuardGoProcess> StartAsync(string interfaceName, ILogger logger, CancellationToken cancellationToken, string executable = "wireguard-go", string? networkNamespace = null)
    {
        var psi = new ProcessStartInfo(networkNamespace is null ? executable : "ip")
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (networkNamespace is not null)
        {
            psi.ArgumentList.Add("netns");
            psi.ArgumentList.Add("exec");
            psi.ArgumentList.Add(networkNamespace);
            psi.ArgumentList.Add(executable);
        }

        psi.ArgumentList.Add("-f");
        psi.ArgumentList.Add(interfaceName);
        psi.Environment[PreferUserspaceVariable] = "1";
        psi.Environment["LOG_LEVEL"] = "error";
        var process = Process.Start(psi) ?? throw new IOException($"cannot start {executable}");
        process.OutputDataReceived += (_, e) => LogLine(logger, e.Data);
        process.ErrorDataReceived += (_, e) => LogLine(logger, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var driver = new WireGuardGoProcess(interfaceName, process, logger, networkNamespace);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(15));
            while (!(File.Exists(driver.Uapi.SocketPath) && IpCommand.LinkExists(interfaceName, networkNamespace)))
            {
                if (process.HasExited)
                {
                    throw new IOException($"{executable} exited with {process.ExitCode} before creating {interfaceName}");
                }

                await Task.Delay(50, timeout.Token);
            }
        }
        catch
        {
            await driver.DisposeAsync();
            throw;
        }

        logger.LogInformation("{Executable} (pid {Pid}) serves {Interface}", executable, process.Id, interfaceName);
        return driver;
    }

    private static void LogLine(ILogger logger, string? line)
    {
        if (!string.IsNullOrWhiteSpace(line))
        {
            logger.LogWarning("wireguard-go: {Line}", line);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        // Deleting the link makes wireguard-go shut down cleanly (it removes its socket); kill if it lingers.
        IpCommand.TryRun($"{IpCommand.In(_networkNamespace)}link del {InterfaceName}");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _logger.LogWarning("wireguard-go for {Interface} did not exit; killing it", InterfaceName);
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync(CancellationToken.None);
        }

        try
        {
            File.Delete(Uapi.SocketPath);
        }
        catch (IOException)
        {
        }

        _process.Dispose();
    }
}
