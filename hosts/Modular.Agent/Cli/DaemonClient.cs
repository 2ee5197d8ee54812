using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using Modular.Agent.Daemon;

namespace Modular.Agent.Cli;

/// <summary>No daemon answers at the socket; the message says so and what to do.</summary>
internal sealed class DaemonUnavailableException : Exception
{
    public DaemonUnavailableException()
    {
    }

    public DaemonUnavailableException(string message)
        : base(message)
    {
    }

    public DaemonUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public static DaemonUnavailableException At(string socketPath, Exception? inner = null)
        => new($"no modular daemon at {socketPath}: is `modular up` running?", inner!);
}

/// <summary>The CLI's end of the daemon socket.</summary>
internal sealed class DaemonClient : IDisposable
{
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);

    private readonly GrpcChannel _channel;

    private DaemonClient(string socketPath, GrpcChannel channel)
    {
        SocketPath = socketPath;
        _channel = channel;
        Daemon = new Protocol.Daemon.DaemonClient(channel);
    }

    public string SocketPath { get; }

    public Protocol.Daemon.DaemonClient Daemon { get; }

    /// <summary>Connects lazily; throws <see cref="DaemonUnavailableException"/> at once when nothing listens.</summary>
    public static DaemonClient Connect(string socketPath)
    {
        var fullPath = Path.GetFullPath(socketPath);
        using (var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            try
            {
                probe.Connect(new UnixDomainSocketEndPoint(fullPath));
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.AccessDenied)
            {
                throw new DaemonUnavailableException(
                    $"permission denied on {fullPath}: run as root or as a member of the socket's group", e);
            }
            catch (Exception e) when (e is SocketException or ArgumentException)
            {
                throw DaemonUnavailableException.At(fullPath, e);
            }
        }

        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(fullPath), cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        var channel = GrpcChannel.ForAddress("http://modular.daemon", new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            // A status with many thousand peers is bigger than gRPC's 4 MB default.
            MaxReceiveMessageSize = 256 * 1024 * 1024,
        });
        return new DaemonClient(fullPath, channel);
    }

    public static CallOptions Call(CancellationToken cancellationToken)
        => new(deadline: DateTime.UtcNow.Add(CallTimeout), cancellationToken: cancellationToken);

    /// <summary>Runs one call, turning "nobody there" into <see cref="DaemonUnavailableException"/>.</summary>
    public async Task<T> InvokeAsync<T>(Func<Protocol.Daemon.DaemonClient, CallOptions, AsyncUnaryCall<T>> call, CancellationToken cancellationToken)
    {
        try
        {
            return await call(Daemon, Call(cancellationToken));
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable)
        {
            throw DaemonUnavailableException.At(SocketPath, e);
        }
    }

    public void Dispose() => _channel.Dispose();
}
