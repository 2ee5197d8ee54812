using System.Buffers.Binary;

namespace Modular.WireGuard.Tun;

/// <summary>
/// struct virtio_net_hdr (10 bytes, packed, host byte order for a legacy TUN): what the kernel
/// puts before each packet read from, and expects before each packet written to, a TUN opened
/// with IFF_VNET_HDR.
/// </summary>
internal readonly record struct VirtioNetHeader(byte Flags, byte GsoType, ushort HeaderLength, ushort GsoSize, ushort CsumStart, ushort CsumOffset)
{
    public const int Size = 10;

    public const byte FlagNeedsCsum = 1;
    public const byte GsoNone = 0;
    public const byte GsoTcpV4 = 1;
    public const byte GsoUdp = 3;
    public const byte GsoTcpV6 = 4;
    public const byte GsoUdpL4 = 5;
    public const byte GsoEcn = 0x80;

    public static VirtioNetHeader Read(ReadOnlySpan<byte> source) => new(
        source[0],
        source[1],
        BinaryPrimitives.ReadUInt16LittleEndian(source[2..]),
        BinaryPrimitives.ReadUInt16LittleEndian(source[4..]),
        BinaryPrimitives.ReadUInt16LittleEndian(source[6..]),
        BinaryPrimitives.ReadUInt16LittleEndian(source[8..]));

    public void Write(Span<byte> destination)
    {
        destination[0] = Flags;
        destination[1] = GsoType;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[2..], HeaderLength);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[4..], GsoSize);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], CsumStart);
        BinaryPrimitives.WriteUInt16LittleEndian(destination[8..], CsumOffset);
    }
}
