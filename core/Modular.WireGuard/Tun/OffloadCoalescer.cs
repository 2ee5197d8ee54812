using System.Buffers.Binary;

namespace Modular.WireGuard.Tun;

/// <summary>
/// GRO for writes to a TUN with offloads: consecutive TCP segments of one flow (same
/// addresses, ports, ACK and options, contiguous sequence numbers, equal payload sizes but
/// for a shorter last one) become one super-packet with a virtio header, so the kernel takes
/// many segments in one write. Anything else is written alone. Each merged segment's
/// checksum is verified first, so a bad one is never laundered by the kernel's recompute.
/// </summary>
internal static class OffloadCoalescer
{
    private const byte TcpFlagAck = 0x10;
    private const byte TcpFlagPsh = 0x08;
    private const int MaxIPv4TotalLength = 65535;

    /// <summary>
    /// Starting at packet <paramref name="start"/>, merges as many following packets as can be
    /// coalesced. Returns how many were consumed. If more than one, <paramref name="output"/>
    /// holds the virtio header and super-packet and <paramref name="outputLength"/> its length;
    /// if one, the caller writes that packet alone.
    /// </summary>
    public static int Coalesce(byte[][] packets, int[] sizes, int offset, int start, int count, Span<byte> output, out int outputLength)
    {
        outputLength = 0;
        var first = packets[start].AsSpan(offset, sizes[start]);
        if (!TryParse(first, out var firstInfo) || (first[firstInfo.IpHeaderLength + 13] & TcpFlagPsh) != 0
            || start + 1 >= count || !OffloadChecksum.TransportChecksumValid(first, firstInfo.IpHeaderLength, OffloadChecksum.ProtocolTcp))
        {
            return 1;
        }

        var segmentSize = firstInfo.PayloadLength;
        var headersLength = firstInfo.HeadersLength;
        var expectedSequence = firstInfo.Sequence + (uint)segmentSize;
        var totalLength = first.Length;
        var ipHeaderLength = firstInfo.IpHeaderLength;
        if (output.Length < VirtioNetHeader.Size + MaxIPv4TotalLength)
        {
            return 1;
        }

        var packet = output[VirtioNetHeader.Size..];
        first.CopyTo(packet);
        var merged = 1;
        var lastFlags = first[ipHeaderLength + 13];
        for (var j = start + 1; j < count; j++)
        {
            var next = packets[j].AsSpan(offset, sizes[j]);
            if (!TryParse(next, out var info) || info.HeadersLength != headersLength
                || info.Sequence != expectedSequence || info.PayloadLength > segmentSize
                || totalLength + info.PayloadLength > MaxIPv4TotalLength
                || !SameFlow(first, next, ipHeaderLength, headersLength)
                || !OffloadChecksum.TransportChecksumValid(next, ipHeaderLength, OffloadChecksum.ProtocolTcp))
            {
                break;
            }

            next[headersLength..].CopyTo(packet[totalLength..]);
            totalLength += info.PayloadLength;
            expectedSequence += (uint)info.PayloadLength;
            merged++;
            lastFlags = next[ipHeaderLength + 13];

            // A short segment or a push ends a GRO batch, as in the kernel.
            if (info.PayloadLength < segmentSize || (lastFlags & TcpFlagPsh) != 0)
            {
                break;
            }
        }

        if (merged == 1)
        {
            return 1;
        }

        var super = packet[..totalLength];
        bool isIPv4 = super[0] >> 4 == 4;
        if (isIPv4)
        {
            BinaryPrimitives.WriteUInt16BigEndian(super[2..], (ushort)totalLength);
            OffloadChecksum.FixIPv4Header(super[..ipHeaderLength]);
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(super[4..], (ushort)(totalLength - 40));
        }

        var tcp = super[ipHeaderLength..];
        tcp[13] = (byte)(tcp[13] | (lastFlags & TcpFlagPsh));

        // NEEDS_CSUM: the field holds the folded pseudo-header sum; the kernel finishes it.
        OffloadChecksum.Addresses(super, out var source, out var destination);
        var pseudo = OffloadChecksum.Fold(OffloadChecksum.PseudoHeader(source, destination, OffloadChecksum.ProtocolTcp, tcp.Length));
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], pseudo);

        new VirtioNetHeader(
            VirtioNetHeader.FlagNeedsCsum,
            isIPv4 ? VirtioNetHeader.GsoTcpV4 : VirtioNetHeader.GsoTcpV6,
            (ushort)headersLength,
            (ushort)segmentSize,
            (ushort)ipHeaderLength,
            16).Write(output);
        outputLength = VirtioNetHeader.Size + totalLength;
        return merged;
    }

    private readonly record struct TcpInfo(int IpHeaderLength, int HeadersLength, int PayloadLength, uint Sequence);

    /// <summary>A plain TCP data segment (ACK, maybe PSH; no fragments, no IP options) whose lengths add up.</summary>
    private static bool TryParse(ReadOnlySpan<byte> packet, out TcpInfo info)
    {
        info = default;
        if (packet.Length < 40)
        {
            return false;
        }

        int ipHeaderLength;
        switch (packet[0])
        {
            case 0x45:
                ipHeaderLength = 20;
                if (packet[9] != OffloadChecksum.ProtocolTcp
                    || BinaryPrimitives.ReadUInt16BigEndian(packet[2..]) != packet.Length
                    || (BinaryPrimitives.ReadUInt16BigEndian(packet[6..]) & 0x3FFF) != 0)
                {
                    return false;
                }

                break;
            case >= 0x60 and <= 0x6F:
                ipHeaderLength = 40;
                if (packet.Length < 60 || packet[6] != OffloadChecksum.ProtocolTcp
                    || BinaryPrimitives.ReadUInt16BigEndian(packet[4..]) + 40 != packet.Length)
                {
                    return false;
                }

                break;
            default:
                return false;
        }

        var tcpHeaderLength = (packet[ipHeaderLength + 12] >> 4) * 4;
        var flags = packet[ipHeaderLength + 13];
        var headersLength = ipHeaderLength + tcpHeaderLength;
        if (tcpHeaderLength < 20 || headersLength >= packet.Length || (flags & ~TcpFlagPsh) != TcpFlagAck)
        {
            return false;
        }

        info = new TcpInfo(ipHeaderLength, headersLength, packet.Length - headersLength,
            BinaryPrimitives.ReadUInt32BigEndian(packet[(ipHeaderLength + 4)..]));
        return true;
    }

    /// <summary>Same addresses, ports, ACK number, options and IP fields that GRO must not mix.</summary>
    private static bool SameFlow(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int ipHeaderLength, int headersLength)
    {
        if (ipHeaderLength == 20)
        {
            // TOS, DF, TTL, protocol and both addresses; length, id and checksum differ per segment.
            if (a[1] != b[1] || (a[6] & 0x40) != (b[6] & 0x40) || a[8] != b[8] || !a[12..20].SequenceEqual(b[12..20]))
            {
                return false;
            }
        }
        else if (!a[..4].SequenceEqual(b[..4]) || a[7] != b[7] || !a[8..40].SequenceEqual(b[8..40]))
        {
            return false;
        }

        var ta = a[ipHeaderLength..headersLength];
        var tb = b[ipHeaderLength..headersLength];

        // Ports, ACK number, then options (timestamps) must match; sequence, flags, window and checksum may not.
        return ta[..4].SequenceEqual(tb[..4]) && ta[8..12].SequenceEqual(tb[8..12]) && ta[20..].SequenceEqual(tb[20..]);
    }
}
