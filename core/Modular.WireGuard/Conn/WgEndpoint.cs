using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.WireGuard.Conn;

/// <summary>
/// A UDP endpoint held by value (IPv4 stored IPv4-mapped in 16 bytes), so the packet path
/// can record where each datagram came from without allocating an <see cref="IPEndPoint"/>.
/// </summary>
public readonly record struct WgEndpoint(UInt128 Address, ushort Port)
{
    private static readonly UInt128 V4MappedPrefix = (UInt128)0xFFFF << 32;
    private static readonly UInt128 V4MappedMask = ~(UInt128)0xFFFF_FFFF;

    public bool IsIPv4 => (Address & V4MappedMask) == V4MappedPrefix;

    public bool IsEmpty => Address == UInt128.Zero && Port == 0;

    public static WgEndpoint FromIPEndPoint(IPEndPoint endpoint)
    {
        var ip = endpoint.Address;
        Span<byte> bytes = stackalloc byte[16];
        if (ip.AddressFamily == AddressFamily.InterNetwork)
        {
            ip = ip.MapToIPv6();
        }

        ip.TryWriteBytes(bytes, out _);
        return new WgEndpoint(BinaryPrimitives.ReadUInt128BigEndian(bytes), (ushort)endpoint.Port);
    }

    /// <summary>From an IPv4 address in network byte order.</summary>
    public static WgEndpoint FromIPv4(ReadOnlySpan<byte> address4, ushort port)
        => new(V4MappedPrefix | BinaryPrimitives.ReadUInt32BigEndian(address4), port);

    /// <summary>From a 16-byte IPv6 address in network byte order.</summary>
    public static WgEndpoint FromIPv6(ReadOnlySpan<byte> address16, ushort port)
        => new(BinaryPrimitives.ReadUInt128BigEndian(address16), port);

    /// <summary>Writes the address in network byte order: 4 bytes for IPv4, else 16. Returns the length.</summary>
    public int WriteAddress(Span<byte> destination)
    {
        if (IsIPv4)
        {
            BinaryPrimitives.WriteUInt32BigEndian(destination, (uint)(Address & 0xFFFF_FFFF));
            return 4;
        }

        BinaryPrimitives.WriteUInt128BigEndian(destination, Address);
        return 16;
    }

    public IPEndPoint ToIPEndPoint()
    {
        Span<byte> bytes = stackalloc byte[16];
        var length = WriteAddress(bytes);
        return new IPEndPoint(new IPAddress(bytes[..length]), Port);
    }

    public override string ToString() => IsEmpty ? "(none)" : ToIPEndPoint().ToString();
}
