using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// Joins one relayed connection to WireGuard through a loopback UDP socket: WireGuard is told
/// the socket's address (<see cref="RelayedProxy.EndpointAddr"/>) is the peer's endpoint, datagrams from the
/// relay are sent from that socket to WireGuard's listen port, and whatever WireGuard sends to
/// it goes back over the relay. The socket is connected to WireGuard's port, so the kernel
/// drops datagrams from anyone else. The lifecycle is <see cref="RelayedProxy"/>'s.
/// </summary>
public sealed class UdpProxy : RelayedProxy
{
    private const int SocketBufferBytes = 1 << 20;

    private readonly IPEndPoint _wireGuard;
    private Socket? _socket;
    private volatile SpoofingSender? _redirect;
    private long _droppedToWireGuard;

    /// <param name="wireGuardPort">The UDP port WireGuard listens on (on 127.0.0.1).</param>
    public UdpProxy(int wireGuardPort, ILogger logger)
        : base(logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(wireGuardPort, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(wireGuardPort, 65535);
        _wireGuard = new IPEndPoint(IPAddress.Loopback, wireGuardPort);
    }

    public override string Kind => "udp";

    /// <summary>Datagrams from the relay that could not be handed to WireGuard (e.g. nothing listened).</summary>
    public long DroppedToWireGuard => Interlocked.Read(ref _droppedToWireGuard);

    protected override IPEndPoint AttachToWireGuard()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            // Bursts from WireGuard (a batch of sealed packets) must not overflow the default buffers;
            // the kernel caps these at net.core.[rw]mem_max.
            socket.ReceiveBufferSize = SocketBufferBytes;
            socket.SendBufferSize = SocketBufferBytes;
            socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            socket.Connect(_wireGuard);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        _socket = socket;
        return (IPEndPoint)socket.LocalEndPoint!;
    }

    protected override void DetachFromWireGuard() => _socket?.Dispose();

    protected override void OnLoopsStopped() => Interlocked.Exchange(ref _redirect, null)?.Dispose();

    /// <summary>
    /// From now on datagrams from the relay reach WireGuard with <paramref name="endpoint"/> as
    /// their source, so switching from a direct path to the relay is not a roam. That needs a
    /// raw socket (root or CAP_NET_RAW) and an IPv4 endpoint; otherwise it is logged and the
    /// proxy keeps sending from <see cref="RelayedProxy.EndpointAddr"/>. Passing that endpoint
    /// returns to the normal path.
    /// </summary>
    protected override void ApplyRedirect(IPEndPoint endpoint)
    {
        SpoofingSender? next = null;
        if (!endpoint.Equals(EndpointAddr))
        {
            try
            {
                next = SpoofingSender.Create(endpoint, _wireGuard);
            }
            catch (Exception ex) when (ex is SocketException or NotSupportedException)
            {
                Logger.LogWarning("UDP proxy for {Peer} cannot send as {Endpoint} ({Reason}); WireGuard will see {Own} instead",
                    RemotePeer.ToShortString(), endpoint, ex.Message, EndpointAddr);
            }
        }

        Interlocked.Exchange(ref _redirect, next)?.Dispose();
        if (IsClosed)
        {
            // A close that ran meanwhile has already released its sender; do not leak this one.
            Interlocked.Exchange(ref _redirect, null)?.Dispose();
        }
    }

    // Pooled so a send that completes asynchronously costs no allocation per packet.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    protected override async ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        try
        {
            if (_redirect is { } redirect)
            {
                redirect.Send(datagram.Span);
            }
            else
            {
                try
                {
                    await _socket!.SendAsync(datagram, SocketFlags.None, cancellationToken);
                }
                catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionRefused)
                {
                    // The connected socket reports an EARLIER datagram's ICMP port unreachable on the next call, and
                    // that call sends nothing; the receive loop usually takes the error first, but not when it lags.
                    // The error is cleared now, so this datagram gets its own try.
                    await _socket!.SendAsync(datagram, SocketFlags.None, cancellationToken);
                }
            }
        }
        catch (SocketException)
        {
            // WireGuard not listening (ICMP port unreachable): drop like a lossy path would.
            Interlocked.Increment(ref _droppedToWireGuard);
        }
    }

    protected override async Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        var socket = _socket!;
        var buffer = ArrayPool<byte>.Shared.Rent(RelayedConnectionPump.MaxDatagram);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                int received;
                try
                {
                    received = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
                }
                catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
                {
                    // The ICMP error of an earlier send to a WireGuard that was not listening.
                    continue;
                }
                catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
                {
                    return;
                }

                if (!await SendToRelayAsync(connection, buffer.AsMemory(0, received), cancellationToken))
                {
                    return;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
