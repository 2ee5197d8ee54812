using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;

namespace Modular.Core.MeshDns;

/// <summary>Limits of forwarding to upstream nameservers.</summary>
public sealed record DnsForwarderOptions
{
    /// <summary>How long one upstream gets to answer over UDP before the next one is tried.</summary>
    public TimeSpan UdpTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>How long the TCP retry of a truncated answer may take (connect, send, receive).</summary>
    public TimeSpan TcpTimeout { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>Forwarded queries in flight at most; past this a query gets SERVFAIL at once rather than queueing.</summary>
    public int MaxConcurrent { get; init; } = 128;
}

/// <summary>
/// Sends a client's query to upstream nameservers and returns the first valid answer. Each attempt uses a
/// fresh connected UDP socket (a random source port) and a fresh random query ID, and accepts only a
/// response with that ID and the same question, so off-path spoofing needs to guess both. An answer with
/// TC set is fetched again over TCP from the same server. Servers are tried in order; a timeout, refused
/// port or unreadable answer moves on to the next. The caller restores the client's ID.
/// </summary>
public sealed class DnsForwarder : IDisposable
{
    private readonly DnsForwarderOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _slots;
    private long _tcpRetries;
    private long _timeouts;
    private long _rejectedBusy;

    public DnsForwarder(DnsForwarderOptions? options, TimeProvider time, ILogger logger)
    {
        _options = options ?? new DnsForwarderOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConcurrent, 1);
        _time = time;
        _logger = logger;
        _slots = new SemaphoreSlim(_options.MaxConcurrent, _options.MaxConcurrent);
    }

    /// <summary>The resolver's own listening endpoint: never forwarded to (a group pointing at this agent would loop).</summary>
    public IPEndPoint? Self { get; set; }

    public long TcpRetries => Interlocked.Read(ref _tcpRetries);

    public long Timeouts => Interlocked.Read(ref _timeouts);

    /// <summary>Queries refused because <see cref="DnsForwarderOptions.MaxConcurrent"/> were in flight.</summary>
    public long RejectedBusy => Interlocked.Read(ref _rejectedBusy);

    /// <summary>
    /// The upstream answer to <paramref name="query"/> in <paramref name="response"/> (which should hold 65,535
    /// bytes for TCP answers), with the upstream's ID; 0 when no server answered.
    /// </summary>
    public async ValueTask<int> ExchangeAsync(ReadOnlyMemory<byte> query, IReadOnlyList<IPEndPoint> servers, Memory<byte> response, CancellationToken cancellationToken)
    {
        if (query.Length < DnsConstants.HeaderLength || !DnsMessageReader.TrySkipName(query.Span, DnsConstants.HeaderLength, out var nameEnd) || nameEnd + 4 > query.Length)
        {
            return 0;
        }

        var questionEnd = nameEnd + 4;
        if (!_slots.Wait(0, CancellationToken.None))
        {
            Interlocked.Increment(ref _rejectedBusy);
            return 0;
        }

        var outgoing = ArrayPool<byte>.Shared.Rent(query.Length);
        try
        {
            query.Span.CopyTo(outgoing);
            foreach (var server in servers)
            {
                if (Self is { } self && server.Equals(self))
                {
                    continue;
                }

                var id = (ushort)RandomNumberGenerator.GetInt32(ushort.MaxValue + 1);
                BinaryPrimitives.WriteUInt16BigEndian(outgoing, id);
                var message = outgoing.AsMemory(0, query.Length);
                var length = await ExchangeUdpAsync(server, message, id, questionEnd, response, cancellationToken);
                if (length > 0 && (BinaryPrimitives.ReadUInt16BigEndian(response.Span[2..]) & DnsConstants.FlagTruncated) != 0)
                {
                    Interlocked.Increment(ref _tcpRetries);
                    var tcpLength = await ExchangeTcpAsync(server, message, id, questionEnd, response, cancellationToken);
                    if (tcpLength > 0)
                    {
                        return tcpLength;
                    }

                    // TCP failed: the truncated UDP answer is still an answer; but it was overwritten, so try the next server.
                    continue;
                }

                if (length > 0)
                {
                    return length;
                }
            }

            return 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(outgoing);
            _slots.Release();
        }
    }

