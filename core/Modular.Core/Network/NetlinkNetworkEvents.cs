using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Kernel;

namespace Modular.Core.Network;

/// <summary>
/// The host's link, address and route changes from an rtnetlink socket (RTMGRP_LINK, IPV4/IPV6_IFADDR and
/// IPV4/IPV6_ROUTE), read by one background thread; rules are not subscribed (only the agent changes them).
/// The socket belongs to the network namespace of the thread that opens it. Interface indexes are named from a
/// link dump taken at start and from later link messages, so an interface that was just deleted keeps its name.
/// </summary>
internal sealed class NetlinkNetworkEvents : INetworkEvents
{
    private const int NetlinkRoute = 0;
    private const uint GroupLink = 1;
    private const uint GroupIpv4Address = 5;
    private const uint GroupIpv4Route = 7;
    private const uint GroupIpv6Address = 9;
    private const uint GroupIpv6Route = 11;

    private const ushort NewLink = 16;
    private const ushort DelLink = 17;
    private const ushort GetLink = 18;
    private const ushort NewAddress = 20;
    private const ushort DelAddress = 21;
    private const ushort NewRoute = 24;
    private const ushort DelRoute = 25;
    private const ushort GetRoute = 26;

    private const ushort FlagRequest = 0x1;
    private const ushort FlagReplace = 0x100;
    private const ushort FlagDump = 0x300;

    private const uint InterfaceUp = 0x1;
    private const uint InterfaceRunning = 0x40;
    private const byte RouteUnicast = 1;

    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(250);

    private readonly GenericNetlinkSocket _socket;
    private readonly ILogger _logger;
    private readonly Channel<NetworkEvent> _queue = Channel.CreateUnbounded<NetworkEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly Thread _reader;

    // Reader thread only (and the constructor before it starts).
    private readonly Dictionary<int, string> _names = [];
    private volatile bool _stopping;

    /// <summary>Opens and subscribes the socket in the caller's network namespace, reads the current links and default routes, and starts reading.</summary>
    /// <exception cref="IOException">rtnetlink could not be opened or subscribed.</exception>
    public NetlinkNetworkEvents(ILogger logger)
    {
        _logger = logger;
        _socket = new GenericNetlinkSocket(NetlinkRoute);
        try
        {
            _socket.ConfigureReader(PollInterval, 1 << 20);
            foreach (var group in new[] { GroupLink, GroupIpv4Address, GroupIpv4Route, GroupIpv6Address, GroupIpv6Route })
            {
                _socket.Subscribe(group);
            }

            // The dumps go over a socket of their own: the subscribed one may already carry events.
            using var dump = new GenericNetlinkSocket(NetlinkRoute);
            var defaults = new List<NetworkEvent>();
            dump.Request(DumpRequest(GetLink, 16, dump.NextSequence()), (buffer, length) => Parse(buffer.AsSpan(0, length), _ => { }));
            dump.Request(DumpRequest(GetRoute, 12, dump.NextSequence()), (buffer, length) => Parse(buffer.AsSpan(0, length), e =>
            {
                if (e.Kind == NetworkEventKind.Route && e.PrefixLength == 0)
                {
                    defaults.Add(e);
                }
            }));
            DefaultRoutes = defaults;
        }
        catch
        {
            _socket.Dispose();
            throw;
        }

        _reader = new Thread(Read) { IsBackground = true, Name = "network monitor" };
        _reader.Start();
    }

    public IReadOnlyList<NetworkEvent> DefaultRoutes { get; }

    public ValueTask<NetworkEvent> ReadAsync(CancellationToken cancellationToken) => _queue.Reader.ReadAsync(cancellationToken);

    /// <summary>Stops the reader (within its poll interval) and closes the socket.</summary>
    public void Dispose()
    {
        _stopping = true;
        _reader.Join();
        _socket.Dispose();
        _queue.Writer.TryComplete();
    }

    private void Read()
    {
        var buffer = new byte[1 << 16];
        while (!_stopping)
        {
            int received;
            try
            {
                received = _socket.Receive(buffer);
            }
            catch (IOException e)
            {
                _logger.LogWarning("Network monitor: reading rtnetlink failed ({Problem}); network changes are not watched until the engine restarts", e.Message);
                return;
            }

            if (received < 0)
            {
                // ENOBUFS: a storm of changes overflowed the queue. Nothing says which; the next event still counts.
                _logger.LogDebug("Network monitor: the kernel dropped rtnetlink events (ENOBUFS)");
                continue;
            }

            Parse(buffer.AsSpan(0, received), e => _queue.Writer.TryWrite(e));
        }
    }

