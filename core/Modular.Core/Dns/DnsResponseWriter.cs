using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Core.MeshDns;

/// <summary>
/// Composes a response in a caller's buffer. The question is written first at offset 12, so every record
/// names its owner with a compression pointer into it; local answers therefore stay far below 512 bytes.
/// Writing past the buffer throws (a caller bug, never input-driven: callers give at least 512 bytes).
/// </summary>
public ref struct DnsResponseWriter
{
    private readonly Span<byte> _buffer;
    private int _position;
    private ushort _answers;
    private ushort _authority;
    private ushort _additional;

    public DnsResponseWriter(Span<byte> buffer)
    {
        _buffer = buffer;
        _position = DnsConstants.HeaderLength;
    }

    public readonly int Length => _position;

    /// <summary>Writes the header last, once the record counts are known.</summary>
    public readonly int Finish(ushort id, int flags, bool withQuestion)
    {
        BinaryPrimitives.WriteUInt16BigEndian(_buffer, id);
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[2..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[4..], (ushort)(withQuestion ? 1 : 0));
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[6..], _answers);
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[8..], _authority);
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[10..], _additional);
        return _position;
    }

    /// <summary>The question, exactly as the client spelled it (letter case kept, as 0x20-randomizing resolvers expect).</summary>
    public void WriteQuestion(ReadOnlySpan<byte> name, ushort type, ushort @class)
    {
        name.CopyTo(_buffer[_position..]);
        _position += name.Length;
        WriteUInt16(type);
        WriteUInt16(@class);
    }

    /// <summary>An A or AAAA record owned by the name at <paramref name="ownerOffset"/>.</summary>
    public void WriteAddress(int ownerOffset, IPAddress address, uint ttl)
    {
        var v4 = address.AddressFamily == AddressFamily.InterNetwork;
        WritePointer(ownerOffset);
        WriteUInt16(v4 ? DnsConstants.TypeA : DnsConstants.TypeAaaa);
        WriteUInt16(DnsConstants.ClassIn);
        WriteUInt32(ttl);
        var length = v4 ? 4 : 16;
        WriteUInt16((ushort)length);
        if (!address.TryWriteBytes(_buffer[_position..], out var written) || written != length)
        {
            throw new InvalidOperationException("address did not fit");
        }

        _position += length;
        _answers++;
    }

    /// <summary>A PTR record owned by the name at <paramref name="ownerOffset"/>, pointing at <paramref name="target"/> (wire form).</summary>
    public void WritePtr(int ownerOffset, ReadOnlySpan<byte> target, uint ttl)
    {
        WritePointer(ownerOffset);
        WriteUInt16(DnsConstants.TypePtr);
        WriteUInt16(DnsConstants.ClassIn);
        WriteUInt32(ttl);
        WriteUInt16((ushort)target.Length);
        target.CopyTo(_buffer[_position..]);
        _position += target.Length;
        _answers++;
    }

    /// <summary>
    /// The zone's SOA, owned by the zone name at <paramref name="zoneOffset"/>: in the answer section for an SOA
    /// query, else in authority (negative answers, RFC 2308, so resolvers cache them for <paramref name="ttl"/>).
    /// </summary>
    public void WriteSoa(int zoneOffset, uint serial, uint ttl, bool inAnswer)
    {
        WritePointer(zoneOffset);
        WriteUInt16(DnsConstants.TypeSoa);
        WriteUInt16(DnsConstants.ClassIn);
        WriteUInt32(ttl);
        var lengthAt = _position;
        _position += 2;
        WritePointer(zoneOffset);        // MNAME: the zone itself; each agent is its only server
        _buffer[_position++] = 10;       // RNAME: hostmaster.<zone>
        "hostmaster"u8.CopyTo(_buffer[_position..]);
        _position += 10;
        WritePointer(zoneOffset);
        WriteUInt32(serial);
        WriteUInt32(3600);               // refresh
        WriteUInt32(600);                // retry
        WriteUInt32(86400);              // expire
        WriteUInt32(ttl);                // minimum: the negative-caching TTL
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[lengthAt..], (ushort)(_position - lengthAt - 2));
        if (inAnswer)
        {
            _answers++;
        }
        else
        {
            _authority++;
        }
    }

    /// <summary>An EDNS OPT record (RFC 6891): version 0, no options, our UDP payload size.</summary>
    public void WriteOpt()
    {
        _buffer[_position++] = 0;
        WriteUInt16(DnsConstants.TypeOpt);
        WriteUInt16(DnsConstants.EdnsUdpLimit);
        WriteUInt32(0);
        WriteUInt16(0);
        _additional++;
    }

    private void WritePointer(int offset) => WriteUInt16((ushort)(0xC000 | offset));

    private void WriteUInt16(ushort value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(_buffer[_position..], value);
        _position += 2;
    }

    private void WriteUInt32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_buffer[_position..], value);
        _position += 4;
    }
}
