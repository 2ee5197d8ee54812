using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;

namespace Modular.Core.MeshDns;

/// <summary>Limits of the listener.</summary>
public sealed record DnsServerOptions
{
    /// <summary>Open TCP connections at most; more are closed at once.</summary>
    public int MaxTcpConnections { get; init; } = 64;

    /// <summary>How long a TCP connection may sit without sending a whole query (RFC 7766 suggests seconds).</summary>
    public TimeSpan TcpIdleTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>
/// The mesh resolver's listener: UDP and TCP on one address and port, answering through a
/// <see cref="DnsResolver"/>. UDP answers from the zone are composed and sent on the receive loop; forwarded
/// queries run on their own (bounded by the forwarder), so a slow upstream never holds up zone answers. TCP
/// takes length-prefixed queries, several per connection, with a bound on connections and an idle timeout.
/// Nothing a client sends can end the loops: errors are counted, logged at debug, and the loops go on.
/// </summary>
public sealed class DnsServer : IAsyncDisposable
{
    private const int MaxMessage = ushort.MaxValue;

    private readonly DnsResolver _resolver;
    private readonly DnsServerOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Socket _udp;
    private readonly Socket _tcp;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _udpLoop;
    private readonly Task _tcpLoop;
    private int _tcpConnections;
    private long _receiveErrors;

    private DnsServer(DnsResolver resolver, Socket udp, Socket tcp, DnsServerOptions options, TimeProvider time, ILogger logger)
    {
        _resolver = resolver;
        _udp = udp;
        _tcp = tcp;
        _options = options;
        _time = time;
        _logger = logger;
        LocalEndPoint = (IPEndPoint)udp.LocalEndPoint!;
        _udpLoop = Task.Run(UdpLoopAsync);
        _tcpLoop = Task.Run(TcpLoopAsync);
    }

    /// <summary>Where it listens (UDP and TCP share the port).</summary>
    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Receive and send errors seen (a stray ICMP error, a client gone): counted, never fatal.</summary>
    public long ReceiveErrors => Interlocked.Read(ref _receiveErrors);

    /// <summary>Binds UDP and TCP on <paramref name="endpoint"/> (port 0: any free port, the same for both) and starts answering.</summary>
    /// <exception cref="SocketException">The address or port cannot be bound.</exception>
    public static DnsServer Start(DnsResolver resolver, IPEndPoint endpoint, ILogger logger, DnsServerOptions? options = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var udp = new Socket(endpoint.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        Socket? tcp = null;
        try
        {
            // Room for a burst while the loop is busy (the kernel caps it at net.core.rmem_max).
            udp.ReceiveBufferSize = 1 << 20;
            udp.Bind(endpoint);
            var bound = (IPEndPoint)udp.LocalEndPoint!;
            tcp = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            tcp.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            tcp.Bind(bound);
            tcp.Listen(32);
            return new DnsServer(resolver, udp, tcp, options ?? new DnsServerOptions(), time ?? TimeProvider.System, logger);
        }
        catch
        {
            udp.Dispose();
            tcp?.Dispose();
            throw;
        }
    }

    private async Task UdpLoopAsync()
    {
        var buffer = GC.AllocateUninitializedArray<byte>(MaxMessage);
        var response = GC.AllocateUninitializedArray<byte>(DnsConstants.EdnsUdpLimit);
        EndPoint any = new IPEndPoint(LocalEndPoint.AddressFamily == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any, 0);
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await _udp.ReceiveFromAsync(buffer, SocketFlags.None, any, token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException e)
            {
                Interlocked.Increment(ref _receiveErrors);
                _logger.LogDebug("DNS UDP receive: {Problem}", e.SocketErrorCode);
                continue;
            }

            try
            {
                var query = buffer.AsSpan(0, received.ReceivedBytes);
                switch (_resolver.Answer(query, response, out var written, out var group))
                {
                    case DnsOutcome.Answered:
                        await _udp.SendToAsync(response.AsMemory(0, written), SocketFlags.None, received.RemoteEndPoint, token);
                        break;
                    case DnsOutcome.Forward:
                        var copy = ArrayPool<byte>.Shared.Rent(received.ReceivedBytes);
                        query.CopyTo(copy);
                        _ = ForwardUdpAsync(copy, received.ReceivedBytes, group!, received.RemoteEndPoint, token);
                        break;
                }
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                Interlocked.Increment(ref _receiveErrors);
                _logger.LogDebug("DNS UDP send: {Problem}", e.Message);
            }
        }
    }

