using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// Sends UDP datagrams to WireGuard on loopback with a chosen IPv4 source address and port,
/// through a raw socket that writes its own IP header. Used by the udp and ebpf proxies' RedirectAs.
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
        Destination = destination;
        WriteHeaders(source, destination);
    }

    /// <summary>
    /// A sender of datagrams from <paramref name="source"/> to WireGuard's <paramref name="wireGuardPort"/> at the address
    /// WireGuard really receives <paramref name="source"/>'s packets on: the local address the routing table picks
    /// towards it (<see cref="LocalAddressTowards"/>), not 127.0.0.1. WireGuard keeps the address a packet arrived on
    /// as the source of its replies (sticky sockets: wireguard-go sends with it and does not retry without it), and
    /// 127.0.0.1 cannot leave lo: every reply to the peer's direct endpoint would fail. Throws
    /// <see cref="SocketException"/> (no raw socket without CAP_NET_RAW; no route) or <see cref="NotSupportedException"/> (IPv6).
    /// </summary>
    public static SpoofingSender Create(IPEndPoint source, int wireGuardPort)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.AddressFamily != AddressFamily.InterNetwork)
        {
            throw new NotSupportedException("source redirection supports IPv4 endpoints only");
        }

        return Create(source, new IPEndPoint(LocalAddressTowards(source.Address), wireGuardPort));
    }

    /// <summary>A sender from <paramref name="source"/> to exactly <paramref name="destination"/>.</summary>
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

    /// <summary>The local address a datagram to <paramref name="remote"/> would leave from (a connected UDP socket: nothing is sent).</summary>
    public static IPAddress LocalAddressTowards(IPAddress remote)
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        probe.Connect(new IPEndPoint(remote, 9));
        return ((IPEndPoint)probe.LocalEndPoint!).Address;
    }

    /// <summary>Where the datagrams go.</summary>
    public IPEndPoint Destination { get; private init; } = null!;

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
