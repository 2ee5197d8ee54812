using System.Buffers.Binary;

namespace Modular.Core.Firewall;

/// <summary>IP protocol numbers the firewall understands.</summary>
public static class IpProtocol
{
    public const byte Icmp = 1;
    public const byte Tcp = 6;
    public const byte Udp = 17;
    public const byte IcmpV6 = 58;

    /// <summary>The IPv6 fragment header (RFC 8200 section 4.5).</summary>
    public const byte Ipv6Fragment = 44;
}

/// <summary>TCP header flag bits.</summary>
[Flags]
public enum TcpFlags : byte
{
    None = 0,
    Fin = 0x01,
    Syn = 0x02,
    Rst = 0x04,
    Psh = 0x08,
    Ack = 0x10,
}

/// <summary>
/// The header fields of one IP packet the firewall decides on, read from a span without allocating.
/// Addresses are 128-bit: IPv4 is mapped into ::ffff:0:0/96 so one lookup structure serves both families.
/// For ICMP echo the identifier stands in for both ports, so a request and its reply share a flow.
/// </summary>
public readonly struct PacketHeader
{
    public PacketHeader(byte ipVersion, byte protocol, UInt128 source, UInt128 destination, ushort sourcePort, ushort destinationPort, TcpFlags tcpFlags, byte icmpType, byte icmpCode, int length, bool isFragment, FlowKey? quotedKey = null)
    {
        QuotedKey = quotedKey;
        IpVersion = ipVersion;
        Protocol = protocol;
        Source = source;
        Destination = destination;
        SourcePort = sourcePort;
        DestinationPort = destinationPort;
        TcpFlags = tcpFlags;
        IcmpType = icmpType;
        IcmpCode = icmpCode;
        Length = length;
        IsFragment = isFragment;
    }

    public byte IpVersion { get; }

    public byte Protocol { get; }

    public UInt128 Source { get; }

    public UInt128 Destination { get; }

    public ushort SourcePort { get; }

    public ushort DestinationPort { get; }

    public TcpFlags TcpFlags { get; }

    public byte IcmpType { get; }

    public byte IcmpCode { get; }

    /// <summary>The IP packet's length in bytes (the IP header's own length field, not the buffer's).</summary>
    public int Length { get; }

    /// <summary>A non-first fragment: it carries no transport header, so its ports are unknown.</summary>
    public bool IsFragment { get; }

    /// <summary>The first fragment of a fragmented packet (offset 0, more to come): its verdict covers the later ones.</summary>
    public bool IsFirstFragment { get; init; }

    /// <summary>The IP identification (IPv4: 16 bits; IPv6: the fragment header's 32 bits) of any fragment.</summary>
    public uint FragmentId { get; init; }

    /// <summary>
    /// What ties the fragments of one packet together: RFC 791's source, destination, protocol and identification for
    /// IPv4; RFC 8200's source, destination and identification for IPv6, where the protocol a fragment names (the
    /// first header after its fragment header: a destination options header or the transport) is not what the first
    /// fragment's parse ends on, so it stands as <see cref="IpProtocol.Ipv6Fragment"/> for every fragment.
    /// </summary>
    public FragmentKey FragmentKey => new(IpVersion == 6 ? IpProtocol.Ipv6Fragment : Protocol, Source, Destination, FragmentId);

    /// <summary>
    /// For an ICMP error (unreachable, packet too big, time exceeded, parameter problem): the 5-tuple of the
    /// packet it quotes, so the error can be matched to the connection it concerns (Linux conntrack's RELATED).
    /// </summary>
    public FlowKey? QuotedKey { get; }

    public bool IsIcmp => Protocol is IpProtocol.Icmp or IpProtocol.IcmpV6;

    /// <summary>ICMP echo request or reply (v4 8/0, v6 128/129): tracked as a pseudo-connection.</summary>
    public bool IsIcmpEcho => (Protocol == IpProtocol.Icmp && IcmpType is 8 or 0) || (Protocol == IpProtocol.IcmpV6 && IcmpType is 128 or 129);

    public bool IsIcmpEchoRequest => (Protocol == IpProtocol.Icmp && IcmpType == 8) || (Protocol == IpProtocol.IcmpV6 && IcmpType == 128);

    public FlowKey Key => new(Protocol, Source, Destination, SourcePort, DestinationPort);
}

/// <summary>Reads <see cref="PacketHeader"/> from raw IPv4/IPv6 packets. Anything malformed or truncated is refused, never thrown.</summary>
public static class PacketParser
{
    /// <summary>Extension headers followed at most; more is treated as hostile.</summary>
    private const int MaxIpv6ExtensionHeaders = 8;

