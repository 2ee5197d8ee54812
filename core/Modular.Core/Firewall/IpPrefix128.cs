using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Core.Firewall;

/// <summary>An address prefix on the firewall's 128-bit address space (IPv4 mapped into ::ffff:0:0/96).</summary>
public readonly record struct IpPrefix128(UInt128 Address, int Length)
{
    public static UInt128 ToUInt128(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            address.TryWriteBytes(bytes[12..], out _);
            return new UInt128(0, 0x0000_FFFF_0000_0000UL | BinaryPrimitives.ReadUInt32BigEndian(bytes[12..]));
        }

        if (address.IsIPv4MappedToIPv6)
        {
            return ToUInt128(address.MapToIPv4());
        }

        address.TryWriteBytes(bytes, out _);
        return BinaryPrimitives.ReadUInt128BigEndian(bytes);
    }

    public static IPAddress ToAddress(UInt128 address)
    {
        if (address >> 32 == 0xFFFF)
        {
            Span<byte> v4 = stackalloc byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(v4, (uint)address);
            return new IPAddress(v4);
        }

        Span<byte> bytes = stackalloc byte[16];
        BinaryPrimitives.WriteUInt128BigEndian(bytes, address);
        return new IPAddress(bytes);
    }

    /// <summary>Parses "a.b.c.d", "a.b.c.d/n", "v6" or "v6/n".</summary>
    public static bool TryParse(string text, out IpPrefix128 prefix)
    {
        prefix = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        var slash = text.IndexOf('/', StringComparison.Ordinal);
        if (!IPAddress.TryParse(slash < 0 ? text : text[..slash], out var address))
        {
            return false;
        }

        var isV4 = address.AddressFamily == AddressFamily.InterNetwork;
        var maxLength = isV4 ? 32 : 128;
        var length = maxLength;
        if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out length) || length > maxLength))
        {
            return false;
        }

        var bits = isV4 ? length + 96 : length;
        prefix = new IpPrefix128(ToUInt128(address) & Mask(bits), bits);
        return true;
    }

    public static UInt128 Mask(int length) => length == 0 ? UInt128.Zero : UInt128.MaxValue << (128 - length);

    public bool Contains(UInt128 address) => (address & Mask(Length)) == Address;

    public override string ToString()
    {
        var address = ToAddress(Address);
        return address.AddressFamily == AddressFamily.InterNetwork ? $"{address}/{Length - 96}" : $"{address}/{Length}";
    }
}
