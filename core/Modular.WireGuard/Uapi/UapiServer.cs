using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Modular.WireGuard.Uapi;

/// <summary>What the UAPI server asks of a WireGuard device (WgDevice's IpcGet/IpcSet).</summary>
public interface IUapiHandler
{
    /// <summary>Writes the "get" body (key=value lines, no errno line, no final blank line).</summary>
    void IpcGet(TextWriter output);

    /// <summary>Applies the "set" lines (without the blank terminator); returns 0 or an errno.</summary>
    int IpcSet(TextReader input);
}

/// <summary>
/// The cross-platform WireGuard configuration protocol (wireguard.com/xplatform) on a unix
/// socket, as wireguard-go serves it at /var/run/wireguard/&lt;iface&gt;.sock, so the stock
/// `wg` tool and wg-quick configure our device. Each connection may carry several
/// requests: "get=1\n\n" answers the body then "errno=0\n\n"; "set=1\n...\n\n" answers
/// "errno=-N\n\n" (negated, as wireguard-go and `wg` have it; 0 on success). A malformed request gets errno=22 (EINVAL) and the connection is closed.
/// The socket file is removed on Dispose.
/// </summary>
public sealed class UapiServer : IAsyncDisposable
{
    public const string DefaultDirectory = "/var/run/wireguard";

    /// <summary>Bound on one request so a misbehaving client cannot exhaust memory.</summary>
    private const int MaxRequestBytes = 4 << 20;

    private const int Einval = 22;
    private const int Eio = 5;

    private readonly Socket _listener;
    private readonly IUapiHandler _handler;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _serialize = new(1, 1);
    private readonly Task _acceptLoop;
    private int _disposed;

    private UapiServer(string path, Socket listener, IUapiHandler handler, ILogger logger)
    {
        SocketPath = path;
        _listener = listener;
        _handler = handler;
        _logger = logger;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public string SocketPath { get; }

    /// <summary>The socket path wireguard-go uses for <paramref name="interfaceName"/>.</summary>
    public static string PathFor(string interfaceName, string directory = DefaultDirectory) => Path.Combine(directory, interfaceName + ".sock");

    /// <summary>
    /// Listens at <paramref name="path"/> (its directory created 0755, the socket 0600). A stale
    /// socket file nobody listens on is replaced; a live one is an error, as in wireguard-go.
    /// </summary>
    public static UapiServer Start(string path, IUapiHandler handler, ILogger? logger = null)
    {
        var directory = Path.GetDirectoryName(path)!;
        Directory.CreateDirectory(directory);
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("The UAPI socket is a unix socket with unix permissions.");
        }

        File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        if (File.Exists(path))
        {
            if (IsInUse(path))
            {
                throw new IOException($"UAPI socket {path} is in use by another process.");
            }

            File.Delete(path);
        }

        var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            listener.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            listener.Listen(16);
        }
        catch
        {
            listener.Dispose();
            throw;
        }

