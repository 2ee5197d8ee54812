using System.Buffers.Binary;
using System.Net;
using System.Text;
using Modular.WireGuard.Kernel;

namespace Modular.Core.Firewall.Nftables;

/// <summary>One ctnetlink event: a connection confirmed (new) or destroyed, as the kernel reports it.</summary>
/// <param name="Destroyed">False: IPCTNL_MSG_CT_NEW (group NFNLGRP_CONNTRACK_NEW); true: IPCTNL_MSG_CT_DELETE (NFNLGRP_CONNTRACK_DESTROY).</param>
/// <param name="Id">CTA_ID: the kernel's ID of the entry (reused once the entry is gone).</param>
/// <param name="Source">The original direction's source (who opened the connection).</param>
/// <param name="OriginalPackets">Counters of the original direction (zero unless nf_conntrack_acct was on when the entry was made).</param>
internal sealed record ConntrackEvent(
    bool Destroyed,
    uint Id,
    byte Protocol,
    IPAddress Source,
    IPAddress Destination,
    ushort SourcePort,
    ushort DestinationPort,
    byte IcmpType,
    byte IcmpCode,
    ulong OriginalPackets,
    ulong OriginalBytes,
    ulong ReplyPackets,
    ulong ReplyBytes,
    uint Mark);

/// <summary>One packet an nftables <c>log group</c> statement copied to NFLOG.</summary>
/// <param name="Prefix">The rule's log prefix.</param>
/// <param name="Inbound">True when it came in on an interface (input hook), false when it was going out (output hook).</param>
/// <param name="Header">The packet's parsed header (its payload as far as NFLOG copied it).</param>
internal sealed record NflogPacket(string Prefix, bool Inbound, PacketHeader Header);

/// <summary>
/// Decodes what NETLINK_NETFILTER sockets receive: ctnetlink events (NFNL_SUBSYS_CTNETLINK) and NFLOG packets
/// (NFNL_SUBSYS_ULOG), with the netlink walker the firewall's conntrack sweep uses (<see cref="NetlinkReader"/>).
/// nfnetlink attributes are in network byte order. Malformed messages are skipped, never thrown on: the kernel is
/// trusted, but a short read must not stop a reader.
/// </summary>
internal static class KernelFlowMessages
{
    private const int SubsysCtnetlink = 1;
    private const int SubsysUlog = 4;
    private const int CtMsgNew = 0;
    private const int CtMsgDelete = 2;
    private const int UlogMsgPacket = 0;
    private const int UlogMsgConfig = 1;

    // enum ctattr_type
    private const ushort CtaTupleOrig = 1;
    private const ushort CtaMark = 8;
    private const ushort CtaCountersOrig = 9;
    private const ushort CtaCountersReply = 10;
    private const ushort CtaId = 12;

    // enum ctattr_tuple, ctattr_ip, ctattr_l4proto, ctattr_counters
    private const ushort CtaTupleIp = 1;
    private const ushort CtaTupleProto = 2;
    private const ushort CtaIpV4Src = 1;
    private const ushort CtaIpV4Dst = 2;
    private const ushort CtaIpV6Src = 3;
    private const ushort CtaIpV6Dst = 4;
    private const ushort CtaProtoNum = 1;
    private const ushort CtaProtoSrcPort = 2;
    private const ushort CtaProtoDstPort = 3;
    private const ushort CtaProtoIcmpType = 5;
    private const ushort CtaProtoIcmpCode = 6;
    private const ushort CtaProtoIcmpV6Type = 8;
    private const ushort CtaProtoIcmpV6Code = 9;
    private const ushort CtaCountersPackets = 1;
    private const ushort CtaCountersBytes = 2;

    // enum nfulnl_attr_type, nfulnl_attr_config
    private const ushort NfulaIfindexIndev = 4;
    private const ushort NfulaPayload = 9;
    private const ushort NfulaPrefix = 10;
    private const ushort NfulaCfgCmd = 1;
    private const ushort NfulaCfgMode = 2;
    private const ushort NfulaCfgQthresh = 5;
    private const byte NfulnlCfgCmdBind = 1;
    private const byte NfulnlCopyPacket = 2;

