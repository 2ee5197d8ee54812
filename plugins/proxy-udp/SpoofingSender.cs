using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// Sends UDP datagrams to WireGuard on loopback with a chosen IPv4 source address and port,
/// through a raw socket that writes its own IP header. Used by <see cref="UdpProxy.RedirectAs"/>.
/// One sender thread at a time (the proxy's relay loop); the packet buffer is reused.
/// </summary>
internal sealed class SpoofingSender : IDisposable
{
    private const int IpHeaderLength = 20;
    private const int UdpHeaderLength = 8;

    private readonly Socket _socket;
    private readonly SocketAddress _destination;
    private readonly byte[] _packet = new byte[IpHeaderLength + UdpHeaderLength + 65535];

    private SpoofingSender(Socket socket, IPEndPoint source, IPEndPoint destination)
    {
        _socket = socket;
        _destination = destination.Serialize();
        WriteHeaders(source, destination);
    }

    public static SpoofingSender Create(IPEndPoint source, IPEndPoint destination)
    {
        if (source.AddressFamily != AddressFamily.InterNetwork || destination.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new NotSupportedException("source redirection supports IPv4 endpoints only");
        }

        // IPPROTO_RAW implies IP_HDRINCL: the kernel takes our header, filling in the checksum and total length.
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Raw);
        return new SpoofingSender(socket, source, destination);
    }

    public void Send(ReadOnlySpan<byte> payload)
    {
        var total = IpHeaderLength + UdpHeaderLength + payload.Length;
        var packet = _packet.AsSpan(0, total);
        BinaryPrimitives.WriteUInt16BigEndian(packet[2..], (ushort)total);
        BinaryPrimitives.WriteUInt16BigEndian(packet[(IpHeaderLength + 4)..], (ushort)(UdpHeaderLength + payload.Length));
        payload.CopyTo(packet[(IpHeaderLength + UdpHeaderLength)..]);
        _socket.SendTo(packet, SocketFlags.None, _destination);
    }

    public void Dispose() => _socket.Dispose();

    private void WriteHeaders(IPEndPoint source, IPEndPoint destination)
    {
        var ip = _packet.AsSpan(0, IpHeaderLength);
        ip[0] = 0x45; // version 4, header 5 words
        ip[1] = 0;
        ip[6] = 0x40; // don't fragment
        ip[8] = 64; // TTL
        ip[9] = (byte)ProtocolType.Udp;
        source.Address.TryWriteBytes(ip[12..16], out _);
        destination.Address.TryWriteBytes(ip[16..20], out _);

        var udp = _packet.AsSpan(IpHeaderLength, UdpHeaderLength);
        BinaryPrimitives.WriteUInt16BigEndian(udp, (ushort)source.Port);
        BinaryPrimitives.WriteUInt16BigEndian(udp[2..], (ushort)destination.Port);
        BinaryPrimitives.WriteUInt16BigEndian(udp[6..], 0); // checksum 0: none, allowed for UDP over IPv4
    }
}
