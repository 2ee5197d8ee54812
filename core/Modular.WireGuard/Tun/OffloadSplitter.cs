using System.Buffers.Binary;

namespace Modular.WireGuard.Tun;

/// <summary>
/// Turns what a TUN with offloads hands us into plain IP packets: a TSO super-packet
/// (virtio gso_type TCPV4/TCPV6) is cut into MSS-sized TCP segments with their own IP and
/// TCP headers and checksums; a single packet with a partial checksum (NEEDS_CSUM) gets
/// its checksum completed. Malformed input yields no packets, never an exception.
/// </summary>
internal static class OffloadSplitter
{
    private const int TcpFlagFin = 0x01;
    private const int TcpFlagPsh = 0x08;
    private const int TcpFlagCwr = 0x80;

    /// <summary>
    /// How many segments <paramref name="packet"/> becomes (0 if it is malformed or of an
    /// offload type we never enable). Sets <paramref name="layout"/> for <see cref="WriteSegment"/>.
    /// </summary>
    public static int Plan(ReadOnlySpan<byte> packet, in VirtioNetHeader header, out SegmentLayout layout)
    {
        layout = default;
        if (packet.Length < 20)
        {
            return 0;
        }

        var version = packet[0] >> 4;
        var gsoType = header.GsoType & ~VirtioNetHeader.GsoEcn;
        if (gsoType == VirtioNetHeader.GsoNone)
        {
            layout = new SegmentLayout(0, 0, packet.Length, 0, version);
            return version is 4 or 6 ? 1 : 0;
        }

        if (gsoType is not (VirtioNetHeader.GsoTcpV4 or VirtioNetHeader.GsoTcpV6) || header.GsoSize == 0)
        {
            return 0;
        }

        int ipHeaderLength;
        if (version == 4 && gsoType == VirtioNetHeader.GsoTcpV4)
        {
            ipHeaderLength = (packet[0] & 0x0F) * 4;
            if (ipHeaderLength < 20 || packet[9] != OffloadChecksum.ProtocolTcp)
            {
                return 0;
            }
        }
        else if (version == 6 && gsoType == VirtioNetHeader.GsoTcpV6)
        {
            // The kernel tells us where TCP starts; extension headers sit before it.
            ipHeaderLength = header.CsumStart;
            if (ipHeaderLength < 40)
            {
                return 0;
            }
        }
        else
        {
            return 0;
        }

        if (packet.Length < ipHeaderLength + 20)
        {
            return 0;
        }

        var tcpHeaderLength = (packet[ipHeaderLength + 12] >> 4) * 4;
        var headersLength = ipHeaderLength + tcpHeaderLength;
        if (tcpHeaderLength < 20 || packet.Length < headersLength)
        {
            return 0;
        }

        var payload = packet.Length - headersLength;
        var count = payload == 0 ? 1 : (payload + header.GsoSize - 1) / header.GsoSize;
        layout = new SegmentLayout(ipHeaderLength, headersLength, header.GsoSize, count, version);
        return count;
    }

    /// <summary>
    /// Writes segment <paramref name="index"/> of a planned packet into <paramref name="destination"/>;
    /// returns its length (0 when <paramref name="destination"/> is too small: the segment is dropped).
    /// For a non-GSO packet (index 0) the checksum is completed if the kernel asked.
    /// </summary>
    public static int WriteSegment(ReadOnlySpan<byte> packet, in VirtioNetHeader header, in SegmentLayout layout, int index, Span<byte> destination)
    {
        if (layout.SegmentCount == 0)
        {
            if (destination.Length < packet.Length)
            {
                return 0;
            }

            packet.CopyTo(destination);
            var whole = destination[..packet.Length];
            if ((header.Flags & VirtioNetHeader.FlagNeedsCsum) != 0)
            {
                CompletePartialChecksum(whole, header.CsumStart, header.CsumOffset);
            }

            return packet.Length;
        }

        var headersLength = layout.HeadersLength;
        var payloadStart = headersLength + (index * layout.SegmentSize);
        var payloadLength = Math.Min(layout.SegmentSize, packet.Length - payloadStart);
        if (payloadLength < 0)
        {
            payloadLength = 0;
        }

        var length = headersLength + payloadLength;
        if (destination.Length < length)
        {
            return 0;
        }

        packet[..headersLength].CopyTo(destination);
        packet.Slice(payloadStart, payloadLength).CopyTo(destination[headersLength..]);
        var segment = destination[..length];
        var ipHeaderLength = layout.IpHeaderLength;

        if (layout.Version == 4)
        {
            BinaryPrimitives.WriteUInt16BigEndian(segment[2..], (ushort)length);
            var id = BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);
            BinaryPrimitives.WriteUInt16BigEndian(segment[4..], (ushort)(id + index));
            OffloadChecksum.FixIPv4Header(segment[..ipHeaderLength]);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(segment[4..], (ushort)(length - 40));
        }

        var tcp = segment[ipHeaderLength..];
        var sequence = BinaryPrimitives.ReadUInt32BigEndian(packet[(ipHeaderLength + 4)..]);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], sequence + (uint)(index * layout.SegmentSize));
        var flags = tcp[13];
        if (index != layout.SegmentCount - 1)
        {
            flags = (byte)(flags & ~(TcpFlagFin | TcpFlagPsh));
        }

        if (index != 0)
        {
            flags = (byte)(flags & ~TcpFlagCwr);
        }

        tcp[13] = flags;
        tcp[16] = 0;
        tcp[17] = 0;
        OffloadChecksum.Addresses(segment, out var source, out var destinationAddress);
        var sum = OffloadChecksum.Add(tcp, OffloadChecksum.PseudoHeader(source, destinationAddress, OffloadChecksum.ProtocolTcp, tcp.Length));
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], OffloadChecksum.Finish(sum));
        return length;
    }

    /// <summary>The field at start+offset already holds the pseudo-header sum; sum from start and store the complement.</summary>
    private static void CompletePartialChecksum(Span<byte> packet, int start, int offset)
    {
        if (start + offset + 2 > packet.Length)
        {
            return;
        }

        var checksum = OffloadChecksum.Finish(OffloadChecksum.Add(packet[start..], 0));

        // UDP (checksum at offset 6) sends a computed zero as 0xFFFF: zero means "no checksum".
        if (checksum == 0 && offset == 6)
        {
            checksum = 0xFFFF;
        }

        BinaryPrimitives.WriteUInt16BigEndian(packet[(start + offset)..], checksum);
    }
}

/// <summary>Where headers end and how a planned super-packet is cut.</summary>
internal readonly record struct SegmentLayout(int IpHeaderLength, int HeadersLength, int SegmentSize, int SegmentCount, int Version);
