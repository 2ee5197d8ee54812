using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Interface;

namespace Modular.WireGuard.Kernel;

/// <summary>
/// The kernel WireGuard module's generic netlink family ("wireguard", version 1): encodes
/// WG_CMD_SET_DEVICE from a <see cref="WgDeviceUpdate"/>, decodes WG_CMD_GET_DEVICE dumps
/// into per-peer stats, and sends them on a NETLINK_GENERIC socket.
/// </summary>
internal static class WgNetlink
{
    public const string FamilyName = "wireguard";
    public const byte FamilyVersion = 1;
    public const byte CmdGetDevice = 0;
    public const byte CmdSetDevice = 1;

    public const ushort DeviceIfName = 2;
    public const ushort DevicePrivateKey = 3;
    public const ushort DeviceListenPort = 6;
    public const ushort DeviceFwmark = 7;
    public const ushort DevicePeers = 8;

    public const ushort PeerPublicKey = 1;
    public const ushort PeerPresharedKey = 2;
    public const ushort PeerFlags = 3;
    public const ushort PeerEndpoint = 4;
    public const ushort PeerKeepalive = 5;
    public const ushort PeerLastHandshake = 6;
    public const ushort PeerRxBytes = 7;
    public const ushort PeerTxBytes = 8;
    public const ushort PeerAllowedIps = 9;

    public const uint PeerFlagRemove = 1;
    public const uint PeerFlagReplaceAllowedIps = 2;
    public const uint PeerFlagUpdateOnly = 4;

    public const ushort AllowedIpFamily = 1;
    public const ushort AllowedIpAddress = 2;
    public const ushort AllowedIpCidr = 3;

    /// <summary>Encodes the WG_CMD_SET_DEVICE message for <paramref name="update"/> on interface <paramref name="name"/>.</summary>
    public static byte[] EncodeSetDevice(ushort familyId, uint sequence, string name, WgDeviceUpdate update)
    {
        var w = new NetlinkWriter();
        w.BeginMessage(familyId, NetlinkWriter.FlagRequest | NetlinkWriter.FlagAck, sequence, CmdSetDevice, FamilyVersion);
        w.String(DeviceIfName, name);
        Span<byte> key = stackalloc byte[WgKey.Size];
        if (update.PrivateKey is { } privateKey)
        {
            privateKey.CopyTo(key);
            w.Bytes(DevicePrivateKey, key);
        }

        if (update.ListenPort is { } port)
        {
            w.U16(DeviceListenPort, (ushort)port);
        }

        if (update.Fwmark is { } mark)
        {
            w.U32(DeviceFwmark, mark);
        }

        WgKey? peerKey = update.Peer?.PublicKey ?? update.RemovedPeer ?? update.Endpoint?.PublicKey;
        if (peerKey is { } publicKey)
        {
            var peers = w.BeginNested(DevicePeers);
            var peer = w.BeginNested(0);
            publicKey.CopyTo(key);
            w.Bytes(PeerPublicKey, key);
            if (update.RemovedPeer is not null)
            {
                w.U32(PeerFlags, PeerFlagRemove);
            }
            else if (update.Endpoint is { } endpointOnly)
            {
                w.U32(PeerFlags, PeerFlagUpdateOnly);
                w.Endpoint(PeerEndpoint, endpointOnly.Endpoint);
            }
            else if (update.Peer is { } config)
            {
                w.U32(PeerFlags, PeerFlagReplaceAllowedIps);
                (config.PresharedKey ?? default).CopyTo(key);
                w.Bytes(PeerPresharedKey, key);
                if (config.Endpoint is not null)
                {
                    w.Endpoint(PeerEndpoint, config.Endpoint);
                }

                w.U16(PeerKeepalive, (ushort)(config.PersistentKeepalive ?? TimeSpan.Zero).TotalSeconds);
                var allowed = w.BeginNested(PeerAllowedIps);
                for (var i = 0; i < config.AllowedIps.Count; i++)
                {
                    var prefix = config.AllowedIps[i];
                    var entry = w.BeginNested((ushort)i);
                    var ipv4 = prefix.BaseAddress.AddressFamily == AddressFamily.InterNetwork;
                    w.U16(AllowedIpFamily, ipv4 ? (ushort)2 : (ushort)10);
                    w.Bytes(AllowedIpAddress, prefix.BaseAddress.GetAddressBytes());
                    w.U8(AllowedIpCidr, (byte)prefix.PrefixLength);
                    w.EndNested(entry);
                }

                w.EndNested(allowed);
            }

            w.EndNested(peer);
            w.EndNested(peers);
        }

        key.Clear();
        return w.Finish();
    }

