using System.Net;
using System.Net.Sockets;
using Modular.Abstractions.Flows;

namespace Modular.Plugins.Netflow.Ipfix;

/// <summary>
/// One IPFIX data record: one direction of a flow, as a router exports it (addresses, ports and counters of the
/// packets that went that way). Both addresses are of one family; <see cref="IsV6"/> picks the template.
/// </summary>
internal readonly record struct IpfixRecord(
    IPAddress Source,
    IPAddress Destination,
    ushort SourcePort,
    ushort DestinationPort,
    byte Protocol,
    byte IcmpType,
    byte IcmpCode,
    ulong Packets,
    ulong Octets,
    long StartMilliseconds,
    long EndMilliseconds,
    byte Direction,
    byte ForwardingStatus)
{
    /// <summary>flowDirection (IE 61): the packets came in through the interface.</summary>
    public const byte Ingress = 0;

    /// <summary>flowDirection (IE 61): the packets went out through the interface.</summary>
    public const byte Egress = 1;

    /// <summary>forwardingStatus (IE 89, RFC 7270): forwarded, no reason given.</summary>
    public const byte Forwarded = 64;

    /// <summary>forwardingStatus (IE 89, RFC 7270): dropped by an access rule ("ACL deny").</summary>
    public const byte DroppedByRule = 129;

    public bool IsV6 => Source.AddressFamily == AddressFamily.InterNetworkV6;

    /// <summary>
    /// The records a flow event becomes: an End gives one per direction that carried packets (octet/packetDeltaCount
    /// are the flow's totals that way: no earlier record of the flow was exported, since Start events are not
    /// exported — they would count the first packets twice); a Drop gives one (forwardingStatus = dropped); a Start
    /// gives none. <paramref name="startMilliseconds"/> is when the flow started (its Start event), or null when not
    /// known, then the event's own time. Returns how many it wrote (0 to 2).
    /// </summary>
    public static int FromEvent(FlowEvent flowEvent, long? startMilliseconds, Span<IpfixRecord> into)
    {
        if (flowEvent.Type == FlowEventType.Start)
        {
            return 0;
        }

        var (source, destination) = SameFamily(flowEvent.SourceAddress, flowEvent.DestinationAddress);
        var end = flowEvent.Timestamp.ToUnixTimeMilliseconds();
        var start = Math.Min(startMilliseconds ?? end, end);
        var ingress = flowEvent.Direction == FlowDirection.Ingress;

        // The initiator's packets: received when the flow came in, sent when it went out.
        var forwardPackets = ingress ? flowEvent.RxPackets : flowEvent.TxPackets;
        var forwardOctets = ingress ? flowEvent.RxBytes : flowEvent.TxBytes;
        var reversePackets = ingress ? flowEvent.TxPackets : flowEvent.RxPackets;
        var reverseOctets = ingress ? flowEvent.TxBytes : flowEvent.RxBytes;
        var isIcmp = flowEvent.Protocol is 1 or 58;

        if (flowEvent.Type == FlowEventType.Drop)
        {
            into[0] = new IpfixRecord(source, destination, flowEvent.SourcePort, flowEvent.DestinationPort, flowEvent.Protocol,
                flowEvent.IcmpType, flowEvent.IcmpCode, forwardPackets, forwardOctets, start, end, ingress ? Ingress : Egress, DroppedByRule);
            return 1;
        }

        var written = 0;
        into[written++] = new IpfixRecord(source, destination, flowEvent.SourcePort, flowEvent.DestinationPort, flowEvent.Protocol,
            flowEvent.IcmpType, flowEvent.IcmpCode, forwardPackets, forwardOctets, start, end, ingress ? Ingress : Egress, Forwarded);
        if (reversePackets > 0)
        {
            var replyType = isIcmp ? ReplyType(flowEvent.Protocol, flowEvent.IcmpType) : (byte)0;
            into[written++] = new IpfixRecord(destination, source, flowEvent.DestinationPort, flowEvent.SourcePort, flowEvent.Protocol,
                replyType, 0, reversePackets, reverseOctets, start, end, ingress ? Egress : Ingress, Forwarded);
        }

        return written;
    }

    // The reply to an ICMP query (echo, timestamp, information, address mask; ICMPv6 echo); 0 for anything else.
    private static byte ReplyType(byte protocol, byte requestType) => (protocol, requestType) switch
    {
        (1, 8) => 0,
        (1, 13) => 14,
        (1, 15) => 16,
        (1, 17) => 18,
        (58, 128) => 129,
        _ => 0,
    };

    // IPv4 when both are IPv4 (or IPv4-mapped); else both as IPv6.
    private static (IPAddress Source, IPAddress Destination) SameFamily(IPAddress source, IPAddress destination)
    {
        var s = source.IsIPv4MappedToIPv6 ? source.MapToIPv4() : source;
        var d = destination.IsIPv4MappedToIPv6 ? destination.MapToIPv4() : destination;
        return s.AddressFamily == d.AddressFamily ? (s, d) : (s.MapToIPv6(), d.MapToIPv6());
    }
}
