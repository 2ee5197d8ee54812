using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Server.Hosting;

/// <summary>Small helpers for the UDP services' hot loops.</summary>
internal static class UdpEndpoint
{
    /// <summary>A UDP socket bound to <paramref name="listen"/>; dual-stack when it is an IPv6 wildcard.</summary>
    /// <param name="component">Who listens (relay, stun): named in the <see cref="ListenException"/> when the address is taken.</param>
    public static Socket Bind(string component, IPEndPoint listen, int bufferBytes)
    {
        var socket = new Socket(listen.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            if (listen.AddressFamily == AddressFamily.InterNetworkV6 && listen.Address.Equals(IPAddress.IPv6Any))
            {
                socket.DualMode = true;
            }

            socket.ReceiveBufferSize = bufferBytes;
            socket.SendBufferSize = bufferBytes;
            socket.Bind(listen);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new ListenException(component, listen.ToString(), e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Reads port and address bytes out of a raw Linux sockaddr without allocating.</summary>
    public static bool TryRead(SocketAddress address, Span<byte> addressBytes, out int addressLength, out int port)
    {
        var raw = address.Buffer.Span;
        port = BinaryPrimitives.ReadUInt16BigEndian(raw[2..]);
        if (address.Family == AddressFamily.InterNetwork)
        {
            raw.Slice(4, 4).CopyTo(addressBytes);
            addressLength = 4;
            return true;
        }

        if (address.Family == AddressFamily.InterNetworkV6 && address.Size >= 24)
        {
            raw.Slice(8, 16).CopyTo(addressBytes);
            addressLength = 16;
            return true;
        }

        addressLength = 0;
        return false;
    }

    public static SocketAddress Clone(SocketAddress address)
    {
        var copy = new SocketAddress(address.Family, address.Size);
        address.Buffer.Span[..address.Size].CopyTo(copy.Buffer.Span);
        return copy;
    }
}
