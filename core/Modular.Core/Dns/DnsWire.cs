using System.Buffers.Binary;

namespace Modular.Core.MeshDns;

/// <summary>RFC 1035 numbers this resolver uses.</summary>
public static class DnsConstants
{
    public const int HeaderLength = 12;

    /// <summary>A name on the wire, length bytes and root included (RFC 1035 2.3.4).</summary>
    public const int MaxNameLength = 255;

    public const int MaxLabelLength = 63;

    /// <summary>The classic UDP limit when the client sent no EDNS OPT record.</summary>
    public const int ClassicUdpLimit = 512;

    /// <summary>What this resolver advertises and honours at most over UDP (the DNS flag day 2020 size: no fragmentation).</summary>
    public const int EdnsUdpLimit = 1232;

    public const ushort TypeA = 1;
    public const ushort TypeNs = 2;
    public const ushort TypeSoa = 6;
    public const ushort TypePtr = 12;
    public const ushort TypeAaaa = 28;
    public const ushort TypeOpt = 41;
    public const ushort TypeAny = 255;

    public const ushort ClassIn = 1;
    public const ushort ClassAny = 255;

    /// <summary>The flag bits of the header's second 16-bit word.</summary>
    public const ushort FlagResponse = 0x8000;
    public const ushort FlagAuthoritative = 0x0400;
    public const ushort FlagTruncated = 0x0200;
    public const ushort FlagRecursionDesired = 0x0100;
    public const ushort FlagRecursionAvailable = 0x0080;
    public const ushort FlagCheckingDisabled = 0x0010;
    public const int OpcodeShift = 11;
    public const ushort OpcodeMask = 0x7800;
    public const ushort RcodeMask = 0x000F;
}

/// <summary>Response codes (RFC 1035 4.1.1).</summary>
public enum DnsRcode : byte
{
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// <summary>Why a message could not be read as a query.</summary>
public enum DnsParseError
{
    None,

    /// <summary>Shorter than a header, or a response: not worth an answer (dropped).</summary>
    NotAQuery,

    /// <summary>A header that can be answered, but a question that cannot be read: FORMERR.</summary>
    Malformed,

    /// <summary>An opcode other than QUERY: NOTIMP.</summary>
    NotImplemented,
}

/// <summary>
/// A query's header and its single question, read straight from the message. The question's name is
/// copied, in wire form and with its original letter case, into a caller-provided buffer (at most
/// <see cref="DnsConstants.MaxNameLength"/> bytes), so parsing allocates nothing.
/// </summary>
public readonly ref struct DnsQuery
{
    public DnsQuery(ushort id, ushort flags, ReadOnlySpan<byte> name, ushort type, ushort @class, int questionEnd, int udpLimit, bool hasOpt)
    {
        Id = id;
        Flags = flags;
        Name = name;
        Type = type;
        Class = @class;
        QuestionEnd = questionEnd;
        UdpLimit = udpLimit;
        HasOpt = hasOpt;
    }

    public ushort Id { get; }

    public ushort Flags { get; }

    /// <summary>The question name, uncompressed wire form (length-prefixed labels, root byte last).</summary>
    public ReadOnlySpan<byte> Name { get; }

    public ushort Type { get; }

    public ushort Class { get; }

    /// <summary>Where the question section ends in the query.</summary>
    public int QuestionEnd { get; }

    /// <summary>How large a UDP answer the client accepts: 512, or its EDNS payload size capped at <see cref="DnsConstants.EdnsUdpLimit"/>.</summary>
    public int UdpLimit { get; }

    /// <summary>Whether the client sent an EDNS OPT record (then the answer carries one too).</summary>
    public bool HasOpt { get; }

    public bool RecursionDesired => (Flags & DnsConstants.FlagRecursionDesired) != 0;
}

/// <summary>RFC 1035 message reading: header, question, names with compression, EDNS OPT. Never throws on bad input.</summary>
public static class DnsMessageReader
{
    /// <summary>Compression pointers followed per name at most; a loop ends here at the latest.</summary>
    private const int MaxPointers = 64;

