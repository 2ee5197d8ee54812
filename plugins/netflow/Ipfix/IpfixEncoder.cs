using System.Buffers.Binary;

namespace Modular.Plugins.Netflow.Ipfix;

/// <summary>
/// Writes IPFIX messages (RFC 7011): a 16-byte header, then sets. Modular exports two templates, 256 for IPv4 flows
/// and 257 for IPv6 flows, of standard IANA information elements only, fixed length, in network byte order.
/// </summary>
internal static class IpfixEncoder
{
    public const ushort Version = 10;
    public const int HeaderLength = 16;
    public const int SetHeaderLength = 4;
    public const ushort TemplateSetId = 2;
    public const ushort TemplateIdV4 = 256;
    public const ushort TemplateIdV6 = 257;

    /// <summary>Fits one Ethernet frame with the IP and UDP headers (also over IPv6), so a message is never fragmented.</summary>
    public const int MaxMessageLength = 1400;

    /// <summary>
    /// The IPv4 template's fields (IANA element ID, length). ICMP type and code go both as icmpTypeCodeIPv4 (32, what
    /// nfdump and most collectors read) and as icmpTypeIPv4/icmpCodeIPv4 (176/177); counters are deltas (2 packets, 1
    /// octets) of the one direction the record describes; times are flowStart/EndMilliseconds (152/153); flowDirection
    /// (61) says whether the record's packets came in or went out; forwardingStatus (89) whether they were dropped.
    /// </summary>
    public static readonly (ushort Id, ushort Length)[] FieldsV4 =
    [
        (8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (32, 2), (176, 1), (177, 1), (2, 8), (1, 8), (152, 8), (153, 8), (61, 1), (89, 1),
    ];

    /// <summary>The IPv6 template: as <see cref="FieldsV4"/> with addresses 27/28 and ICMPv6 type/code 139, 178/179.</summary>
    public static readonly (ushort Id, ushort Length)[] FieldsV6 =
    [
        (27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (139, 2), (178, 1), (179, 1), (2, 8), (1, 8), (152, 8), (153, 8), (61, 1), (89, 1),
    ];

    public static readonly int RecordLengthV4 = FieldsV4.Sum(f => f.Length);

    public static readonly int RecordLengthV6 = FieldsV6.Sum(f => f.Length);

    /// <summary>The length of the message <see cref="WriteTemplates"/> writes.</summary>
    public static int TemplateMessageLength => HeaderLength + SetHeaderLength + (4 + (4 * FieldsV4.Length)) + (4 + (4 * FieldsV6.Length));

    /// <summary>
    /// Writes the message header. <paramref name="sequence"/> is the number of data records sent before this message
    /// (RFC 7011 section 3.1, modulo 2^32); <paramref name="exportTimeSeconds"/> is Unix time.
    /// </summary>
    public static void WriteHeader(Span<byte> destination, int length, uint exportTimeSeconds, uint sequence, uint observationDomainId)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, Version);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], checked((ushort)length));
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], exportTimeSeconds);
        BinaryPrimitives.WriteUInt32BigEndian(destination[8..], sequence);
        BinaryPrimitives.WriteUInt32BigEndian(destination[12..], observationDomainId);
    }

    /// <summary>Writes a message carrying one template set with both templates; returns its length.</summary>
    public static int WriteTemplates(Span<byte> destination, uint exportTimeSeconds, uint sequence, uint observationDomainId)
    {
        var length = TemplateMessageLength;
        WriteHeader(destination, length, exportTimeSeconds, sequence, observationDomainId);
        var at = HeaderLength;
        BinaryPrimitives.WriteUInt16BigEndian(destination[at..], TemplateSetId);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(at + 2)..], (ushort)(length - HeaderLength));
        at += SetHeaderLength;
        at = WriteTemplateRecord(destination, at, TemplateIdV4, FieldsV4);
        WriteTemplateRecord(destination, at, TemplateIdV6, FieldsV6);
        return length;
    }

    /// <summary>The length of a data set of <paramref name="records"/> records of one family (0 when there are none).</summary>
    public static int DataSetLength(int records, bool v6) => records == 0 ? 0 : SetHeaderLength + (records * (v6 ? RecordLengthV6 : RecordLengthV4));

    /// <summary>
    /// Writes a message with a data set per family (IPv4 first) holding <paramref name="records"/>; returns its length.
    /// The caller keeps it within <see cref="MaxMessageLength"/> (see <see cref="IpfixMessageBuilder"/>).
    /// </summary>
    public static int WriteData(Span<byte> destination, IReadOnlyList<IpfixRecord> records, uint exportTimeSeconds, uint sequence, uint observationDomainId)
    {
        var v6Count = records.Count(r => r.IsV6);
        var length = HeaderLength + DataSetLength(records.Count - v6Count, false) + DataSetLength(v6Count, true);
        WriteHeader(destination, length, exportTimeSeconds, sequence, observationDomainId);
        var at = HeaderLength;
        at = WriteDataSet(destination, at, records, v6: false);
        WriteDataSet(destination, at, records, v6: true);
        return length;
    }

    private static int WriteTemplateRecord(Span<byte> destination, int at, ushort templateId, (ushort Id, ushort Length)[] fields)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination[at..], templateId);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(at + 2)..], (ushort)fields.Length);
        at += 4;
        foreach (var (id, length) in fields)
        {
            // Enterprise bit clear: IANA elements.
            BinaryPrimitives.WriteUInt16BigEndian(destination[at..], id);
            BinaryPrimitives.WriteUInt16BigEndian(destination[(at + 2)..], length);
            at += 4;
        }

        return at;
    }

    private static int WriteDataSet(Span<byte> destination, int at, IReadOnlyList<IpfixRecord> records, bool v6)
    {
        var count = records.Count(r => r.IsV6 == v6);
        if (count == 0)
        {
            return at;
        }

        BinaryPrimitives.WriteUInt16BigEndian(destination[at..], v6 ? TemplateIdV6 : TemplateIdV4);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(at + 2)..], (ushort)DataSetLength(count, v6));
        at += SetHeaderLength;
        foreach (var record in records)
        {
            if (record.IsV6 == v6)
            {
                at = WriteRecord(destination, at, record);
            }
        }

        return at;
    }

    // In the order of FieldsV4 / FieldsV6.
    private static int WriteRecord(Span<byte> destination, int at, in IpfixRecord record)
    {
        var addressLength = record.IsV6 ? 16 : 4;
        record.Source.TryWriteBytes(destination.Slice(at, addressLength), out _);
        at += addressLength;
        record.Destination.TryWriteBytes(destination.Slice(at, addressLength), out _);
        at += addressLength;
        BinaryPrimitives.WriteUInt16BigEndian(destination[at..], record.SourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(destination[(at + 2)..], record.DestinationPort);
        at += 4;
        destination[at++] = record.Protocol;
        var isIcmp = record.Protocol is 1 or 58;
        BinaryPrimitives.WriteUInt16BigEndian(destination[at..], isIcmp ? (ushort)((record.IcmpType << 8) | record.IcmpCode) : (ushort)0);
        at += 2;
        destination[at++] = isIcmp ? record.IcmpType : (byte)0;
        destination[at++] = isIcmp ? record.IcmpCode : (byte)0;
        BinaryPrimitives.WriteUInt64BigEndian(destination[at..], record.Packets);
        BinaryPrimitives.WriteUInt64BigEndian(destination[(at + 8)..], record.Octets);
        BinaryPrimitives.WriteUInt64BigEndian(destination[(at + 16)..], (ulong)record.StartMilliseconds);
        BinaryPrimitives.WriteUInt64BigEndian(destination[(at + 24)..], (ulong)record.EndMilliseconds);
        at += 32;
        destination[at++] = record.Direction;
        destination[at++] = record.ForwardingStatus;
        return at;
    }
}

