using System.Net;
using System.Net.Sockets;

namespace Modular.Plugins.Rosenpass;

/// <summary>Datagrams of the exchange (UDP inside the tunnel in the agent; in memory in tests).</summary>
internal interface IRosenpassTransport : IDisposable
{
    ValueTask SendAsync(ReadOnlyMemory<byte> datagram, IPEndPoint to, CancellationToken cancellationToken);

    ValueTask<(int Length, IPEndPoint From)> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);
}

/// <summary>A UDP socket on this agent's overlay address: only peers through the tunnel reach it.</summary>
internal sealed class UdpRosenpassTransport : IRosenpassTransport
{
    private readonly Socket _socket;

    public UdpRosenpassTransport(IPEndPoint listen)
    {
        _socket = new Socket(listen.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            _socket.Bind(listen);
        }
        catch
        {
            _socket.Dispose();
            throw;
        }
    }

    /// <summary>The bound address and port (the port the system chose when asked for 0, as tests do).</summary>
    public IPEndPoint LocalEndPoint => (IPEndPoint)_socket.LocalEndPoint!;

    public async ValueTask SendAsync(ReadOnlyMemory<byte> datagram, IPEndPoint to, CancellationToken cancellationToken)
        => await _socket.SendToAsync(datagram, SocketFlags.None, to, cancellationToken);

    public async ValueTask<(int Length, IPEndPoint From)> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var any = new IPEndPoint(_socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        var result = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, any, cancellationToken);
        return (result.ReceivedBytes, (IPEndPoint)result.RemoteEndPoint);
    }

    public void Dispose() => _socket.Dispose();
}
