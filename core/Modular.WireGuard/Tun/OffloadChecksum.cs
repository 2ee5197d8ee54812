using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace Modular.WireGuard.Tun;

/// <summary>
/// The Internet checksum (RFC 1071) for the offload paths. Sums run in native word order
/// (64 bits at a time, end-around carry) and are converted once at the end, because the
/// one's-complement sum is byte-order independent up to that final swap.
/// </summary>
internal static class OffloadChecksum
{
    public const byte ProtocolTcp = 6;
    public const byte ProtocolUdp = 17;

    /// <summary>Adds <paramref name="data"/> to a running sum.</summary>
    public static ulong Add(ReadOnlySpan<byte> data, ulong sum)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var word in words)
        {
            sum += word;
            if (sum < word)
            {
                sum++;
            }
        }

        var tail = data[(words.Length * 8)..];
        ulong last = 0;
        for (var i = 0; i < tail.Length; i++)
        {
            // Native-order placement keeps the final swap valid for the odd bytes too.
            last |= (ulong)tail[i] << (BitConverter.IsLittleEndian ? i * 8 : 56 - (i * 8));
        }

        sum += last;
        if (sum < last)
        {
            sum++;
        }

        return sum;
    }

    /// <summary>Folds a running sum to 16 bits in network order (not complemented).</summary>
    public static ushort Fold(ulong sum)
    {
        var folded = (sum & 0xFFFF_FFFF) + (sum >> 32);
        folded = (folded & 0xFFFF) + (folded >> 16);
        folded = (folded & 0xFFFF) + (folded >> 16);
        folded = (folded & 0xFFFF) + (folded >> 16);
        var native = (ushort)folded;
        return BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(native) : native;
    }

    /// <summary>The sum of the TCP/UDP pseudo-header for IPv4 or IPv6 (by address length).</summary>
    public static ulong PseudoHeader(ReadOnlySpan<byte> source, ReadOnlySpan<byte> destination, byte protocol, int transportLength)
    {
        Span<byte> tail = stackalloc byte[8];
        var sum = Add(destination, Add(source, 0));
        BinaryPrimitives.WriteUInt32BigEndian(tail, (uint)transportLength);
        BinaryPrimitives.WriteUInt32BigEndian(tail[4..], protocol);
        return Add(tail, sum);
    }

    /// <summary>The checksum value to store in a header: the complement of the folded sum.</summary>
    public static ushort Finish(ulong sum) => (ushort)~Fold(sum);

    /// <summary>Recomputes an IPv4 header checksum in place.</summary>
    public static void FixIPv4Header(Span<byte> header)
    {
        header[10] = 0;
        header[11] = 0;
        BinaryPrimitives.WriteUInt16BigEndian(header[10..], Finish(Add(header, 0)));
    }

    /// <summary>Source and destination addresses of an IPv4 or IPv6 packet.</summary>
    public static void Addresses(ReadOnlySpan<byte> packet, out ReadOnlySpan<byte> source, out ReadOnlySpan<byte> destination)
    {
        if (packet[0] >> 4 == 4)
        {
            source = packet.Slice(12, 4);
            destination = packet.Slice(16, 4);
        }
        else
        {
            source = packet.Slice(8, 16);
            destination = packet.Slice(24, 16);
        }
    }

    /// <summary>True when the TCP checksum of a whole IP packet (transport at <paramref name="transportOffset"/>) verifies.</summary>
    public static bool TransportChecksumValid(ReadOnlySpan<byte> packet, int transportOffset, byte protocol)
    {
        Addresses(packet, out var source, out var destination);
        var transport = packet[transportOffset..];
        var sum = Add(transport, PseudoHeader(source, destination, protocol, transport.Length));
        return Fold(sum) == 0xFFFF;
    }
}