/// <summary>
/// Gathers the records of several events into one data message of at most <see cref="IpfixEncoder.MaxMessageLength"/>
/// bytes; an event's records go into one message together. Used by one thread.
/// </summary>
internal sealed class IpfixMessageBuilder
{
    private readonly List<IpfixRecord> _records = [];
    private int _v4;
    private int _v6;

    public int RecordCount => _records.Count;

    /// <summary>Events whose records the message holds.</summary>
    public int EventCount { get; private set; }

    /// <summary>Adds an event's records when they fit (all or none); false when the message is full.</summary>
    public bool TryAdd(ReadOnlySpan<IpfixRecord> records)
    {
        var v4 = _v4;
        var v6 = _v6;
        foreach (var record in records)
        {
            if (record.IsV6)
            {
                v6++;
            }
            else
            {
                v4++;
            }
        }

        if (IpfixEncoder.HeaderLength + IpfixEncoder.DataSetLength(v4, false) + IpfixEncoder.DataSetLength(v6, true) > IpfixEncoder.MaxMessageLength)
        {
            return false;
        }

        foreach (var record in records)
        {
            _records.Add(record);
        }

        (_v4, _v6) = (v4, v6);
        EventCount++;
        return true;
    }

    /// <summary>Writes the message (see <see cref="IpfixEncoder.WriteData"/>) and empties the builder; returns its length.</summary>
    public int Build(Span<byte> destination, uint exportTimeSeconds, uint sequence, uint observationDomainId)
    {
        var length = IpfixEncoder.WriteData(destination, _records, exportTimeSeconds, sequence, observationDomainId);
        _records.Clear();
        _v4 = _v6 = 0;
        EventCount = 0;
        return length;
    }
}
