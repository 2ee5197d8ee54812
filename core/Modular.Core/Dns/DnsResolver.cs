using System.Buffers.Binary;
using Microsoft.Extensions.Logging;

namespace Modular.Core.MeshDns;

/// <summary>What <see cref="DnsResolver.Answer"/> did with a query.</summary>
public enum DnsOutcome
{
    /// <summary>Not a query (too short, or a response): send nothing.</summary>
    Drop,

    /// <summary>A complete response was written (an answer from the zone, or an error).</summary>
    Answered,

    /// <summary>The name is outside the zone and a nameserver group serves it: call <see cref="DnsResolver.ForwardAsync"/>.</summary>
    Forward,
}

/// <summary>
/// The mesh resolver's logic, independent of sockets. Names in the zone are answered from the current
/// <see cref="DnsRecords"/> (A/AAAA for peers; NXDOMAIN with the SOA for unknown names; NODATA with the
/// SOA for other types); PTR for a peer's IPv4 overlay address (d.c.b.a.in-addr.arpa); other names go to the nameserver group with the longest matching domain, else
/// the default group; with no group they are REFUSED (this resolver is not an open recursive resolver, and
/// REFUSED tells a stub to try its next server). Malformed queries get FORMERR, other opcodes NOTIMP,
/// non-queries nothing. Never throws on input.
/// </summary>
public sealed class DnsResolver
{
    /// <summary>TTL of zone answers and of negative answers: short, since peers come and go with the map.</summary>
    public const uint ZoneTtl = 60;

    private readonly DnsForwarder _forwarder;
    private readonly ILogger _logger;
    private DnsRecords _records = DnsRecords.Empty;
    private long _queries;
    private long _answered;
    private long _nxDomain;
    private long _forwarded;
    private long _refused;
    private long _malformed;
    private long _forwardFailures;

    public DnsResolver(DnsForwarder forwarder, ILogger logger)
    {
        _forwarder = forwarder;
        _logger = logger;
    }

    /// <summary>The records answered from; replaced atomically as a whole (one per network map).</summary>
    public DnsRecords Records
    {
        get => Volatile.Read(ref _records);
        set => Volatile.Write(ref _records, value ?? DnsRecords.Empty);
    }

    public DnsForwarder Forwarder => _forwarder;

    /// <summary>Queries received: every message answered or forwarded (malformed ones too; non-queries are dropped uncounted).</summary>
    public long Queries => Interlocked.Read(ref _queries);

    /// <summary>Names under the zone no peer has (a subset of <see cref="AnsweredFromZone"/>).</summary>
    public long NxDomain => Interlocked.Read(ref _nxDomain);

    /// <summary>Queries answered from the zone or a peer's reverse name (including NXDOMAIN/NODATA).</summary>
    public long AnsweredFromZone => Interlocked.Read(ref _answered);

    public long Forwarded => Interlocked.Read(ref _forwarded);

    /// <summary>Names outside the zone with no nameserver group.</summary>
    public long Refused => Interlocked.Read(ref _refused);

    /// <summary>FORMERR and NOTIMP answers.</summary>
    public long Malformed => Interlocked.Read(ref _malformed);

    /// <summary>Forwarded queries answered SERVFAIL (every upstream failed, or too many in flight).</summary>
    public long ForwardFailures => Interlocked.Read(ref _forwardFailures);

