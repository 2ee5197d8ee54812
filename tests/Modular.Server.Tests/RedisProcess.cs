using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>
/// A real redis-server this test starts on a free loopback port, with its files in a temporary directory and no
/// persistence; killed and its directory removed on dispose, also when the test failed.
/// </summary>
internal sealed class RedisProcess : IDisposable
{
    private readonly Process _process;
    private readonly string _dir;

    private RedisProcess(Process process, string dir, int port)
    {
        _process = process;
        _dir = dir;
        Port = port;
    }

    public int Port { get; }

    public string Url => $"redis://127.0.0.1:{Port}";

    /// <summary>Starts one and waits until it answers; skips (fails under CI) without redis-server.</summary>
    public static async Task<RedisProcess> StartAsync()
    {
        var path = Prerequisites.FindOnPath("redis-server");
        Prerequisites.Require(path is not null, "needs 'redis-server' (scripts/setup installs it)");
        var port = FreePort();
        var dir = Path.Combine(Path.GetTempPath(), "modular-redis-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var psi = new ProcessStartInfo(path!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = dir,
        };
        foreach (var arg in new[] { "--port", $"{port}", "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--daemonize", "no" })
        {
            psi.ArgumentList.Add(arg);
        }

        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start redis-server");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var redis = new RedisProcess(process, dir, port);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (true)
        {
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, port, timeout.Token);
                return redis;
            }
            catch (SocketException) when (!timeout.IsCancellationRequested && !process.HasExited)
            {
                await Task.Delay(20, timeout.Token);
            }
            catch
            {
                redis.Dispose();
                throw;
            }
        }
    }

    /// <summary>A loopback port nothing listens on (bound and released at once).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }
        finally
        {
            _process.Dispose();
            try
            {
                Directory.Delete(_dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