    private async ValueTask<int> ExchangeUdpAsync(IPEndPoint server, ReadOnlyMemory<byte> message, ushort id, int questionEnd, Memory<byte> response, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_options.UdpTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        try
        {
            using var socket = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            socket.Connect(server);
            await socket.SendAsync(message, SocketFlags.None, linked.Token);
            while (true)
            {
                // A connected socket only hears from the server; still, only the matching answer counts.
                var received = await socket.ReceiveAsync(response, SocketFlags.None, linked.Token);
                if (IsAnswerTo(message.Span, id, questionEnd, response.Span[..received]))
                {
                    return received;
                }
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Interlocked.Increment(ref _timeouts);
            _logger.LogDebug("DNS: {Server} did not answer over UDP within {Timeout}", server, _options.UdpTimeout);
            return 0;
        }
        catch (SocketException e)
        {
            _logger.LogDebug("DNS: {Server} over UDP: {Problem}", server, e.SocketErrorCode);
            return 0;
        }
    }

    private async ValueTask<int> ExchangeTcpAsync(IPEndPoint server, ReadOnlyMemory<byte> message, ushort id, int questionEnd, Memory<byte> response, CancellationToken cancellationToken)
    {
        using var timeout = new CancellationTokenSource(_options.TcpTimeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        var framed = ArrayPool<byte>.Shared.Rent(message.Length + 2);
        try
        {
            using var socket = new Socket(server.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            await socket.ConnectAsync(server, linked.Token);
            BinaryPrimitives.WriteUInt16BigEndian(framed, (ushort)message.Length);
            message.Span.CopyTo(framed.AsSpan(2));
            await socket.SendAsync(framed.AsMemory(0, message.Length + 2), SocketFlags.None, linked.Token);
            if (!await DnsTcp.ReadExactlyAsync(socket, response[..2], linked.Token))
            {
                return 0;
            }

            var length = BinaryPrimitives.ReadUInt16BigEndian(response.Span);
            if (length > response.Length || !await DnsTcp.ReadExactlyAsync(socket, response[..length], linked.Token))
            {
                return 0;
            }

            return IsAnswerTo(message.Span, id, questionEnd, response.Span[..length]) ? length : 0;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Interlocked.Increment(ref _timeouts);
            _logger.LogDebug("DNS: {Server} did not answer over TCP within {Timeout}", server, _options.TcpTimeout);
            return 0;
        }
        catch (SocketException e)
        {
            _logger.LogDebug("DNS: {Server} over TCP: {Problem}", server, e.SocketErrorCode);
            return 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(framed);
        }
    }

    public void Dispose() => _slots.Dispose();

    /// <summary>A response (QR) with our ID and our question: name compared ignoring case, type and class exactly.</summary>
    private static bool IsAnswerTo(ReadOnlySpan<byte> query, ushort id, int questionEnd, ReadOnlySpan<byte> answer)
    {
        if (answer.Length < questionEnd
            || BinaryPrimitives.ReadUInt16BigEndian(answer) != id
            || (BinaryPrimitives.ReadUInt16BigEndian(answer[2..]) & DnsConstants.FlagResponse) == 0
            || BinaryPrimitives.ReadUInt16BigEndian(answer[4..]) != 1)
        {
            return false;
        }

        var nameEnd = questionEnd - 4;
        return DnsMessageReader.NamesEqual(query[DnsConstants.HeaderLength..nameEnd], answer[DnsConstants.HeaderLength..nameEnd])
               && query[nameEnd..questionEnd].SequenceEqual(answer[nameEnd..questionEnd]);
    }
}

/// <summary>DNS over TCP framing helpers (RFC 1035 4.2.2: a two-byte length before each message).</summary>
internal static class DnsTcp
{
    /// <summary>Fills <paramref name="buffer"/>; false when the peer closed first.</summary>
    public static async ValueTask<bool> ReadExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var filled = 0;
        while (filled < buffer.Length)
        {
            var read = await socket.ReceiveAsync(buffer[filled..], SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                return false;
            }

            filled += read;
        }

        return true;
    }
}