    private async Task ForwardUdpAsync(byte[] query, int length, DnsUpstreamGroup group, EndPoint client, CancellationToken cancellationToken)
    {
        var response = ArrayPool<byte>.Shared.Rent(MaxMessage);
        try
        {
            var written = await _resolver.ForwardAsync(query.AsMemory(0, length), group, response.AsMemory(0, MaxMessage), overTcp: false, cancellationToken);
            if (written > 0)
            {
                await _udp.SendToAsync(response.AsMemory(0, written), SocketFlags.None, client, cancellationToken);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
            _logger.LogDebug("DNS forward for {Client}: {Problem}", client, e.Message);
        }
        catch (Exception e)
        {
            _logger.LogWarning(e, "DNS: forwarding a query failed unexpectedly");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(query);
            ArrayPool<byte>.Shared.Return(response);
        }
    }

    private async Task TcpLoopAsync()
    {
        var token = _stop.Token;
        var connections = new List<Task>();
        while (!token.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _tcp.AcceptAsync(token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException e)
            {
                Interlocked.Increment(ref _receiveErrors);
                _logger.LogDebug("DNS TCP accept: {Problem}", e.SocketErrorCode);
                continue;
            }

            if (Interlocked.Increment(ref _tcpConnections) > _options.MaxTcpConnections)
            {
                Interlocked.Decrement(ref _tcpConnections);
                client.Dispose();
                continue;
            }

            connections.RemoveAll(t => t.IsCompleted);
            connections.Add(ServeTcpAsync(client, token));
        }

        await Task.WhenAll(connections);
    }

    private async Task ServeTcpAsync(Socket client, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxMessage + 2);
        var response = ArrayPool<byte>.Shared.Rent(MaxMessage + 2);
        try
        {
            using (client)
            {
                client.NoDelay = true;
                while (!cancellationToken.IsCancellationRequested)
                {
                    using var idle = new CancellationTokenSource(_options.TcpIdleTimeout, _time);
                    using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, idle.Token);
                    if (!await DnsTcp.ReadExactlyAsync(client, buffer.AsMemory(0, 2), linked.Token))
                    {
                        return;
                    }

                    var length = BinaryPrimitives.ReadUInt16BigEndian(buffer);
                    if (length < DnsConstants.HeaderLength || !await DnsTcp.ReadExactlyAsync(client, buffer.AsMemory(0, length), linked.Token))
                    {
                        return;
                    }

                    var written = await _resolver.ResolveAsync(buffer.AsMemory(0, length), response.AsMemory(2, MaxMessage), overTcp: true, linked.Token);
                    if (written <= 0)
                    {
                        return; // not a query: a TCP client sending responses has nothing more to say
                    }

                    BinaryPrimitives.WriteUInt16BigEndian(response, (ushort)written);
                    await client.SendAsync(response.AsMemory(0, written + 2), SocketFlags.None, linked.Token);
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Idle timeout, shutdown or a client gone: the connection just ends.
        }
        catch (Exception e)
        {
            _logger.LogWarning(e, "DNS: a TCP connection failed unexpectedly");
        }
        finally
        {
            Interlocked.Decrement(ref _tcpConnections);
            ArrayPool<byte>.Shared.Return(buffer);
            ArrayPool<byte>.Shared.Return(response);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _udp.Dispose();
        _tcp.Dispose();
        try
        {
            await Task.WhenAll(_udpLoop, _tcpLoop);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
        {
        }

        _stop.Dispose();
    }
}