    /// <summary>Encodes a WG_CMD_GET_DEVICE dump request.</summary>
    public static byte[] EncodeGetDevice(ushort familyId, uint sequence, string name)
    {
        var w = new NetlinkWriter();
        w.BeginMessage(familyId, NetlinkWriter.FlagRequest | NetlinkWriter.FlagAck | NetlinkWriter.FlagDump, sequence, CmdGetDevice, FamilyVersion);
        w.String(DeviceIfName, name);
        return w.Finish();
    }

    /// <summary>Reads peers from the messages of a GET_DEVICE dump (one receive's worth); returns true at NLMSG_DONE.</summary>
    public static bool DecodeGetDevice(ReadOnlySpan<byte> messages, Dictionary<WgKey, WgPeerStats> into)
    {
        var done = false;
        foreach (var (type, payload) in NetlinkReader.Messages(messages))
        {
            if (type == NetlinkReader.MessageDone)
            {
                done = true;
                continue;
            }

            if (type == NetlinkReader.MessageError)
            {
                NetlinkReader.ThrowIfError(payload);
                continue;
            }

            if (payload.Length < 4)
            {
                continue;
            }

            foreach (var (attribute, value) in NetlinkReader.Attributes(payload.AsSpan(4)))
            {
                if (attribute != DevicePeers)
                {
                    continue;
                }

                foreach (var (_, peer) in NetlinkReader.Attributes(value))
                {
                    DecodePeer(peer, into);
                }
            }
        }

        return done;
    }

    private static void DecodePeer(ReadOnlySpan<byte> peer, Dictionary<WgKey, WgPeerStats> into)
    {
        WgKey? key = null;
        DateTimeOffset? handshake = null;
        long rx = 0, tx = 0;
        IPEndPoint? endpoint = null;
        foreach (var (type, value) in NetlinkReader.Attributes(peer))
        {
            switch (type)
            {
                case PeerPublicKey when value.Length == WgKey.Size:
                    key = new WgKey(value);
                    break;
                case PeerLastHandshake when value.Length >= 16:
                    var seconds = BinaryPrimitives.ReadInt64LittleEndian(value);
                    var nanoseconds = BinaryPrimitives.ReadInt64LittleEndian(value.AsSpan(8));
                    handshake = seconds == 0 && nanoseconds == 0 ? null : DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(nanoseconds / 100);
                    break;
                case PeerRxBytes when value.Length >= 8:
                    rx = BinaryPrimitives.ReadInt64LittleEndian(value);
                    break;
                case PeerTxBytes when value.Length >= 8:
                    tx = BinaryPrimitives.ReadInt64LittleEndian(value);
                    break;
                case PeerEndpoint when value.Length >= 16:
                    endpoint = NetlinkReader.ReadSockAddr(value);
                    break;
            }
        }

        if (key is { } publicKey)
        {
            into[publicKey] = new WgPeerStats(handshake, rx, tx, endpoint);
        }
    }

    public static void SetDevice(string name, WgDeviceUpdate update)
    {
        using var socket = new GenericNetlinkSocket();
        var family = socket.ResolveFamily(FamilyName);
        var request = EncodeSetDevice(family, socket.NextSequence(), name, update);
        try
        {
            socket.Request(request, static (_, _) => { });
        }
        finally
        {
            Array.Clear(request);
        }
    }