    public static bool TryParse(ReadOnlySpan<byte> packet, out PacketHeader header)
    {
        header = default;
        if (packet.IsEmpty)
        {
            return false;
        }

        return (packet[0] >> 4) switch
        {
            4 => TryParseIpv4(packet, out header),
            6 => TryParseIpv6(packet, out header),
            _ => false,
        };
    }

    private static bool TryParseIpv4(ReadOnlySpan<byte> packet, out PacketHeader header)
    {
        header = default;
        if (packet.Length < 20)
        {
            return false;
        }

        var headerLength = (packet[0] & 0x0F) * 4;
        int totalLength = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        if (headerLength < 20 || totalLength < headerLength || totalLength > packet.Length)
        {
            return false;
        }

        var fragmentField = BinaryPrimitives.ReadUInt16BigEndian(packet[6..]);
        var isLaterFragment = (fragmentField & 0x1FFF) != 0;
        var isFirstFragment = !isLaterFragment && (fragmentField & 0x2000) != 0;
        uint identification = BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);
        var protocol = packet[9];
        var source = MapIpv4(BinaryPrimitives.ReadUInt32BigEndian(packet[12..]));
        var destination = MapIpv4(BinaryPrimitives.ReadUInt32BigEndian(packet[16..]));
        if (isLaterFragment)
        {
            header = new PacketHeader(4, protocol, source, destination, 0, 0, TcpFlags.None, 0, 0, totalLength, isFragment: true) { FragmentId = identification };
            return true;
        }

        if (!TryParseTransport(4, protocol, source, destination, packet[headerLength..totalLength], totalLength, out header))
        {
            return false;
        }

        if (isFirstFragment)
        {
            header = header with { IsFirstFragment = true, FragmentId = identification };
        }

