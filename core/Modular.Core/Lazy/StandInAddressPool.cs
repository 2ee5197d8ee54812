using System.Buffers.Binary;
using System.Net;

namespace Modular.Core.Lazy;

/// <summary>
/// Hands out one loopback address per idle peer from 127.128.0.0/9 (about 8.3 million), so a stand-in endpoint
/// names its peer by address alone. Addresses ending in .0 or .255 are skipped: some tools and filters treat them
/// as network or broadcast addresses even inside 127/8. Freed addresses are reused oldest-first, which keeps a
/// just-freed address unused for as long as possible: a late handshake retry that WireGuard sends to a peer's
/// old stand-in is then not blamed on the next peer. Not thread-safe; the monitors call it under their lock.
/// </summary>
internal sealed class StandInAddressPool
{
    /// <summary>127.128.0.0 in host byte order.</summary>
    public const uint First = 0x7F80_0000;

    /// <summary>127.255.255.255 in host byte order.</summary>
    public const uint Last = 0x7FFF_FFFF;

    private readonly Queue<uint> _freed = new();
    private uint _next = First + 1;

    /// <summary>True for addresses of 127.128.0.0/9 (host byte order).</summary>
    public static bool Contains(uint address) => (address & 0xFF80_0000) == First;

    /// <summary>True for addresses of 127.0.0.0/8 (host byte order): the only sources WireGuard on this host uses.</summary>
    public static bool IsLoopback(uint address) => (address >> 24) == 127;

    /// <summary>The next free address (host byte order). Throws when all of them are in use.</summary>
    public uint Rent()
    {
        if (_freed.TryDequeue(out var reused))
        {
            return reused;
        }

        while (_next <= Last)
        {
            var candidate = _next++;
            var lastOctet = candidate & 0xFF;
            if (lastOctet is not 0 and not 255)
            {
                return candidate;
            }
        }

        throw new InvalidOperationException("All stand-in addresses of 127.128.0.0/9 are in use.");
    }

    /// <summary>Gives <paramref name="address"/> back for reuse.</summary>
    public void Return(uint address) => _freed.Enqueue(address);

    public static IPAddress ToIPAddress(uint address)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, address);
        return new IPAddress(bytes);
    }
}