    public static IReadOnlyDictionary<WgKey, WgPeerStats> GetPeerStats(string name)
    {
        using var socket = new GenericNetlinkSocket();
        var family = socket.ResolveFamily(FamilyName);
        var stats = new Dictionary<WgKey, WgPeerStats>();
        socket.Request(EncodeGetDevice(family, socket.NextSequence(), name), (buffer, _) => DecodeGetDevice(buffer, stats));
        return stats;
    }
}

/// <summary>Builds one netlink message with a generic netlink header and (nested) attributes.</summary>
internal sealed class NetlinkWriter
{
    public const ushort FlagRequest = 1;
    public const ushort FlagAck = 4;
    public const ushort FlagDump = 0x300;
    public const ushort FlagNested = 0x8000;

    private readonly List<byte> _bytes = [];

    public void BeginMessage(ushort type, ushort flags, uint sequence, byte command, byte version)
    {
        _bytes.Clear();
        Span<byte> header = stackalloc byte[20];
        BinaryPrimitives.WriteUInt16LittleEndian(header[4..], type);
        BinaryPrimitives.WriteUInt16LittleEndian(header[6..], flags);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], sequence);
        header[16] = command;
        header[17] = version;
        Append(header);
    }

    public void Bytes(ushort type, ReadOnlySpan<byte> value)
    {
        Span<byte> header = stackalloc byte[4];
        BinaryPrimitives.WriteUInt16LittleEndian(header, (ushort)(4 + value.Length));
        BinaryPrimitives.WriteUInt16LittleEndian(header[2..], type);
        Append(header);
        Append(value);
        Pad();
    }

    public void U8(ushort type, byte value) => Bytes(type, [value]);

    public void U16(ushort type, ushort value)
    {
        Span<byte> v = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(v, value);
        Bytes(type, v);
    }

    public void U32(ushort type, uint value)
    {
        Span<byte> v = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(v, value);
        Bytes(type, v);
    }

    public void String(ushort type, string value)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(value) + 1];
        Encoding.UTF8.GetBytes(value, bytes);
        Bytes(type, bytes);
    }

    /// <summary>A sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes); port in network order.</summary>
    public void Endpoint(ushort type, IPEndPoint endpoint)
    {
        var address = endpoint.Address.IsIPv4MappedToIPv6 ? endpoint.Address.MapToIPv4() : endpoint.Address;
        var ipv4 = address.AddressFamily == AddressFamily.InterNetwork;
        var sockaddr = new byte[ipv4 ? 16 : 28];
        BinaryPrimitives.WriteUInt16LittleEndian(sockaddr, ipv4 ? (ushort)2 : (ushort)10);
        BinaryPrimitives.WriteUInt16BigEndian(sockaddr.AsSpan(2), (ushort)endpoint.Port);
        address.GetAddressBytes().CopyTo(sockaddr, ipv4 ? 4 : 8);
        if (!ipv4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(sockaddr.AsSpan(24), (uint)address.ScopeId);
        }

        Bytes(type, sockaddr);
    }

    public int BeginNested(ushort type)
    {
        var start = _bytes.Count;
        Span<byte> header = stackalloc byte[4];
        BinaryPrimitives.WriteUInt16LittleEndian(header[2..], (ushort)(type | FlagNested));
        Append(header);
        return start;
    }

    public void EndNested(int start)
    {
        var length = (ushort)(_bytes.Count - start);
        _bytes[start] = (byte)length;
        _bytes[start + 1] = (byte)(length >> 8);
    }

    public byte[] Finish()
    {
        var message = _bytes.ToArray();
        BinaryPrimitives.WriteUInt32LittleEndian(message, (uint)message.Length);
        _bytes.Clear();
        return message;
    }

    private void Append(ReadOnlySpan<byte> data)
    {
        foreach (var b in data)
        {
            _bytes.Add(b);
        }
    }

    private void Pad()
    {
        while (_bytes.Count % 4 != 0)
        {
            _bytes.Add(0);
        }
    }
}

