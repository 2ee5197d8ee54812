namespace Modular.WireGuard.Tun;

/// <summary>
/// The IP side of the device (wireguard-go's tun.Device): reads packets the OS routes into the
/// tunnel and writes decrypted packets back. Buffers carry <c>offset</c> bytes of headroom
/// before each packet, so the device can encrypt in place (WireGuard's 16-byte header) and an
/// offload-capable TUN can put its virtio header there. A TUN with offloads may return many
/// packets from one read (split from one GSO super-packet) and coalesce on write (GRO).
/// </summary>
public interface ITun : IDisposable
{
    string Name { get; }

    int Mtu { get; }

    /// <summary>Most packets one Read returns or one Write takes.</summary>
    int BatchSize { get; }

    /// <summary>
    /// Blocks until at least one packet is read; packet i is packets[i][offset..offset+sizes[i]].
    /// Returns the count. Throws <see cref="ObjectDisposedException"/> once closed.
    /// </summary>
    int Read(byte[][] packets, int[] sizes, int offset);

    /// <summary>Writes <paramref name="count"/> packets, each packets[i][offset..offset+sizes[i]].</summary>
    void Write(byte[][] packets, int[] sizes, int offset, int count);
}
