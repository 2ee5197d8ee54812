using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.WireGuard.Routing;

/// <summary>
/// Cryptokey routing table: IPv4 and IPv6 prefixes mapped to a value (the peer), looked up by
/// longest prefix match on raw address bytes without allocating. A binary trie per family with
/// path compression. Writers serialise on a lock; readers never lock: a writer only publishes
/// fully built nodes with single reference stores, so a concurrent reader sees the old or the
/// new route, never a torn one.
/// </summary>
public sealed class AllowedIps<T>
    where T : class
{
    private sealed class Node
    {
        public Node(UInt128 bits, int length, T? value)
        {
            Bits = bits;
            Length = length;
            Value = value;
        }

        public UInt128 Bits { get; }

        public int Length { get; }

        public volatile T? Value;

        public volatile Node? Zero;

        public volatile Node? One;
    }

    private readonly Lock _writeLock = new();
    private volatile Node? _root4;
    private volatile Node? _root6;
    private int _count;

    /// <summary>Number of prefixes held.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>Adds or replaces the owner of <paramref name="prefix"/> (host bits are cleared).</summary>
    public void Insert(IPNetwork prefix, T value)
    {
        var (bits, length, isV6) = Normalise(prefix);
        lock (_writeLock)
        {
            if (isV6)
            {
                _root6 = Insert(_root6, bits, length, value, 128);
            }
            else
            {
                _root4 = Insert(_root4, bits, length, value, 32);
            }
        }
    }

    /// <summary>Removes one prefix if <paramref name="value"/> owns it.</summary>
    public bool Remove(IPNetwork prefix, T value)
    {
        var (bits, length, isV6) = Normalise(prefix);
        lock (_writeLock)
        {
            var node = isV6 ? _root6 : _root4;
            var width = isV6 ? 128 : 32;
            while (node is not null)
            {
                if (node.Length > length || CommonPrefix(node.Bits, bits, width) < node.Length)
                {
                    return false;
                }

                if (node.Length == length)
                {
                    if (!ReferenceEquals(node.Value, value))
                    {
                        return false;
                    }

                    node.Value = null;
                    _count--;
                    return true;
                }

                node = Bit(bits, node.Length, width) ? node.One : node.Zero;
            }

            return false;
        }
    }

    /// <summary>Removes every prefix owned by <paramref name="value"/>.</summary>
    public void RemoveAll(T value)
    {
        lock (_writeLock)
        {
            RemoveAll(_root4, value);
            RemoveAll(_root6, value);
        }
    }

    /// <summary>The prefixes owned by <paramref name="value"/>.</summary>
    public List<IPNetwork> PrefixesOf(T value)
    {
        var result = new List<IPNetwork>();
        lock (_writeLock)
        {
            Collect(_root4, value, 32, result);
            Collect(_root6, value, 128, result);
        }

        return result;
    }

    /// <summary>Longest-prefix match of a 4-byte (IPv4) or 16-byte (IPv6) address in network byte order.</summary>
    public T? Lookup(ReadOnlySpan<byte> address)
    {
        Node? node;
        UInt128 bits;
        int width;
        if (address.Length == 4)
        {
            node = _root4;
            bits = (UInt128)BinaryPrimitives.ReadUInt32BigEndian(address) << 96;
            width = 32;
        }
        else if (address.Length == 16)
        {
            node = _root6;
            bits = BinaryPrimitives.ReadUInt128BigEndian(address);
            width = 128;
        }
        else
        {
            return null;
        }

        T? best = null;
        while (node is not null)
        {
            if (CommonPrefix(node.Bits, bits, 128) < node.Length)
            {
                break;
            }

            if (node.Value is { } value)
            {
                best = value;
            }

            if (node.Length == width)
            {
                break;
            }

            node = Bit(bits, node.Length, 128) ? node.One : node.Zero;
        }

        return best;
    }

    // Addresses are held left-aligned in a UInt128 (IPv4 in the top 32 bits) so one code path serves both families.
    private static (UInt128 Bits, int Length, bool IsV6) Normalise(IPNetwork prefix)
    {
        Span<byte> bytes = stackalloc byte[16];
        var address = prefix.BaseAddress;
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        address.TryWriteBytes(bytes, out var written);
        var isV6 = address.AddressFamily == AddressFamily.InterNetworkV6;
        var length = prefix.PrefixLength;
        var bits = isV6 ? BinaryPrimitives.ReadUInt128BigEndian(bytes) : (UInt128)BinaryPrimitives.ReadUInt32BigEndian(bytes[..written]) << 96;
        return (bits & Mask(length), length, isV6);
    }

    private static UInt128 Mask(int length) => length == 0 ? UInt128.Zero : UInt128.MaxValue << (128 - length);

    private static bool Bit(UInt128 bits, int index, int width) => ((bits >> (127 - index)) & UInt128.One) != UInt128.Zero;

    private static int CommonPrefix(UInt128 a, UInt128 b, int width)
    {
        var difference = a ^ b;
        return difference == UInt128.Zero ? 128 : (int)UInt128.LeadingZeroCount(difference);
    }

    private Node Insert(Node? node, UInt128 bits, int length, T value, int width)
    {
        if (node is null)
        {
            _count++;
            return new Node(bits, length, value);
        }

        var common = Math.Min(Math.Min(CommonPrefix(node.Bits, bits, width), node.Length), length);
        if (common == node.Length && common == length)
        {
            if (node.Value is null)
            {
                _count++;
            }

            node.Value = value;
            return node;
        }

        if (common == node.Length)
        {
            // The new prefix lies below this node.
            if (Bit(bits, node.Length, width))
            {
                node.One = Insert(node.One, bits, length, value, width);
            }
            else
            {
                node.Zero = Insert(node.Zero, bits, length, value, width);
            }

            return node;
        }

        // Split: a new node at the common prefix holds the old subtree, and the new prefix is
        // either that node itself or a new leaf beside the old subtree.
        _count++;
        Node parent;
        if (common == length)
        {
            parent = new Node(bits, length, value);
        }
        else
        {
            parent = new Node(bits & Mask(common), common, null);
            var leaf = new Node(bits, length, value);
            if (Bit(bits, common, width))
            {
                parent.One = leaf;
            }
            else
            {
                parent.Zero = leaf;
            }
        }

        if (Bit(node.Bits, common, width))
        {
            parent.One = node;
        }
        else
        {
            parent.Zero = node;
        }

        return parent;
    }

    private void RemoveAll(Node? node, T value)
    {
        if (node is null)
        {
            return;
        }

        if (ReferenceEquals(node.Value, value))
        {
            node.Value = null;
            _count--;
        }

        RemoveAll(node.Zero, value);
        RemoveAll(node.One, value);
    }

    private static void Collect(Node? node, T value, int width, List<IPNetwork> result)
    {
        if (node is null)
        {
            return;
        }

        if (ReferenceEquals(node.Value, value))
        {
            Span<byte> bytes = stackalloc byte[16];
            BinaryPrimitives.WriteUInt128BigEndian(bytes, node.Bits);
            var address = new IPAddress(width == 32 ? bytes[..4] : bytes);
            result.Add(new IPNetwork(address, node.Length));
        }

        Collect(node.Zero, value, width, result);
        Collect(node.One, value, width, result);
    }
}