    /// <summary>
    /// Answers <paramref name="query"/> into <paramref name="response"/> (at least 512 bytes) when it can
    /// without the network; <paramref name="upstream"/> is set when it must be forwarded instead.
    /// </summary>
    public DnsOutcome Answer(ReadOnlySpan<byte> query, Span<byte> response, out int written, out DnsUpstreamGroup? upstream)
    {
        written = 0;
        upstream = null;
        Span<byte> nameBuffer = stackalloc byte[DnsConstants.MaxNameLength];
        var error = DnsMessageReader.TryParseQuery(query, nameBuffer, out var q);
        switch (error)
        {
            case DnsParseError.NotAQuery:
                return DnsOutcome.Drop;
        }

        Interlocked.Increment(ref _queries);
        switch (error)
        {
            case DnsParseError.Malformed:
                Interlocked.Increment(ref _malformed);
                written = WriteError(response, q, DnsRcode.FormErr, withQuestion: false);
                return DnsOutcome.Answered;
            case DnsParseError.NotImplemented:
                Interlocked.Increment(ref _malformed);
                written = WriteError(response, q, DnsRcode.NotImp, withQuestion: false);
                return DnsOutcome.Answered;
        }

        var records = Records;
        var zoneStart = records.ZoneWire is { } zoneWire ? DnsMessageReader.SuffixOffset(q.Name, zoneWire) : -1;
        if (zoneStart >= 0)
        {
            Interlocked.Increment(ref _answered);
            written = AnswerFromZone(records, q, zoneStart, response, out var nxDomain);
            if (nxDomain)
            {
                Interlocked.Increment(ref _nxDomain);
            }

            return DnsOutcome.Answered;
        }

        if (q.Type is DnsConstants.TypePtr or DnsConstants.TypeAny && q.Class is DnsConstants.ClassIn or DnsConstants.ClassAny
            && records.FindReverse(q.Name) is { } target)
        {
            // A peer's overlay address: the mesh knows its name; other reverse names go the usual way.
            Interlocked.Increment(ref _answered);
            written = AnswerPtr(q, target, response);
            return DnsOutcome.Answered;
        }

        Span<char> dotted = stackalloc char[DnsConstants.MaxNameLength];
        var group = DnsMessageReader.TryFormatLower(q.Name, q.Name.Length, dotted, out var length) ? records.GroupFor(dotted[..length]) : null;
        if (group is null)
        {
            Interlocked.Increment(ref _refused);
            written = WriteError(response, q, DnsRcode.Refused, withQuestion: true);
            return DnsOutcome.Answered;
        }

        upstream = group;
        return DnsOutcome.Forward;
    }

    /// <summary>
    /// Forwards <paramref name="query"/> to <paramref name="group"/> (see <see cref="DnsForwarder"/>) and writes
    /// the relayed answer, with the client's ID, into <paramref name="response"/>; SERVFAIL when every upstream
    /// failed. Over UDP an answer larger than the client accepts is replaced by a truncated one (TC), so the
    /// client retries over TCP. Returns the response length (0: nothing to send).
    /// </summary>
    public async ValueTask<int> ForwardAsync(ReadOnlyMemory<byte> query, DnsUpstreamGroup group, Memory<byte> response, bool overTcp, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _forwarded);
        var length = await _forwarder.ExchangeAsync(query, group.Servers, response, cancellationToken);
        var nameBuffer = new byte[DnsConstants.MaxNameLength];
        if (DnsMessageReader.TryParseQuery(query.Span, nameBuffer, out var q) != DnsParseError.None)
        {
            return 0;
        }

        if (length <= 0)
        {
            Interlocked.Increment(ref _forwardFailures);
            _logger.LogDebug("DNS: forwarding to group {Group} failed; SERVFAIL", group.Name);
            return WriteError(response.Span, q, DnsRcode.ServFail, withQuestion: true);
        }

        var span = response.Span;
        BinaryPrimitives.WriteUInt16BigEndian(span, q.Id);
        if (!overTcp && length > q.UdpLimit)
        {
            // The whole answer came over TCP from upstream; the client gets the question and TC, and asks over TCP.
            var flags = (ushort)(BinaryPrimitives.ReadUInt16BigEndian(span[2..]) | DnsConstants.FlagTruncated);
            var writer = new DnsResponseWriter(span);
            writer.WriteQuestion(q.Name, q.Type, q.Class);
            return writer.Finish(q.Id, flags, withQuestion: true);
        }

