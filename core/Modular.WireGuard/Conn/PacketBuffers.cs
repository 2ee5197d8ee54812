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
}