    /// <summary>Reads the header and the question of <paramref name="message"/>; the name lands in <paramref name="nameBuffer"/>.</summary>
    public static DnsParseError TryParseQuery(ReadOnlySpan<byte> message, Span<byte> nameBuffer, out DnsQuery query)
    {
        query = default;
        if (message.Length < DnsConstants.HeaderLength)
        {
            return DnsParseError.NotAQuery;
        }

        var id = BinaryPrimitives.ReadUInt16BigEndian(message);
        var flags = BinaryPrimitives.ReadUInt16BigEndian(message[2..]);
        if ((flags & DnsConstants.FlagResponse) != 0)
        {
            // Answering a response could bounce between two resolvers forever.
            return DnsParseError.NotAQuery;
        }

        // The header is sound from here on, so errors get an answer with the client's ID.
        query = new DnsQuery(id, flags, default, 0, 0, DnsConstants.HeaderLength, DnsConstants.ClassicUdpLimit, false);
        if ((flags & DnsConstants.OpcodeMask) != 0)
        {
            return DnsParseError.NotImplemented;
        }

        var questions = BinaryPrimitives.ReadUInt16BigEndian(message[4..]);
        if (questions != 1)
        {
            return DnsParseError.Malformed;
        }

        if (!TryReadName(message, DnsConstants.HeaderLength, nameBuffer, out var nameLength, out var position)
            || position + 4 > message.Length)
        {
            return DnsParseError.Malformed;
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(message[position..]);
        var @class = BinaryPrimitives.ReadUInt16BigEndian(message[(position + 2)..]);
        var questionEnd = position + 4;

        // Answer and authority records are unusual in a query but legal; skip them to reach EDNS's OPT.
        var answers = BinaryPrimitives.ReadUInt16BigEndian(message[6..]);
        var authority = BinaryPrimitives.ReadUInt16BigEndian(message[8..]);
        var additional = BinaryPrimitives.ReadUInt16BigEndian(message[10..]);
        var udpLimit = DnsConstants.ClassicUdpLimit;
        var hasOpt = false;
        position = questionEnd;
        for (var i = 0; i < answers + authority + additional; i++)
        {
            if (!TrySkipName(message, position, out position) || position + 10 > message.Length)
            {
                return DnsParseError.Malformed;
            }

            var rrType = BinaryPrimitives.ReadUInt16BigEndian(message[position..]);
            var rrClass = BinaryPrimitives.ReadUInt16BigEndian(message[(position + 2)..]);
            var dataLength = BinaryPrimitives.ReadUInt16BigEndian(message[(position + 8)..]);
            position += 10 + dataLength;
            if (position > message.Length)
            {
                return DnsParseError.Malformed;
            }

            if (rrType == DnsConstants.TypeOpt && i >= answers + authority)
            {
                hasOpt = true;
                udpLimit = Math.Clamp((int)rrClass, DnsConstants.ClassicUdpLimit, DnsConstants.EdnsUdpLimit);
            }
        }

        query = new DnsQuery(id, flags, nameBuffer[..nameLength], type, @class, questionEnd, udpLimit, hasOpt);
        return DnsParseError.None;
    }

    /// <summary>
    /// Reads the (possibly compressed) name at <paramref name="offset"/> into <paramref name="destination"/> in
    /// uncompressed wire form. <paramref name="next"/> is where the name ends in the message (after the first
    /// pointer, if any). False for a truncated name, a reserved label type, a name over 255 bytes, or a
    /// pointer that does not point backwards (which is how loops are refused).
    /// </summary>
    public static bool TryReadName(ReadOnlySpan<byte> message, int offset, Span<byte> destination, out int length, out int next)
    {
        length = 0;
        next = -1;
        var position = offset;
        var pointers = 0;
        while (true)
        {
            if ((uint)position >= (uint)message.Length)
            {
                return false;
            }

            var label = message[position];
            switch (label & 0xC0)
            {
                case 0xC0:
                    if (position + 1 >= message.Length || ++pointers > MaxPointers)
                    {
                        return false;
                    }

                    var target = ((label & 0x3F) << 8) | message[position + 1];
                    if (next < 0)
                    {
                        next = position + 2;
                    }

                    // Only backwards, to a point before this label: a pointer can never revisit itself.
                    if (target >= position)
                    {
                        return false;
                    }

                    position = target;
                    continue;
                case 0x00:
                    break;
                default:
                    return false; // 0x40 and 0x80: extended label types (RFC 6891 deprecated them)
            }

            if (length + 1 + label > DnsConstants.MaxNameLength || position + 1 + label > message.Length)
            {
                return false;
            }

            if (destination.Length < length + 1 + label)
            {
                return false;
            }

            message.Slice(position, 1 + label).CopyTo(destination[length..]);
            length += 1 + label;
            position += 1 + label;
            if (label == 0)
            {
                if (next < 0)
                {
                    next = position;
                }

                return true;
            }
        }
    }

    /// <summary>Skips a name without copying it; checks only that it is readable.</summary>
    public static bool TrySkipName(ReadOnlySpan<byte> message, int offset, out int next)
    {
        Span<byte> scratch = stackalloc byte[DnsConstants.MaxNameLength];
        return TryReadName(message, offset, scratch, out _, out next);
    }

    /// <summary>Whether two wire names are equal, ignoring ASCII letter case (RFC 4343).</summary>
    public static bool NamesEqual(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (a.Length != b.Length)
        {
            return false;
        }

        for (var i = 0; i < a.Length; i++)
        {
            if (a[i] != b[i] && ToLower(a[i]) != ToLower(b[i]))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Where, in wire name <paramref name="name"/>, the suffix equal to <paramref name="suffix"/> starts on a
    /// label boundary; -1 when <paramref name="name"/> is not <paramref name="suffix"/> or below it.
    /// </summary>
    public static int SuffixOffset(ReadOnlySpan<byte> name, ReadOnlySpan<byte> suffix)
    {
        var start = name.Length - suffix.Length;
        if (start < 0)
        {
            return -1;
        }

        // Walk the label boundaries: a match that starts inside a label ("xmesh" vs "mesh") does not count.
        var position = 0;
        while (position < start)
        {
            position += 1 + name[position];
        }

        return position == start && NamesEqual(name[start..], suffix) ? start : -1;
    }

    /// <summary>Writes the labels of wire name <paramref name="name"/> before byte <paramref name="end"/> as lowercase dotted text; false if a label holds a dot or non-ASCII byte.</summary>
    public static bool TryFormatLower(ReadOnlySpan<byte> name, int end, Span<char> destination, out int written)
    {
        written = 0;
        var position = 0;
        while (position < end)
        {
            var label = name[position];
            if (label == 0)
            {
                break;
            }

            if (written > 0)
            {
                destination[written++] = '.';
            }

            foreach (var b in name.Slice(position + 1, label))
            {
                if (b == (byte)'.' || b > 0x7E || b < 0x21)
                {
                    return false;
                }

                destination[written++] = (char)ToLower(b);
            }

            position += 1 + label;
        }

        return true;
    }

    /// <summary>A dotted name (no trailing dot needed) as lowercase wire form; null when it is not a valid DNS name.</summary>
    public static byte[]? ToWireName(string dotted)
    {
        var text = dotted.TrimEnd('.');
        if (text.Length == 0)
        {
            return [0];
        }

        var labels = text.Split('.');
        var wire = new byte[text.Length + 2];
        var position = 0;
        foreach (var label in labels)
        {
            if (label.Length is 0 or > DnsConstants.MaxLabelLength || label.Any(c => c > 0x7E || c < 0x21))
            {
                return null;
            }

            wire[position++] = (byte)label.Length;
            foreach (var c in label)
            {
                wire[position++] = ToLower((byte)c);
            }
        }

        wire[position] = 0;
        return wire.Length > DnsConstants.MaxNameLength ? null : wire;
    }

    private static byte ToLower(byte b) => b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b | 0x20) : b;
}