        return true;
    }

    /// <summary>
    /// IPv6: follows the extension header chain (RFC 8200 section 4) to the transport header. Hop-by-hop options only
    /// right after the fixed header, at most one fragment header, at most <see cref="MaxIpv6ExtensionHeaders"/>
    /// headers, and every header inside the packet; anything else is malformed (a clean drop). A later fragment stops
    /// at its fragment header: what follows is opaque data.
    /// </summary>
    private static bool TryParseIpv6(ReadOnlySpan<byte> packet, out PacketHeader header)
    {
        header = default;
        if (packet.Length < 40)
        {
            return false;
        }

        var totalLength = 40 + BinaryPrimitives.ReadUInt16BigEndian(packet[4..]);
        if (totalLength > packet.Length)
        {
            return false;
        }

        var source = BinaryPrimitives.ReadUInt128BigEndian(packet[8..]);
        var destination = BinaryPrimitives.ReadUInt128BigEndian(packet[24..]);
        var next = packet[6];
        var offset = 40;
        var isFirstFragment = false;
        var seenFragmentHeader = false;
        uint identification = 0;
        for (var headers = 0; headers <= MaxIpv6ExtensionHeaders; headers++)
        {
            int length;
            switch (next)
            {
                case 0 or 43 or 60: // hop-by-hop, routing, destination options: (length + 1) * 8 bytes
                    if ((next == 0 && offset != 40) || offset + 2 > totalLength)
                    {
                        return false;
                    }

                    length = (packet[offset + 1] + 1) * 8;
                    break;
                case IpProtocol.Ipv6Fragment: // 8 bytes
                    if (seenFragmentHeader || offset + 8 > totalLength)
                    {
                        return false;
                    }

                    seenFragmentHeader = true;
                    var fragmentField = BinaryPrimitives.ReadUInt16BigEndian(packet[(offset + 2)..]);
                    identification = BinaryPrimitives.ReadUInt32BigEndian(packet[(offset + 4)..]);
                    if (fragmentField >> 3 != 0)
                    {
                        header = new PacketHeader(6, packet[offset], source, destination, 0, 0, TcpFlags.None, 0, 0, totalLength, isFragment: true) { FragmentId = identification };
                        return true;
                    }

                    isFirstFragment = (fragmentField & 1) != 0;
                    length = 8;
                    break;
                case 51: // authentication header: (length + 2) * 4 bytes
                    if (offset + 2 > totalLength)
                    {
                        return false;
                    }

                    length = (packet[offset + 1] + 2) * 4;
                    break;
                default:
                    if (!TryParseTransport(6, next, source, destination, packet[offset..totalLength], totalLength, out header))
                    {
                        return false;
                    }

                    if (isFirstFragment)
                    {
                        header = header with { IsFirstFragment = true, FragmentId = identification };
                    }

                    return true;
            }

            if (offset + length > totalLength)
            {
                return false;
            }

            next = packet[offset];
            offset += length;
        }

        return false;
    }

    private static bool TryParseTransport(byte version, byte protocol, UInt128 source, UInt128 destination, ReadOnlySpan<byte> transport, int length, out PacketHeader header)
    {
        header = default;
        switch (protocol)
        {
            case IpProtocol.Tcp:
                if (transport.Length < 20 || (transport[12] >> 4) < 5 || (transport[12] >> 4) * 4 > transport.Length)
                {
                    return false;
                }

                header = new PacketHeader(
                    version,
                    protocol,
                    source,
                    destination,
                    BinaryPrimitives.ReadUInt16BigEndian(transport),
                    BinaryPrimitives.ReadUInt16BigEndian(transport[2..]),
                    (TcpFlags)(transport[13] & 0x1F),
                    0,
                    0,
                    length,
                    isFragment: false);
                return true;
            case IpProtocol.Udp:
                if (transport.Length < 8)
                {
                    return false;
                }

                header = new PacketHeader(version, protocol, source, destination, BinaryPrimitives.ReadUInt16BigEndian(transport), BinaryPrimitives.ReadUInt16BigEndian(transport[2..]), TcpFlags.None, 0, 0, length, isFragment: false);
                return true;
            case IpProtocol.Icmp or IpProtocol.IcmpV6:
                if (transport.Length < 8 || (protocol == IpProtocol.Icmp) != (version == 4))
                {
                    return false;
                }

                var type = transport[0];
                var isEcho = protocol == IpProtocol.Icmp ? type is 8 or 0 : type is 128 or 129;
                var isError = protocol == IpProtocol.Icmp ? type is 3 or 11 or 12 : type is 1 or 2 or 3 or 4;
                var identifier = isEcho ? BinaryPrimitives.ReadUInt16BigEndian(transport[4..]) : (ushort)0;
                var quoted = isError && TryParseQuoted(version, transport[8..], out var quotedKey) ? quotedKey : (FlowKey?)null;
                header = new PacketHeader(version, protocol, source, destination, identifier, identifier, TcpFlags.None, type, transport[1], length, isFragment: false, quoted);
                return true;
            default:
                header = new PacketHeader(version, protocol, source, destination, 0, 0, TcpFlags.None, 0, 0, length, isFragment: false);
                return true;
        }
    }

    /// <summary>
    /// The packet an ICMP error quotes: its IP header and at least the first 8 bytes of its transport header,
    /// so its length fields describe more than is there; only addresses, protocol and ports are read.
    /// </summary>
    private static bool TryParseQuoted(byte version, ReadOnlySpan<byte> quoted, out FlowKey key)
    {
        key = default;
        int transportOffset;
        byte protocol;
        UInt128 source;
        UInt128 destination;
        if (version == 4)
        {
            if (quoted.Length < 20 || quoted[0] >> 4 != 4)
            {
                return false;
            }

            transportOffset = (quoted[0] & 0x0F) * 4;
            protocol = quoted[9];
            source = MapIpv4(BinaryPrimitives.ReadUInt32BigEndian(quoted[12..]));
            destination = MapIpv4(BinaryPrimitives.ReadUInt32BigEndian(quoted[16..]));
        }
        else
        {
            if (quoted.Length < 40 || quoted[0] >> 4 != 6)
            {
                return false;
            }

            transportOffset = 40;
            protocol = quoted[6];
            source = BinaryPrimitives.ReadUInt128BigEndian(quoted[8..]);
            destination = BinaryPrimitives.ReadUInt128BigEndian(quoted[24..]);
        }

        if (transportOffset < 20 || quoted.Length < transportOffset + 8)
        {
            return false;
        }

        var transport = quoted[transportOffset..];
        switch (protocol)
        {
            case IpProtocol.Tcp or IpProtocol.Udp:
                key = new FlowKey(protocol, source, destination, BinaryPrimitives.ReadUInt16BigEndian(transport), BinaryPrimitives.ReadUInt16BigEndian(transport[2..]));
                return true;
            case IpProtocol.Icmp or IpProtocol.IcmpV6:
                var identifier = BinaryPrimitives.ReadUInt16BigEndian(transport[4..]);
                key = new FlowKey(protocol, source, destination, identifier, identifier);
                return true;
            default:
                return false;
        }
    }

    private static UInt128 MapIpv4(uint address) => new(0, 0x0000_FFFF_0000_0000UL | address);
}