/// <summary>Walks netlink messages and attributes; malformed lengths end the walk instead of throwing.</summary>
internal static class NetlinkReader
{
    public const ushort MessageError = 2;
    public const ushort MessageDone = 3;

    public static List<(ushort Type, byte[] Payload)> Messages(ReadOnlySpan<byte> buffer)
    {
        var messages = new List<(ushort, byte[])>();
        while (buffer.Length >= 16)
        {
            var length = (int)BinaryPrimitives.ReadUInt32LittleEndian(buffer);
            if (length < 16 || length > buffer.Length)
            {
                break;
            }

            messages.Add((BinaryPrimitives.ReadUInt16LittleEndian(buffer[4..]), buffer[16..length].ToArray()));
            buffer = buffer[Math.Min(buffer.Length, (length + 3) & ~3)..];
        }

        return messages;
    }

    public static List<(ushort Type, byte[] Value)> Attributes(ReadOnlySpan<byte> buffer)
    {
        var attributes = new List<(ushort, byte[])>();
        while (buffer.Length >= 4)
        {
            var length = BinaryPrimitives.ReadUInt16LittleEndian(buffer);
            if (length < 4 || length > buffer.Length)
            {
                break;
            }

            var type = (ushort)(BinaryPrimitives.ReadUInt16LittleEndian(buffer[2..]) & 0x3FFF);
            attributes.Add((type, buffer[4..length].ToArray()));
            buffer = buffer[Math.Min(buffer.Length, (length + 3) & ~3)..];
        }

        return attributes;
    }

    /// <summary>NLMSG_ERROR carries a negative errno (0 is an ACK).</summary>
    public static void ThrowIfError(ReadOnlySpan<byte> payload)
    {
        var error = payload.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(payload) : -22;
        if (error != 0)
        {
            throw new IOException($"netlink request failed: errno {-error}");
        }
    }

    public static IPEndPoint? ReadSockAddr(ReadOnlySpan<byte> sockaddr)
    {
        var family = BinaryPrimitives.ReadUInt16LittleEndian(sockaddr);
        var port = BinaryPrimitives.ReadUInt16BigEndian(sockaddr[2..]);
        return family switch
        {
            2 => new IPEndPoint(new IPAddress(sockaddr.Slice(4, 4)), port),
            10 when sockaddr.Length >= 24 => new IPEndPoint(new IPAddress(sockaddr.Slice(8, 16)), port),
            _ => null,
        };
    }
}

/// <summary>
/// A netlink socket (NETLINK_GENERIC unless told otherwise; the firewall's conntrack sweep uses NETLINK_NETFILTER,
/// whose nfgenmsg header has the same 4-byte shape): one request at a time, answers read until the ACK or NLMSG_DONE.
/// The socket belongs to the network namespace of the thread that created it.
/// </summary>
internal sealed unsafe partial class GenericNetlinkSocket : IDisposable
{
    private const int AfNetlink = 16;
    private const int SockRaw = 3;
    private const int SockCloexec = 0x80000;
    private const int NetlinkGeneric = 16;

    /// <summary>NETLINK_NETFILTER: nfnetlink (ctnetlink, the conntrack table).</summary>
    public const int NetlinkNetfilter = 12;
    private const ushort GenlIdCtrl = 0x10;
    private const byte CtrlCmdGetFamily = 3;
    private const ushort CtrlAttrFamilyId = 1;
    private const ushort CtrlAttrFamilyName = 2;

    private readonly int _fd;
    private uint _sequence = (uint)Environment.TickCount;
    private bool _bound;

    public GenericNetlinkSocket(int protocol = NetlinkGeneric)
    {
        _fd = socket(AfNetlink, SockRaw | SockCloexec, protocol);
        if (_fd < 0)
        {
            throw new IOException($"netlink socket: {Marshal.GetLastPInvokeErrorMessage()}");
        }
    }