    /// <summary>Walks the messages in <paramref name="buffer"/>, keeps the index names current, and hands each change to <paramref name="onEvent"/>.</summary>
    internal void Parse(ReadOnlySpan<byte> buffer, Action<NetworkEvent> onEvent)
    {
        while (buffer.Length >= 16)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer);
            if (length < 16 || length > buffer.Length)
            {
                return;
            }

            var type = BinaryPrimitives.ReadUInt16LittleEndian(buffer[4..]);
            var flags = BinaryPrimitives.ReadUInt16LittleEndian(buffer[6..]);
            var payload = buffer[16..length];
            var e = type switch
            {
                NewLink or DelLink => ParseLink(payload, type == DelLink),
                NewAddress or DelAddress => ParseAddress(payload, type == DelAddress),
                NewRoute or DelRoute => ParseRoute(payload, type == DelRoute, (flags & FlagReplace) != 0),
                _ => null,
            };
            if (e is not null)
            {
                onEvent(e);
            }

            buffer = buffer[Math.Min(buffer.Length, (length + 3) & ~3)..];
        }
    }

    private NetworkEvent? ParseLink(ReadOnlySpan<byte> payload, bool removed)
    {
        if (payload.Length < 16)
        {
            return null;
        }

        var index = BinaryPrimitives.ReadInt32LittleEndian(payload[4..]);
        var flags = BinaryPrimitives.ReadUInt32LittleEndian(payload[8..]);
        foreach (var (attribute, value) in NetlinkReader.Attributes(payload[16..]))
        {
            if (attribute == 3)
            {
                _names[index] = Encoding.UTF8.GetString(value).TrimEnd('\0');
            }
        }

        return new NetworkEvent(NetworkEventKind.Link, removed, Name(index), Up: (flags & (InterfaceUp | InterfaceRunning)) == (InterfaceUp | InterfaceRunning));
    }

    private NetworkEvent? ParseAddress(ReadOnlySpan<byte> payload, bool removed)
    {
        if (payload.Length < 8 || Family(payload[0]) is not { } family)
        {
            return null;
        }

        var index = BinaryPrimitives.ReadInt32LittleEndian(payload[4..]);
        IPAddress? address = null;
        foreach (var (attribute, value) in NetlinkReader.Attributes(payload[8..]))
        {
            // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links (else the same).
            if (attribute == 2 || (attribute == 1 && address is null))
            {
                address = new IPAddress(value);
            }
        }

        return new NetworkEvent(NetworkEventKind.Address, removed, Name(index), Address: address, PrefixLength: payload[1], Family: family);
    }

    private NetworkEvent? ParseRoute(ReadOnlySpan<byte> payload, bool removed, bool replace)
    {
        if (payload.Length < 12 || payload[7] != RouteUnicast || Family(payload[0]) is not { } family)
        {
            return null;
        }

        int table = payload[4];
        var index = 0;
        IPAddress? gateway = null;
        foreach (var (attribute, value) in NetlinkReader.Attributes(payload[12..]))
        {
            switch (attribute)
            {
                case 4 when value.Length >= 4:
                    index = BinaryPrimitives.ReadInt32LittleEndian(value);
                    break;
                case 5:
                    gateway = new IPAddress(value);
                    break;
                case 15 when value.Length >= 4:
                    table = (int)BinaryPrimitives.ReadUInt32LittleEndian(value);
                    break;
            }
        }

        return new NetworkEvent(NetworkEventKind.Route, removed, Name(index), Address: gateway, PrefixLength: payload[1], Table: table, Family: family, Replace: replace);
    }

    private string? Name(int index) => _names.TryGetValue(index, out var name) ? name : null;

    private static AddressFamily? Family(byte family) => family switch
    {
        2 => AddressFamily.InterNetwork,
        10 => AddressFamily.InterNetworkV6,
        _ => null,
    };

    private static byte[] DumpRequest(ushort type, int bodyLength, uint sequence)
    {
        var message = new byte[16 + bodyLength];
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)message.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(4), type);
        BinaryPrimitives.WriteUInt16LittleEndian(message.AsSpan(6), FlagRequest | FlagDump);
        BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(8), sequence);
        return message;
    }
}
