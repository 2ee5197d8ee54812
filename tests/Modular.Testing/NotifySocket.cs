using System.Net.Sockets;
using System.Text;

namespace Modular.Testing;

/// <summary>
/// Stands in for systemd's notification socket (sd_notify): a unix datagram socket in a temp folder. Start a
/// daemon with <see cref="Variable"/>=<see cref="Path"/> in its environment and read what it says (READY=1,
/// STOPPING=1, ...), one datagram at a time. No systemd is needed.
/// </summary>
public sealed class NotifySocket : IDisposable
{
    /// <summary>The environment variable systemd sets for a Type=notify service.</summary>
    public const string Variable = "NOTIFY_SOCKET";

    private readonly string _dir = Directory.CreateTempSubdirectory("modular-notify-").FullName;
    private readonly Socket _socket = new(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);

    public NotifySocket()
    {
        Path = System.IO.Path.Combine(_dir, "notify.sock");
        _socket.Bind(new UnixDomainSocketEndPoint(Path));
    }

    public string Path { get; }

    /// <summary>The next datagram as text; throws <see cref="TimeoutException"/> when none arrives within <paramref name="timeout"/>.</summary>
    public async Task<string> ReceiveAsync(TimeSpan timeout)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            var n = await _socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            return Encoding.UTF8.GetString(buffer, 0, n).Trim();
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"nothing arrived on {Path} within {timeout}");
        }
    }

    public void Dispose()
    {
        _socket.Dispose();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