    /// <summary>NFNLGRP_CONNTRACK_NEW and NFNLGRP_CONNTRACK_DESTROY, the multicast groups of confirmed and destroyed entries.</summary>
    public const uint GroupConntrackNew = 1;

    public const uint GroupConntrackDestroy = 3;

    /// <summary>How much of a dropped packet NFLOG copies: enough for any IPv6 header chain to the ports or ICMP type.</summary>
    public const int NflogCopyRange = 256;

    /// <summary>
    /// The kernel-side filter of the conntrack event socket (classic BPF, as libnetfilter_conntrack's): an event is
    /// queued only when its CTA_MARK has every bit of <paramref name="bits"/>, so the host's other connections are
    /// never copied to the agent. It finds the attribute after the netlink and nfgenmsg headers with the
    /// SKF_AD_NLATTR helper, and loads the mark in host order (BPF word loads read network order).
    /// </summary>
    public static (ushort Code, byte JumpTrue, byte JumpFalse, uint K)[] MarkFilter(uint bits) =>
    [
        (0x00, 0, 0, 20),                                   // A = 20: attributes start after nlmsghdr (16) + nfgenmsg (4)
        (0x01, 0, 0, CtaMark),                              // X = CTA_MARK
        (0x30, 0, 0, unchecked((uint)(-0x1000 + 12))),      // A = offset of the first attribute of type X from offset A (SKF_AD_NLATTR), 0 if none
        (0x15, 5, 0, 0),                                    // none: reject
        (0x07, 0, 0, 0),                                    // X = A
        (0x40, 0, 0, 4),                                    // A = the mark (word at X + 4, after the attribute header)
        (0x54, 0, 0, bits),                                 // A &= bits
        (0x15, 0, 1, bits),                                 // A == bits: keep, else reject
        (0x06, 0, 0, 0xFFFF_FFFF),                          // keep the whole message
        (0x06, 0, 0, 0),                                    // reject
    ];

    /// <summary>The conntrack events in one received buffer (other messages skipped).</summary>
    public static List<ConntrackEvent> ParseConntrack(ReadOnlySpan<byte> buffer)
    {
        var events = new List<ConntrackEvent>();
        foreach (var (type, payload) in NetlinkReader.Messages(buffer))
        {
            if (type >> 8 != SubsysCtnetlink || (type & 0xFF) is not (CtMsgNew or CtMsgDelete) || payload.Length < 4)
            {
                continue;
            }

            if (ParseEntry((type & 0xFF) == CtMsgDelete, payload.AsSpan(4)) is { } parsed)
            {
                events.Add(parsed);
            }
        }

        return events;
    }

    /// <summary>The NFLOG packets in one received buffer (other messages, and packets without a payload, skipped).</summary>
    public static List<NflogPacket> ParseNflog(ReadOnlySpan<byte> buffer)
    {
        var packets = new List<NflogPacket>();
        foreach (var (type, payload) in NetlinkReader.Messages(buffer))
        {
            if (type != ((SubsysUlog << 8) | UlogMsgPacket) || payload.Length < 4)
            {
                continue;
            }

            string? prefix = null;
            var inbound = false;
            byte[]? packet = null;
            foreach (var (attribute, value) in NetlinkReader.Attributes(payload.AsSpan(4)))
            {
                switch (attribute)
                {
                    case NfulaPrefix:
                        prefix = Encoding.ASCII.GetString(value).TrimEnd('\0');
                        break;
                    case NfulaIfindexIndev:
                        inbound = true;
                        break;
                    case NfulaPayload:
                        packet = value;
                        break;
                }
            }

            if (prefix is not null && packet is not null && PacketParser.TryParse(packet, out var header))
            {
                packets.Add(new NflogPacket(prefix, inbound, header));
            }
        }

        return packets;
    }