    public uint NextSequence() => ++_sequence;

    public ushort ResolveFamily(string name)
    {
        var w = new NetlinkWriter();
        w.BeginMessage(GenlIdCtrl, NetlinkWriter.FlagRequest, NextSequence(), CtrlCmdGetFamily, 1);
        w.String(CtrlAttrFamilyName, name);
        ushort id = 0;
        Request(w.Finish(), (buffer, _) =>
        {
            foreach (var (type, payload) in NetlinkReader.Messages(buffer))
            {
                if (type == NetlinkReader.MessageError)
                {
                    NetlinkReader.ThrowIfError(payload);
                    continue;
                }

                foreach (var (attribute, value) in NetlinkReader.Attributes(payload.AsSpan(4)))
                {
                    if (attribute == CtrlAttrFamilyId && value.Length >= 2)
                    {
                        id = BinaryPrimitives.ReadUInt16LittleEndian(value);
                    }
                }
            }
        });
        return id != 0 ? id : throw new IOException($"generic netlink family '{name}' not found (no WireGuard kernel module?)");
    }

    /// <summary>Sends <paramref name="request"/> and feeds each received buffer to <paramref name="onBuffer"/> until an ACK, error or NLMSG_DONE.</summary>
    public void Request(byte[] request, Action<byte[], int> onBuffer)
    {
        fixed (byte* data = request)
        {
            if (send(_fd, data, (nuint)request.Length, 0) < 0)
            {
                throw new IOException($"netlink send: {Marshal.GetLastPInvokeErrorMessage()}");
            }
        }

        var buffer = new byte[65536];
        while (true)
        {
            nint n;
            fixed (byte* data = buffer)
            {
                n = recv(_fd, data, (nuint)buffer.Length, 0);
            }

            if (n < 0)
            {
                throw new IOException($"netlink recv: {Marshal.GetLastPInvokeErrorMessage()}");
            }

            var received = buffer.AsSpan(0, (int)n).ToArray();
            var finished = false;
            foreach (var (type, payload) in NetlinkReader.Messages(received))
            {
                if (type is NetlinkReader.MessageError or NetlinkReader.MessageDone)
                {
                    finished = true;
                }

                if (type == NetlinkReader.MessageError)
                {
                    NetlinkReader.ThrowIfError(payload);
                }
            }

            onBuffer(received, received.Length);
            if (finished)
            {
                return;
            }
        }
    }

    /// <summary>Joins multicast group <paramref name="group"/> (NETLINK_ADD_MEMBERSHIP): its events arrive on <see cref="Receive"/>.</summary>
    public void Subscribe(uint group)
    {
        if (!_bound)
        {
            // Multicast reaches only bound sockets (a socket that never sent has no port ID yet): the kernel picks one.
            var address = stackalloc byte[12];
            new Span<byte>(address, 12).Clear();
            address[0] = AfNetlink;
            if (bind(_fd, address, 12) != 0)
            {
                throw new IOException($"netlink bind: {Marshal.GetLastPInvokeErrorMessage()}");
            }

            _bound = true;
        }

        SetOption(SolNetlink, NetlinkAddMembership, (int)group, "NETLINK_ADD_MEMBERSHIP");
    }

    /// <summary>
    /// For event readers: <see cref="Receive"/> gives up after <paramref name="timeout"/> (so a reader notices it was
    /// stopped), and the receive buffer is <paramref name="bytes"/> (SO_RCVBUFFORCE as root, else capped by the
    /// host's rmem_max), so a burst of events is queued rather than lost.
    /// </summary>
    public void ConfigureReader(TimeSpan timeout, int bytes)
    {
        var value = new Timeval { Seconds = (long)timeout.TotalSeconds, Microseconds = timeout.Microseconds + (timeout.Milliseconds * 1000) };
        if (setsockopt(_fd, SolSocket, SoRcvTimeo, &value, (uint)sizeof(Timeval)) != 0)
        {
            throw new IOException($"netlink SO_RCVTIMEO: {Marshal.GetLastPInvokeErrorMessage()}");
        }

        var size = bytes;
        if (setsockopt(_fd, SolSocket, SoRcvBufForce, &size, sizeof(int)) != 0)
        {
            SetOption(SolSocket, SoRcvBuf, bytes, "SO_RCVBUF");
        }
    }

