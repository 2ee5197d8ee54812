using System.Net;
using Google.Protobuf;
using Modular.Abstractions.Flows;

namespace Modular.Control.Flows;

/// <summary>
/// The Flow API's limits, the same on both ends: the agent's uploader never sends more, and the server refuses a
/// batch over either one whole (nothing of it stored).
/// </summary>
public static class FlowLimits
{
    /// <summary>The most events one batch may carry.</summary>
    public const int MaxBatchEvents = 1000;

    /// <summary>The most bytes one batch's encoded <see cref="FlowBatch"/> may take (well under gRPC's 1 MiB message limit).</summary>
    public const int MaxBatchBytes = 512 * 1024;

    /// <summary>The longest rule or resource ID an event may carry.</summary>
    public const int MaxIdLength = 128;
}

/// <summary>
/// <see cref="FlowEvent"/> to and from its wire form (<see cref="FlowRecord"/>). Decoding checks every field, so a
/// server never stores an event it could not have been sent by a well-behaved agent.
/// </summary>
public static class FlowRecords
{
    /// <summary>The wire form of <paramref name="flowEvent"/>.</summary>
    public static FlowRecord ToRecord(FlowEvent flowEvent)
    {
        ArgumentNullException.ThrowIfNull(flowEvent);
        return new FlowRecord
        {
            Id = GuidBytes(flowEvent.Id),
            FlowId = GuidBytes(flowEvent.FlowId),
            TimestampUnixMs = flowEvent.Timestamp.ToUnixTimeMilliseconds(),
            Type = flowEvent.Type switch
            {
                FlowEventType.Start => FlowRecordType.FlowStart,
                FlowEventType.End => FlowRecordType.FlowEnd,
                _ => FlowRecordType.FlowDrop,
            },
            Direction = flowEvent.Direction == FlowDirection.Ingress ? FlowRecordDirection.FlowIngress : FlowRecordDirection.FlowEgress,
            Protocol = flowEvent.Protocol,
            SourceAddress = ByteString.CopyFrom(flowEvent.SourceAddress.GetAddressBytes()),
            SourcePort = flowEvent.SourcePort,
            DestinationAddress = ByteString.CopyFrom(flowEvent.DestinationAddress.GetAddressBytes()),
            DestinationPort = flowEvent.DestinationPort,
            IcmpType = flowEvent.IcmpType,
            IcmpCode = flowEvent.IcmpCode,
            RxPackets = flowEvent.RxPackets,
            RxBytes = flowEvent.RxBytes,
            TxPackets = flowEvent.TxPackets,
            TxBytes = flowEvent.TxBytes,
            RuleId = flowEvent.RuleId ?? "",
            SourceResourceId = flowEvent.SourceResourceId ?? "",
            DestinationResourceId = flowEvent.DestinationResourceId ?? "",
        };
    }

    /// <summary>
    /// The event <paramref name="record"/> describes, or null with <paramref name="error"/> saying which field is
    /// wrong (an ID not 16 bytes, an address not 4 or 16, a port, protocol or ICMP value out of range, an unknown
    /// type or direction, an over-long ID string, a time before 2000 or after 9999).
    /// </summary>
    public static FlowEvent? TryFromRecord(FlowRecord record, out string error)
    {
        ArgumentNullException.ThrowIfNull(record);
        error = Check(record);
        if (error.Length > 0)
        {
            return null;
        }

        return new FlowEvent(
            new Guid(record.Id.Span, bigEndian: true),
            new Guid(record.FlowId.Span, bigEndian: true),
            DateTimeOffset.FromUnixTimeMilliseconds(record.TimestampUnixMs),
            record.Type switch
            {
                FlowRecordType.FlowStart => FlowEventType.Start,
                FlowRecordType.FlowEnd => FlowEventType.End,
                _ => FlowEventType.Drop,
            },
            record.Direction == FlowRecordDirection.FlowIngress ? FlowDirection.Ingress : FlowDirection.Egress,
            (byte)record.Protocol,
            new IPAddress(record.SourceAddress.Span),
            (ushort)record.SourcePort,
            new IPAddress(record.DestinationAddress.Span),
            (ushort)record.DestinationPort,
            (byte)record.IcmpType,
            (byte)record.IcmpCode,
            record.RxPackets,
            record.RxBytes,
            record.TxPackets,
            record.TxBytes,
            Empty(record.RuleId),
            Empty(record.SourceResourceId),
            Empty(record.DestinationResourceId));
    }

    /// <summary>A UUID's 16 bytes in RFC 4122 (big-endian) order, as the wire carries IDs.</summary>
    public static ByteString GuidBytes(Guid id)
    {
        var bytes = new byte[16];
        id.TryWriteBytes(bytes, bigEndian: true, out _);
        return UnsafeByteOperations.UnsafeWrap(bytes);
    }

    /// <summary>The UUID of 16 wire bytes; false for any other length.</summary>
    public static bool TryGuid(ByteString bytes, out Guid id)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        id = bytes.Length == 16 ? new Guid(bytes.Span, bigEndian: true) : Guid.Empty;
        return bytes.Length == 16;
    }

    private static readonly long MinTime = new DateTimeOffset(2000, 1, 1, 0, 0, 0, TimeSpan.Zero).ToUnixTimeMilliseconds();
    private static readonly long MaxTime = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();

    private static string Check(FlowRecord r)
    {
        if (r.Id.Length != 16 || r.FlowId.Length != 16)
        {
            return "id and flow_id must be 16 bytes";
        }

        if (r.TimestampUnixMs < MinTime || r.TimestampUnixMs > MaxTime)
        {
            return "timestamp_unix_ms is not a plausible time";
        }

        if (!Enum.IsDefined(r.Type) || !Enum.IsDefined(r.Direction))
        {
            return "unknown type or direction";
        }

        if (r.SourceAddress.Length is not (4 or 16) || r.DestinationAddress.Length != r.SourceAddress.Length)
        {
            return "source_address and destination_address must both be 4 (IPv4) or 16 (IPv6) bytes";
        }

        if (r.Protocol > byte.MaxValue || r.SourcePort > ushort.MaxValue || r.DestinationPort > ushort.MaxValue
            || r.IcmpType > byte.MaxValue || r.IcmpCode > byte.MaxValue)
        {
            return "protocol, a port or an ICMP type/code is out of range";
        }

        if (r.RuleId.Length > FlowLimits.MaxIdLength || r.SourceResourceId.Length > FlowLimits.MaxIdLength || r.DestinationResourceId.Length > FlowLimits.MaxIdLength)
        {
            return $"rule_id and resource IDs are at most {FlowLimits.MaxIdLength} characters";
        }

        return "";
    }

    private static string? Empty(string text) => text.Length == 0 ? null : text;
}
