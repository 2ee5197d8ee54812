namespace Modular.WireGuard.Conn;

/// <summary>Sizes shared by every packet buffer on the data path.</summary>
public static class PacketBuffers
{
    /// <summary>Largest datagram or IP packet a single buffer holds (a GSO/GRO super-packet fits).</summary>
    public const int MaxSegmentSize = 65535 + 64;

    /// <summary>Headroom reserved before each TUN packet: WireGuard's 16-byte transport header (and room for a virtio header).</summary>
    public const int TransportHeaderSize = 16;

    /// <summary>How many packets move in one batch by default.</summary>
    public const int DefaultBatchSize = 128;

    /// <summary>
    /// <paramref name="count"/> zeroed buffers of <see cref="MaxSegmentSize"/> bytes for a loop that keeps them for the
    /// device's lifetime. They live on the pinned object heap: the device's three loops hold 384 of them (25 MB, most of
    /// a userspace agent's managed heap), which a compacting collection would otherwise copy, and the sockets pin them
    /// for every send and receive anyway.
    /// </summary>
    public static byte[][] AllocateBatch(int count)
    {
        var buffers = new byte[count][];
        for (var i = 0; i < count; i++)
        {
            buffers[i] = GC.AllocateArray<byte>(MaxSegmentSize, pinned: true);
        }

        return buffers;
    }
}