    /// <summary>
    /// Attaches a classic BPF program (SO_ATTACH_FILTER) that the kernel runs on every message before queueing it:
    /// what it rejects never reaches this socket. Each instruction is (code, jump if true, jump if false, k).
    /// </summary>
    public void AttachFilter(ReadOnlySpan<(ushort Code, byte JumpTrue, byte JumpFalse, uint K)> program)
    {
        var instructions = new SockFilter[program.Length];
        for (var i = 0; i < program.Length; i++)
        {
            instructions[i] = new SockFilter { Code = program[i].Code, JumpTrue = program[i].JumpTrue, JumpFalse = program[i].JumpFalse, K = program[i].K };
        }

        fixed (SockFilter* filter = instructions)
        {
            var fprog = new SockFprog { Length = (ushort)instructions.Length, Filter = filter };
            if (setsockopt(_fd, SolSocket, SoAttachFilter, &fprog, (uint)sizeof(SockFprog)) != 0)
            {
                throw new IOException($"netlink SO_ATTACH_FILTER: {Marshal.GetLastPInvokeErrorMessage()}");
            }
        }
    }

    /// <summary>Sends one message without waiting for an answer (an event reader's configuration; its ACK arrives on <see cref="Receive"/>).</summary>
    public void Send(byte[] message)
    {
        fixed (byte* data = message)
        {
            if (send(_fd, data, (nuint)message.Length, 0) < 0)
            {
                throw new IOException($"netlink send: {Marshal.GetLastPInvokeErrorMessage()}");
            }
        }
    }

    /// <summary>
    /// Reads one buffer of messages: its length, 0 when nothing came within the reader's timeout, or -1 when the
    /// kernel dropped messages because the reader fell behind (ENOBUFS; the socket goes on). Other errors throw.
    /// </summary>
    public int Receive(byte[] buffer)
    {
        nint n;
        fixed (byte* data = buffer)
        {
            n = recv(_fd, data, (nuint)buffer.Length, 0);
        }

        if (n >= 0)
        {
            return (int)n;
        }

        var errno = Marshal.GetLastPInvokeError();
        return errno switch
        {
            EAgain or EIntr => 0,
            ENoBufs => -1,
            _ => throw new IOException($"netlink recv: {Marshal.GetLastPInvokeErrorMessage()}"),
        };
    }

    public void Dispose() => close(_fd);

    private void SetOption(int level, int name, int value, string what)
    {
        if (setsockopt(_fd, level, name, &value, sizeof(int)) != 0)
        {
            throw new IOException($"netlink {what}: {Marshal.GetLastPInvokeErrorMessage()}");
        }
    }

    private const int SolSocket = 1;
    private const int SoRcvBuf = 8;
    private const int SoRcvTimeo = 20;
    private const int SoRcvBufForce = 33;
    private const int SolNetlink = 270;
    private const int NetlinkAddMembership = 1;
    private const int EIntr = 4;
    private const int EAgain = 11;
    private const int ENoBufs = 105;

    private const int SoAttachFilter = 26;

    [StructLayout(LayoutKind.Sequential)]
    private struct SockFilter
    {
        public ushort Code;
        public byte JumpTrue;
        public byte JumpFalse;
        public uint K;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SockFprog
    {
        public ushort Length;
        public SockFilter* Filter;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Timeval
    {
        public long Seconds;
        public long Microseconds;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int bind(int fd, byte* address, uint length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int setsockopt(int fd, int level, int name, void* value, uint length);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint send(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recv(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);
}