        return new UapiServer(path, listener, handler, logger ?? NullLogger.Instance);
    }

    /// <summary>Serves <paramref name="device"/> (its IpcGet/IpcSet) at <paramref name="path"/>.</summary>
    public static UapiServer Start(string path, Device.WgDevice device, ILogger? logger = null)
        => Start(path, HandlerFor(device), logger);

    /// <summary><paramref name="device"/>'s IpcGet/IpcSet as a handler (to wrap, e.g. in <see cref="ReadOnlyUapiHandler"/>).</summary>
    public static IUapiHandler HandlerFor(Device.WgDevice device) => new DeviceHandler(device);

    /// <summary>
    /// Like <see cref="Start(string, IUapiHandler, ILogger?)"/>, for a host that works without the
    /// socket (the agent: `wg show` is a convenience, the tunnel is not): when the path is served by
    /// another live process or cannot be created, logs one warning naming <paramref name="interfaceName"/>
    /// and why, and returns null. /var/run is shared between network namespaces, so several agents with
    /// the same interface name (one per namespace) compete for one path; the first one serves it.
    /// </summary>
    public static UapiServer? TryStart(string path, IUapiHandler handler, string interfaceName, ILogger logger)
    {
        try
        {
            return Start(path, handler, logger);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SocketException or PlatformNotSupportedException)
        {
            var why = IsInUse(path)
                ? $"{path} is served by another process (another {interfaceName} in another network namespace, or modular-wg)"
                : e.Message;
            logger.LogWarning("`wg show {Interface}` is not available: {Reason}; the interface works without it", interfaceName, why);
            return null;
        }
    }

    private sealed class DeviceHandler(Device.WgDevice device) : IUapiHandler
    {
        public void IpcGet(TextWriter output) => device.IpcGet(output);

        public int IpcSet(TextReader input) => device.IpcSet(input);
    }

    /// <summary>True when a process accepts connections on the socket at <paramref name="path"/>.</summary>
    public static bool IsInUse(string path)
    {
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            _ = Task.Run(() => ServeAsync(client));
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using var _ = client;
        await using var stream = new NetworkStream(client, ownsSocket: false);
        using var reader = new UapiLineReader(stream);
        await using var writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n", AutoFlush = false };
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var operation = await reader.ReadLineAsync(_stop.Token);
                if (operation is null)
                {
                    return;
                }

                if (!await HandleAsync(operation, reader, writer))
                {
                    return;
                }
            }
        }
        catch (InvalidDataException e)
        {
            _logger.LogWarning("UAPI: {Reason}; connection closed", e.Message);
            await WriteErrnoSafelyAsync(writer, Einval);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or ObjectDisposedException or SocketException)
        {
            // The client went away or we are stopping: nothing to answer.
        }
    }

    /// <summary>Answers one request; false when the connection must close.</summary>
    private async Task<bool> HandleAsync(string operation, UapiLineReader reader, StreamWriter writer)
    {
        switch (operation)
        {
            case "get=1":
            {
                var terminator = await reader.ReadLineAsync(_stop.Token);
                if (terminator != string.Empty)
                {
                    await WriteErrnoAsync(writer, Einval);
                    return false;
                }

                var body = new StringWriter { NewLine = "\n" };
                int errno;
                await _serialize.WaitAsync(_stop.Token);
                try
                {
                    _handler.IpcGet(body);
                    errno = 0;
                }
                catch (Exception e)
                {
                    _logger.LogError(e, "UAPI get failed");
                    errno = Eio;
                }
                finally
                {
                    _serialize.Release();
                }

                if (errno == 0)
                {
                    await writer.WriteAsync(body.ToString());
                }

                await WriteErrnoAsync(writer, errno);
                return true;
            }

            case "set=1":
            {
                var request = new StringBuilder();
                while (true)
                {
                    var line = await reader.ReadLineAsync(_stop.Token);
                    if (line is null)
                    {
                        // Cut off before the blank line: never apply half a configuration.
                        return false;
                    }

                    if (line.Length == 0)
                    {
                        break;
                    }

                    if (request.Length + line.Length > MaxRequestBytes)
                    {
                        await WriteErrnoAsync(writer, Einval);
                        return false;
                    }

                    request.Append(line).Append('\n');
                }

                int errno;
                await _serialize.WaitAsync(_stop.Token);
                try
                {
                    errno = _handler.IpcSet(new StringReader(request.ToString()));
                }
                catch (Exception e)
                {
                    _logger.LogError(e, "UAPI set failed");
                    errno = Einval;
                }
                finally
                {
                    _serialize.Release();
                }

                // A set's errno goes out negated, as wireguard-go sends it: `wg set` negates it back
                // (errno=-1 is EPERM to `wg`; a positive one reads "Unknown error -1"). A get's stays
                // positive: `wg show` parses it unsigned.
                await WriteErrnoAsync(writer, -errno);
                return true;
            }

            default:
                _logger.LogWarning("UAPI: invalid operation line ({Length} characters)", operation.Length);
                await WriteErrnoAsync(writer, Einval);
                return false;
        }
    }

    private static async Task WriteErrnoAsync(StreamWriter writer, int errno)
    {
        await writer.WriteAsync($"errno={errno}\n\n");
        await writer.FlushAsync();
    }

    private static async Task WriteErrnoSafelyAsync(StreamWriter writer, int errno)
    {
        try
        {
            await WriteErrnoAsync(writer, errno);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
            // The client that sent the bad line is gone: nothing more to tell it.
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync();
        _listener.Dispose();
        await _acceptLoop;
        try
        {
            File.Delete(SocketPath);
        }
        catch (IOException)
        {
        }

        _stop.Dispose();
        _serialize.Dispose();
    }
}