    /// <summary>
    /// The NFULNL_MSG_CONFIG request that binds this socket to NFLOG <paramref name="group"/>, copying
    /// <see cref="NflogCopyRange"/> bytes of each packet, delivered one at a time (queue threshold 1) rather than
    /// batched for a second.
    /// </summary>
    public static byte[] NflogBind(ushort group, uint sequence)
    {
        var writer = new NetlinkWriter();
        writer.BeginMessage((SubsysUlog << 8) | UlogMsgConfig, NetlinkWriter.FlagRequest | NetlinkWriter.FlagAck, sequence, 0, 0);
        writer.Bytes(NfulaCfgCmd, [NfulnlCfgCmdBind]);
        Span<byte> mode = stackalloc byte[6];
        BinaryPrimitives.WriteUInt32BigEndian(mode, NflogCopyRange);
        mode[4] = NfulnlCopyPacket;
        writer.Bytes(NfulaCfgMode, mode);
        Span<byte> threshold = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(threshold, 1);
        writer.Bytes(NfulaCfgQthresh, threshold);
        var message = writer.Finish();
        // nfgenmsg.res_id: the group, big-endian.
        BinaryPrimitives.WriteUInt16BigEndian(message.AsSpan(18), group);
        return message;
    }

    private static ConntrackEvent? ParseEntry(bool destroyed, ReadOnlySpan<byte> attributes)
    {
        byte[]? tuple = null;
        uint mark = 0;
        uint id = 0;
        (ulong Packets, ulong Bytes) original = default, reply = default;
        foreach (var (attribute, value) in NetlinkReader.Attributes(attributes))
        {
            switch (attribute)
            {
                case CtaTupleOrig: tuple = value; break;
                case CtaMark when value.Length == 4: mark = BinaryPrimitives.ReadUInt32BigEndian(value); break;
                case CtaId when value.Length == 4: id = BinaryPrimitives.ReadUInt32BigEndian(value); break;
                case CtaCountersOrig: original = Counters(value); break;
                case CtaCountersReply: reply = Counters(value); break;
            }
        }

        if (tuple is null)
        {
            return null;
        }

        IPAddress? source = null, destination = null;
        byte protocol = 0, icmpType = 0, icmpCode = 0;
        ushort sourcePort = 0, destinationPort = 0;
        foreach (var (part, value) in NetlinkReader.Attributes(tuple))
        {
            if (part == CtaTupleIp)
            {
                foreach (var (field, address) in NetlinkReader.Attributes(value))
                {
                    switch (field)
                    {
                        case CtaIpV4Src or CtaIpV6Src when address.Length is 4 or 16: source = new IPAddress(address); break;
                        case CtaIpV4Dst or CtaIpV6Dst when address.Length is 4 or 16: destination = new IPAddress(address); break;
                    }
                }
            }
            else if (part == CtaTupleProto)
            {
                foreach (var (field, data) in NetlinkReader.Attributes(value))
                {
                    switch (field)
                    {
                        case CtaProtoNum when data.Length >= 1: protocol = data[0]; break;
                        case CtaProtoSrcPort when data.Length == 2: sourcePort = BinaryPrimitives.ReadUInt16BigEndian(data); break;
                        case CtaProtoDstPort when data.Length == 2: destinationPort = BinaryPrimitives.ReadUInt16BigEndian(data); break;
                        case CtaProtoIcmpType or CtaProtoIcmpV6Type when data.Length >= 1: icmpType = data[0]; break;
                        case CtaProtoIcmpCode or CtaProtoIcmpV6Code when data.Length >= 1: icmpCode = data[0]; break;
                    }
                }
            }
        }

        return source is null || destination is null
            ? null
            : new ConntrackEvent(destroyed, id, protocol, source, destination, sourcePort, destinationPort, icmpType, icmpCode,
                original.Packets, original.Bytes, reply.Packets, reply.Bytes, mark);
    }

    private static (ulong Packets, ulong Bytes) Counters(byte[] nested)
    {
        ulong packets = 0, bytes = 0;
        foreach (var (field, value) in NetlinkReader.Attributes(nested))
        {
            // u64 counters (older kernels sent u32: read either).
            var number = value.Length switch
            {
                8 => BinaryPrimitives.ReadUInt64BigEndian(value),
                4 => BinaryPrimitives.ReadUInt32BigEndian(value),
                _ => 0UL,
            };
            if (field == CtaCountersPackets)
            {
                packets = number;
            }
            else if (field == CtaCountersBytes)
            {
                bytes = number;
            }
        }

        return (packets, bytes);
    }
}
