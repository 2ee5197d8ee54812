using System.Buffers.Binary;
using Modular.WireGuard.Tun;

namespace Modular.WireGuard.Tests;

/// <summary>TSO split and GRO coalesce on crafted packets, checksums verified independently.</summary>
public class LinuxOffloadTests
{
    private const int Offset = 16;

    /// <summary>Builds a TCP packet with a full IP and TCP checksum (computed here bit by bit, not with OffloadChecksum).</summary>
    internal static byte[] TcpPacket(bool ipv6, uint sequence, ReadOnlySpan<byte> payload, byte flags = 0x10, ushort ipId = 100, int optionBytes = 12)
    {
        var ipLength = ipv6 ? 40 : 20;
        var tcpLength = 20 + optionBytes;
        var packet = new byte[ipLength + tcpLength + payload.Length];
        if (ipv6)
        {
            packet[0] = 0x60;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), (ushort)(tcpLength + payload.Length));
            packet[6] = 6;
            packet[7] = 64;
            packet[8] = 0xfd;
            packet[23] = 1;
            packet[24] = 0xfd;
            packet[39] = 2;
        }
        else
        {
            packet[0] = 0x45;
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(2), (ushort)packet.Length);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(4), ipId);
            packet[6] = 0x40;
            packet[8] = 64;
            packet[9] = 6;
            new byte[] { 100, 64, 0, 1, 100, 64, 0, 2 }.CopyTo(packet, 12);
            BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(10), ReferenceChecksum(packet.AsSpan(0, 20)));
        }

        var tcp = packet.AsSpan(ipLength);
        BinaryPrimitives.WriteUInt16BigEndian(tcp, 40000);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[2..], 5201);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[4..], sequence);
        BinaryPrimitives.WriteUInt32BigEndian(tcp[8..], 777);
        tcp[12] = (byte)((tcpLength / 4) << 4);
        tcp[13] = flags;
        BinaryPrimitives.WriteUInt16BigEndian(tcp[14..], 501);
        for (var i = 0; i < optionBytes; i++)
        {
            tcp[20 + i] = i < 2 ? (byte)1 : (byte)(i + 3);
        }

        payload.CopyTo(tcp[tcpLength..]);
        BinaryPrimitives.WriteUInt16BigEndian(tcp[16..], ReferenceChecksum(PseudoAndTransport(packet, ipLength)));
        return packet;
    }

    /// <summary>RFC 1071 with 16-bit big-endian words, the textbook way.</summary>
    internal static ushort ReferenceChecksum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (var i = 0; i < data.Length; i += 2)
        {
            sum += (uint)(data[i] << 8) | (i + 1 < data.Length ? data[i + 1] : 0u);
        }

        while (sum > 0xFFFF)
        {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }

        return (ushort)~sum;
    }

    internal static byte[] PseudoAndTransport(byte[] packet, int ipLength)
    {
        var ipv6 = packet[0] >> 4 == 6;
        var addresses = ipv6 ? packet.AsSpan(8, 32) : packet.AsSpan(12, 8);
        var transport = packet.AsSpan(ipLength);
        var buffer = new byte[addresses.Length + 8 + transport.Length];
        addresses.CopyTo(buffer);
        BinaryPrimitives.WriteUInt32BigEndian(buffer.AsSpan(addresses.Length), (uint)transport.Length);
        buffer[addresses.Length + 7] = packet[ipv6 ? 6 : 9];
        transport.CopyTo(buffer.AsSpan(addresses.Length + 8));
        return buffer;
    }

    internal static bool TcpChecksumValid(byte[] packet)
    {
        var ipLength = packet[0] >> 4 == 6 ? 40 : (packet[0] & 15) * 4;
        return ReferenceChecksum(PseudoAndTransport(packet, ipLength)) == 0;
    }

    private static byte[] Payload(int length, int seed)
    {
        var payload = new byte[length];
        new Random(seed).NextBytes(payload);
        return payload;
    }

    private static (byte[][] Packets, int[] Sizes, int Count) Split(byte[] super, VirtioNetHeader header, int capacity = 128)
    {
        var count = OffloadSplitter.Plan(super, header, out var layout);
        var packets = new byte[Math.Max(count, capacity)][];
        var sizes = new int[packets.Length];
        for (var i = 0; i < packets.Length; i++)
        {
            packets[i] = new byte[Offset + 65600];
        }

        for (var i = 0; i < count; i++)
        {
            sizes[i] = OffloadSplitter.WriteSegment(super, header, layout, i, packets[i].AsSpan(Offset));
        }

        return (packets, sizes, count);
    }

    [Theory]
    [InlineData(false, 1228)]
    [InlineData(true, 1208)]
    [InlineData(false, 536)]
    public void TsoSuperPacketSplitsIntoValidSegments(bool ipv6, int mss)
    {
        var payload = Payload(60000, mss);
        var super = TcpPacket(ipv6, 1_000_000, payload, flags: 0x18, ipId: 500);
        var ipLength = ipv6 ? 40 : 20;
        var header = new VirtioNetHeader(VirtioNetHeader.FlagNeedsCsum, ipv6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4,
            (ushort)(ipLength + 32), (ushort)mss, (ushort)ipLength, 16);

        var (packets, sizes, count) = Split(super, header);

        Assert.Equal((payload.Length + mss - 1) / mss, count);
        var reassembled = new List<byte>();
        for (var i = 0; i < count; i++)
        {
            var segment = packets[i].AsSpan(Offset, sizes[i]).ToArray();
            Assert.True(TcpChecksumValid(segment), $"segment {i} TCP checksum");
            if (!ipv6)
            {
                Assert.Equal(0, ReferenceChecksum(segment.AsSpan(0, 20)));
                Assert.Equal(segment.Length, BinaryPrimitives.ReadUInt16BigEndian(segment.AsSpan(2)));
                Assert.Equal(500 + i, BinaryPrimitives.ReadUInt16BigEndian(segment.AsSpan(4)));
            }
            else
            {
                Assert.Equal(segment.Length - 40, BinaryPrimitives.ReadUInt16BigEndian(segment.AsSpan(4)));
            }

            Assert.Equal((uint)(1_000_000 + (i * mss)), BinaryPrimitives.ReadUInt32BigEndian(segment.AsSpan(ipLength + 4)));
            var pushExpected = i == count - 1;
            Assert.Equal(pushExpected, (segment[ipLength + 13] & 0x08) != 0);
            Assert.True(segment.Length - ipLength - 32 <= mss);
            reassembled.AddRange(segment.AsSpan(ipLength + 32).ToArray());
        }

        Assert.Equal(payload, reassembled.ToArray());
    }

    [Fact]
    public void ChecksumMatchesTheTextbookSumForEveryLengthAndAlignment()
    {
        var data = Payload(70000, 9);
        foreach (var length in Enumerable.Range(0, 300).Concat([1023, 1400, 4097, 65535]))
        {
            foreach (var start in new[] { 0, 1, 3, 8 })
            {
                var span = data.AsSpan(start, length);
                Assert.Equal(ReferenceChecksum(span), OffloadChecksum.Finish(OffloadChecksum.Add(span, 0)));
            }
        }
    }

    [Fact]
    public void PartialChecksumOfASinglePacketIsCompleted()
    {
        var packet = TcpPacket(false, 5, Payload(333, 1));

        // What the kernel hands over with NEEDS_CSUM: the field holds only the folded pseudo-header sum.
        var pseudo = PseudoAndTransport(packet, 20).AsSpan(0, 16).ToArray();
        var partial = (ushort)~ReferenceChecksum(pseudo);
        BinaryPrimitives.WriteUInt16BigEndian(packet.AsSpan(36), partial);
        Assert.False(TcpChecksumValid(packet));

        var header = new VirtioNetHeader(VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.GsoNone, 0, 0, 20, 16);
        var (packets, sizes, count) = Split(packet, header);

        Assert.Equal(1, count);
        Assert.True(TcpChecksumValid(packets[0].AsSpan(Offset, sizes[0]).ToArray()));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SplitSegmentsCoalesceBackIntoOneGroSuperPacket(bool ipv6)
    {
        const int mss = 1200;
        var payload = Payload(30 * mss + 77, 7);
        var super = TcpPacket(ipv6, 42, payload, flags: 0x18);
        var ipLength = ipv6 ? 40 : 20;
        var tso = new VirtioNetHeader(VirtioNetHeader.FlagNeedsCsum, ipv6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4,
            (ushort)(ipLength + 32), mss, (ushort)ipLength, 16);
        var (packets, sizes, count) = Split(super, tso);
        var output = new byte[VirtioNetHeader.Size + 65600];

        var consumed = OffloadCoalescer.Coalesce(packets, sizes, Offset, 0, count, output, out var length);

        Assert.Equal(count, consumed);
        var gro = VirtioNetHeader.Read(output);
        Assert.Equal(ipv6 ? VirtioNetHeader.GsoTcpV6 : VirtioNetHeader.GsoTcpV4, gro.GsoType);
        Assert.Equal(VirtioNetHeader.FlagNeedsCsum, gro.Flags);
        Assert.Equal(mss, gro.GsoSize);
        Assert.Equal(ipLength, gro.CsumStart);
        Assert.Equal(16, gro.CsumOffset);
        Assert.Equal(ipLength + 32, gro.HeaderLength);
        var merged = output.AsSpan(VirtioNetHeader.Size, length - VirtioNetHeader.Size).ToArray();
        Assert.Equal(payload, merged.AsSpan(ipLength + 32).ToArray());
        Assert.True((merged[ipLength + 13] & 0x08) != 0, "the last segment's PSH is kept");

        // Finish the checksum as the kernel does (sum from csum_start over the partial field) and verify it.
        var finished = ReferenceChecksum(merged.AsSpan(ipLength));
        BinaryPrimitives.WriteUInt16BigEndian(merged.AsSpan(ipLength + 16), finished);
        Assert.True(TcpChecksumValid(merged));
        if (!ipv6)
        {
            Assert.Equal(0, ReferenceChecksum(merged.AsSpan(0, 20)));
            Assert.Equal(merged.Length, BinaryPrimitives.ReadUInt16BigEndian(merged.AsSpan(2)));
        }
    }

    [Fact]
    public void DifferentFlowsGapsAndBadChecksumsAreNotCoalesced()
    {
        var a0 = TcpPacket(false, 1000, Payload(1000, 1));
        var a1 = TcpPacket(false, 2000, Payload(1000, 2));
        var gap = TcpPacket(false, 3500, Payload(1000, 3)); // sequence gap after a1
        var b0 = TcpPacket(false, 4500, Payload(1000, 4));
        var corrupt = TcpPacket(false, 5500, Payload(1000, 5));
        corrupt[^1] ^= 0xFF;
        var udp = (byte[])a0.Clone();
        udp[9] = 17;

        byte[][] packets = [Framed(a0), Framed(a1), Framed(gap), Framed(b0), Framed(corrupt), Framed(udp)];
        int[] sizes = [a0.Length, a1.Length, gap.Length, b0.Length, corrupt.Length, udp.Length];
        var output = new byte[VirtioNetHeader.Size + 65600];

        Assert.Equal(2, OffloadCoalescer.Coalesce(packets, sizes, Offset, 0, 6, output, out _));
        Assert.Equal(2, OffloadCoalescer.Coalesce(packets, sizes, Offset, 2, 6, output, out _));
        Assert.Equal(1, OffloadCoalescer.Coalesce(packets, sizes, Offset, 4, 6, output, out _));
        Assert.Equal(1, OffloadCoalescer.Coalesce(packets, sizes, Offset, 5, 6, output, out _));
    }

    [Fact]
    public void MalformedInputIsDroppedWithoutException()
    {
        var header = new VirtioNetHeader(VirtioNetHeader.FlagNeedsCsum, VirtioNetHeader.GsoTcpV4, 40, 1200, 20, 16);
        Assert.Equal(0, OffloadSplitter.Plan(new byte[10], header, out _));

        var truncated = TcpPacket(false, 1, Payload(100, 1)).AsSpan(0, 30).ToArray();
        Assert.Equal(0, OffloadSplitter.Plan(truncated, header, out _));

        var notTcp = TcpPacket(false, 1, Payload(100, 1));
        notTcp[9] = 17;
        Assert.Equal(0, OffloadSplitter.Plan(notTcp, header, out _));

        var usoHeader = header with { GsoType = VirtioNetHeader.GsoUdpL4 };
        Assert.Equal(0, OffloadSplitter.Plan(TcpPacket(false, 1, Payload(100, 1)), usoHeader, out _));

        var garbage = new byte[300];
        new Random(3).NextBytes(garbage);
        garbage[0] = 0x45;
        _ = OffloadSplitter.Plan(garbage, header, out var layout);
        var destination = new byte[70000];
        if (layout.SegmentCount > 0)
        {
            for (var i = 0; i < layout.SegmentCount; i++)
            {
                OffloadSplitter.WriteSegment(garbage, header, layout, i, destination);
            }
        }
    }

    private static byte[] Framed(byte[] packet)
    {
        var buffer = new byte[Offset + packet.Length];
        packet.CopyTo(buffer, Offset);
        return buffer;
    }
}
