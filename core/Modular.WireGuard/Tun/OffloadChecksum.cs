using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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
        // 32-bit words widened into 64-bit lanes cannot overflow for any packet (< 2^32 words),
        // so the vector loop needs no carry handling; the end-around carry is applied once.
        if (Vector256.IsHardwareAccelerated && data.Length >= 64)
        {
            var words = MemoryMarshal.Cast<byte, uint>(data[..(data.Length & ~31)]);
            var accumulator0 = Vector256<ulong>.Zero;
            var accumulator1 = Vector256<ulong>.Zero;
            ref var start = ref MemoryMarshal.GetReference(words);
            for (var i = 0; i < words.Length; i += 8)
            {
                var (lower, upper) = Vector256.Widen(Vector256.LoadUnsafe(ref start, (nuint)i));
                accumulator0 += lower;
                accumulator1 += upper;
            }

            sum = AddWithCarry(sum, Vector256.Sum(accumulator0 + accumulator1));
            data = data[(data.Length & ~31)..];
        }

        var longs = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var word in longs)
        {
            sum = AddWithCarry(sum, word);
        }

        var tail = data[(longs.Length * 8)..];
        ulong last = 0;
        for (var i = 0; i < tail.Length; i++)
        {
            // Native-order placement keeps the final swap valid for the odd bytes too.
            last |= (ulong)tail[i] << (BitConverter.IsLittleEndian ? i * 8 : 56 - (i * 8));
        }

        return AddWithCarry(sum, last);
    }

    private static ulong AddWithCarry(ulong sum, ulong value)
    {
        sum += value;
        return sum < value ? sum + 1 : sum;
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
