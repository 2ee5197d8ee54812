namespace Modular.WireGuard.Device;

/// <summary>
/// Decides, per IP packet, whether it may cross the device: <see cref="AllowOutbound"/> for packets read from
/// the TUN before they are encrypted, <see cref="AllowInbound"/> for packets decrypted from an authenticated
/// peer before they are written to the TUN. A refused packet is dropped there. Called on the packet threads
/// for every packet: it must be thread-safe, fast, allocation-free and must not throw.
/// </summary>
public interface IPacketFilter
{
    bool AllowOutbound(ReadOnlySpan<byte> ipPacket);

    bool AllowInbound(ReadOnlySpan<byte> ipPacket);
}