        return length;
    }

    /// <summary>Both steps for a caller that may wait (TCP): the response length, 0 for nothing to send.</summary>
    public async ValueTask<int> ResolveAsync(ReadOnlyMemory<byte> query, Memory<byte> response, bool overTcp, CancellationToken cancellationToken)
    {
        var outcome = Answer(query.Span, response.Span, out var written, out var group);
        return outcome == DnsOutcome.Forward ? await ForwardAsync(query, group!, response, overTcp, cancellationToken) : written;
    }

    private static int AnswerFromZone(DnsRecords records, in DnsQuery q, int zoneStart, Span<byte> response, out bool nxDomain)
    {
        nxDomain = false;
        var writer = new DnsResponseWriter(response);
        writer.WriteQuestion(q.Name, q.Type, q.Class);
        var flags = ResponseFlags(q, DnsRcode.NoError) | DnsConstants.FlagAuthoritative;
        const int nameOffset = DnsConstants.HeaderLength;
        var zoneOffset = nameOffset + zoneStart;
        if (q.Class is not (DnsConstants.ClassIn or DnsConstants.ClassAny))
        {
            return writer.Finish(q.Id, ResponseFlags(q, DnsRcode.Refused), withQuestion: true);
        }

        if (zoneStart == 0)
        {
            // The zone apex: its SOA, nothing else.
            if (q.Type is DnsConstants.TypeSoa or DnsConstants.TypeAny)
            {
                writer.WriteSoa(zoneOffset, records.Serial, ZoneTtl, inAnswer: true);
            }
            else
            {
                writer.WriteSoa(zoneOffset, records.Serial, ZoneTtl, inAnswer: false);
            }

            return FinishWithOpt(ref writer, q, flags);
        }

        Span<char> relative = stackalloc char[DnsConstants.MaxNameLength];
        var host = DnsMessageReader.TryFormatLower(q.Name, zoneStart, relative, out var length) ? records.Find(relative[..length]) : null;
        if (host is null)
        {
            nxDomain = true;
            writer.WriteSoa(zoneOffset, records.Serial, ZoneTtl, inAnswer: false);
            return FinishWithOpt(ref writer, q, (flags & ~DnsConstants.RcodeMask) | (int)DnsRcode.NxDomain);
        }

        var wantsA = q.Type is DnsConstants.TypeA or DnsConstants.TypeAny;
        var wantsAaaa = q.Type is DnsConstants.TypeAaaa or DnsConstants.TypeAny;
        var answered = false;
        if (wantsA && host.V4 is { } v4)
        {
            writer.WriteAddress(nameOffset, v4, ZoneTtl);
            answered = true;
        }

        if (wantsAaaa && host.V6 is { } v6)
        {
            writer.WriteAddress(nameOffset, v6, ZoneTtl);
            answered = true;
        }

        if (!answered)
        {
            // NODATA: the name exists, this type does not.
            writer.WriteSoa(zoneOffset, records.Serial, ZoneTtl, inAnswer: false);
        }

        return FinishWithOpt(ref writer, q, flags);
    }

    private static int AnswerPtr(in DnsQuery q, byte[] target, Span<byte> response)
    {
        var writer = new DnsResponseWriter(response);
        writer.WriteQuestion(q.Name, q.Type, q.Class);
        writer.WritePtr(DnsConstants.HeaderLength, target, ZoneTtl);
        return FinishWithOpt(ref writer, q, ResponseFlags(q, DnsRcode.NoError) | DnsConstants.FlagAuthoritative);
    }

    private static int FinishWithOpt(ref DnsResponseWriter writer, in DnsQuery q, int flags)
    {
        if (q.HasOpt)
        {
            writer.WriteOpt();
        }

        return writer.Finish(q.Id, flags, withQuestion: true);
    }

    private static int WriteError(Span<byte> response, in DnsQuery q, DnsRcode rcode, bool withQuestion)
    {
        var writer = new DnsResponseWriter(response);
        if (withQuestion)
        {
            writer.WriteQuestion(q.Name, q.Type, q.Class);
            if (q.HasOpt)
            {
                writer.WriteOpt();
            }
        }

        return writer.Finish(q.Id, ResponseFlags(q, rcode), withQuestion);
    }

    private static ushort ResponseFlags(in DnsQuery q, DnsRcode rcode)
        => (ushort)(DnsConstants.FlagResponse
                    | (q.Flags & (DnsConstants.OpcodeMask | DnsConstants.FlagRecursionDesired | DnsConstants.FlagCheckingDisabled))
                    | DnsConstants.FlagRecursionAvailable
                    | (ushort)rcode);
}
