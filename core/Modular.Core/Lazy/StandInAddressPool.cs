using System.Buffers.Binary;
using System.Net;

namespace Modular.Core.Lazy;

/// <summary>
/// Hands out one loopback address per idle peer (or relayed peer) from 127.128.0.0/9, so an endpoint names its peer
/// by address alone. The /9 is split so its two users never collide: the lazy-connection stand-ins take
/// 127.128.0.0/10 (the default constructor, about 4.2 million) and the UDP relay proxy's shared socket takes
/// 127.192.0.0/10 (<see cref="RelayProxies"/>). Addresses ending in .0 or .255 are skipped: some tools and filters
/// treat them as network or broadcast addresses even inside 127/8. Freed addresses are reused oldest-first, which
/// keeps a just-freed address unused for as long as possible: a late datagram that WireGuard sends to a peer's
/// old address is then not blamed on the next peer. Not thread-safe; its users call it under their lock.
/// Compiled into Modular.Core and into the proxy-udp plugin (one copy of the code; plugins reference only
/// Modular.Abstractions).
/// </summary>
internal sealed class StandInAddressPool
{
    /// <summary>127.128.0.0 in host byte order.</summary>
    public const uint First = 0x7F80_0000;

    /// <summary>127.255.255.255 in host byte order.</summary>
    public const uint Last = 0x7FFF_FFFF;

    /// <summary>127.192.0.0 in host byte order: the first address of the relay proxies' half.</summary>
    public const uint RelayProxyFirst = 0x7FC0_0000;

    private readonly Queue<uint> _freed = new();
    private readonly uint _last;
    private uint _next;

    /// <summary>A pool of the lazy-connection stand-ins' half, 127.128.0.0/10.</summary>
    public StandInAddressPool()
        : this(First, RelayProxyFirst - 1)
    {
    }

    private StandInAddressPool(uint first, uint last)
    {
        _next = first + 1;
        _last = last;
    }

    /// <summary>A pool of 127.192.0.0/10, for the peers the UDP relay proxy carries on its shared socket.</summary>
    public static StandInAddressPool RelayProxies() => new(RelayProxyFirst, Last);

    /// <summary>True for addresses of 127.192.0.0/10 (host byte order): the relay proxies' half.</summary>
    public static bool IsRelayProxy(uint address) => (address & 0xFFC0_0000) == RelayProxyFirst;

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

        while (_next <= _last)
        {
            var candidate = _next++;
            var lastOctet = candidate & 0xFF;
            if (lastOctet is not 0 and not 255)
            {
                return candidate;
            }
        }

        throw new InvalidOperationException($"All loopback addresses up to {ToIPAddress(_last)} are in use.");
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
