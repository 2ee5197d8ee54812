using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using static Modular.WireGuard.Conn.SocketNative;

namespace Modular.WireGuard.Conn;

/// <summary>
/// The Linux UDP bind: one dual-stack socket (IPv4 arrives IPv4-mapped; an IPv4-only socket
/// where IPv6 is off) moved with recvmmsg/sendmmsg over preallocated, pinned message arrays.
/// On receive UDP_GRO lets the kernel hand over many datagrams of a flow as one buffer, split
/// here by the gso_size it reports; on send, consecutive equal-size datagrams to one endpoint
/// go out as one UDP_SEGMENT (GSO) message. Both fall back to plain batching where the kernel
/// refuses them. Socket buffers are enlarged (the FORCE variants work as root).
/// The firewall mark (<see cref="SetMark"/>, the UAPI fwmark) is applied as SO_MARK to the open socket and every reopened one.
/// </summary>
public sealed unsafe class UdpBind : IBindWithMark
{
    /// <summary>Messages one recvmmsg fills; with GRO each can hold up to 64 datagrams.</summary>
    private const int ReceiveMessages = 32;

    /// <summary>Largest UDP payload of one GSO message over IPv4 (65535 - 20 - 8).</summary>
    private const int MaxGsoPayload = 65507;

    /// <summary>The kernel's UDP_MAX_SEGMENTS on older kernels; newer allow 128.</summary>
    private const int MaxGsoSegments = 64;

    private const int SocketBufferSize = 7 << 20;

    private readonly object _stateLock = new();
    private readonly ConcurrentQueue<SendContext> _sendContexts = new();
    private Socket? _socket;
    private uint _mark;

    /// <summary>Create with <paramref name="enableOffloads"/> false to measure or test plain batching.</summary>
    public UdpBind(bool enableOffloads = true) => _offloadsAllowed = enableOffloads;

    private readonly bool _offloadsAllowed;

    public int BatchSize => PacketBuffers.DefaultBatchSize;

    /// <summary>True while receive-side UDP_GRO is on.</summary>
    public bool GroEnabled => _socket?.Gro ?? false;

    /// <summary>True while send-side UDP_SEGMENT is in use (turned off after the kernel refused it).</summary>
    public bool GsoEnabled => _socket is { } s && Volatile.Read(ref s.GsoOff) == 0;

    /// <summary>Datagrams the kernel refused (unreachable, no buffer): WireGuard treats them as lost.</summary>
    public long SendErrors => Interlocked.Read(ref _sendErrors);

    private long _sendErrors;

    public IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort)
    {
        lock (_stateLock)
        {
            if (_socket is not null)
            {
                throw new InvalidOperationException("The bind is already open.");
            }

            var socket = Socket.Open(port, _offloadsAllowed);
            if (_mark != 0)
            {
                try
                {
                    socket.SetMark(_mark);
                }
                catch
                {
                    socket.Close();
                    throw;
                }
            }

            _socket = socket;
            actualPort = socket.Port;
            return [socket.Receive];
        }
    }

    public void Close()
    {
        Socket? socket;
        lock (_stateLock)
        {
            socket = _socket;
            _socket = null;
        }

        socket?.Close();
    }

    public void Dispose() => Close();

    public void SetMark(uint mark)
    {
        lock (_stateLock)
        {
            // Applied first, remembered only once the kernel took it, so a refused mark changes nothing.
            _socket?.SetMark(mark);
            _mark = mark;
        }
    }

    /// <summary>The SO_MARK the kernel reports for the open socket (null while closed); for diagnostics and tests.</summary>
    public uint? SocketMark
    {
        get
        {
            lock (_stateLock)
            {
                return _socket?.ReadMark();
            }
        }
    }

    public void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint)
    {
        var socket = _socket ?? throw new ObjectDisposedException(nameof(UdpBind));
        if (!_sendContexts.TryDequeue(out var context))
        {
            context = new SendContext();
        }

        try
        {
            for (var start = 0; start < count; start += PacketBuffers.DefaultBatchSize)
            {
                var errors = socket.Send(context, packets, sizes, start, Math.Min(count - start, PacketBuffers.DefaultBatchSize), endpoint);
                if (errors > 0)
                {
                    Interlocked.Add(ref _sendErrors, errors);
                }
            }
        }
        finally
        {
            _sendContexts.Enqueue(context);
        }
    }

    /// <summary>Preallocated, pinned send arrays; one per concurrent sender.</summary>
    private sealed class SendContext
    {
        public readonly MMsgHdr[] Messages = GC.AllocateArray<MMsgHdr>(PacketBuffers.DefaultBatchSize, pinned: true);
        public readonly IoVec[] Iovs = GC.AllocateArray<IoVec>(PacketBuffers.DefaultBatchSize, pinned: true);
        public readonly byte[] Control = GC.AllocateArray<byte>(PacketBuffers.DefaultBatchSize * CmsgSpace(2), pinned: true);
        public readonly byte[] Address = GC.AllocateArray<byte>(SockAddrSize, pinned: true);
        public readonly GCHandle[] Pins = new GCHandle[PacketBuffers.DefaultBatchSize];
    }

    /// <summary>One open socket and its receive state; a reopened bind gets a new one.</summary>
    private sealed class Socket
    {
        private readonly int _fd;
        private readonly bool _ipv6;
        private readonly MMsgHdr[] _messages = GC.AllocateArray<MMsgHdr>(ReceiveMessages, pinned: true);
        private readonly IoVec[] _iovs = GC.AllocateArray<IoVec>(ReceiveMessages, pinned: true);
        private readonly byte[] _addresses = GC.AllocateArray<byte>(ReceiveMessages * SockAddrSize, pinned: true);
        private readonly byte[] _control = GC.AllocateArray<byte>(ReceiveMessages * CmsgSpace(4), pinned: true);
        private readonly byte[][] _buffers;
        private readonly object _receiveLock = new();
        private int _received;
        private int _nextMessage;
        private int _nextOffset;
        private int _closed;
        private int _activeCalls;
        public int GsoOff;

        private Socket(int fd, bool ipv6, ushort port, bool gro, bool gso)
        {
            _fd = fd;
            _ipv6 = ipv6;
            Port = port;
            Gro = gro;
            GsoOff = gso ? 0 : 1;
            var bufferSize = gro ? PacketBuffers.MaxSegmentSize : 65536;
            _buffers = new byte[ReceiveMessages][];
            for (var i = 0; i < ReceiveMessages; i++)
            {
                _buffers[i] = GC.AllocateArray<byte>(bufferSize, pinned: true);
            }
        }

        public ushort Port { get; }

        public bool Gro { get; }

        public static Socket Open(ushort port, bool offloads)
        {
            var ipv6 = true;
            var fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP);
            if (fd < 0)
            {
                ipv6 = false;
                fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP);
            }

            if (fd < 0)
            {
                throw new IOException($"socket() failed: {Marshal.GetLastPInvokeErrorMessage()}");
            }

            try
            {
                var zero = 0;
                if (ipv6)
                {
                    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, 4);
                }

                var size = SocketBufferSize;
                if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4) < 0)
                {
                    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, 4);
                }

                if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, 4) < 0)
                {
                    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, 4);
                }

                var address = stackalloc byte[SockAddrSize];
                var length = WriteSockAddr(address, new WgEndpoint(ipv6 ? UInt128.Zero : (UInt128)0xFFFF << 32, port), ipv6);
                if (bind(fd, address, length) < 0)
                {
                    throw new IOException($"Cannot bind UDP port {port}: {Marshal.GetLastPInvokeErrorMessage()}");
                }

                var actualLength = (uint)SockAddrSize;
                getsockname(fd, address, &actualLength);
                var actualPort = (ushort)((address[2] << 8) | address[3]);

                var one = 1;
                var gro = offloads && setsockopt(fd, SOL_UDP, UDP_GRO, &one, 4) == 0;
                return new Socket(fd, ipv6, actualPort, gro, offloads);
            }
            catch
            {
                close(fd);
                throw;
            }
        }

        public void SetMark(uint mark)
        {
            if (setsockopt(_fd, SOL_SOCKET, SO_MARK, &mark, 4) < 0)
            {
                throw new IOException($"Cannot set fwmark 0x{mark:x} on the UDP socket: {Marshal.GetLastPInvokeErrorMessage()}");
            }
        }

        public uint ReadMark()
        {
            uint mark = 0;
            var length = 4u;
            if (getsockopt(_fd, SOL_SOCKET, SO_MARK, &mark, &length) < 0)
            {
                throw new IOException($"Cannot read SO_MARK: {Marshal.GetLastPInvokeErrorMessage()}");
            }

            return mark;
        }

        /// <summary>The ReceiveFunc: hands out datagrams already received, else blocks in recvmmsg for more.</summary>
        public int Receive(byte[][] packets, int[] sizes, WgEndpoint[] endpoints)
        {
            lock (_receiveLock)
            {
                while (true)
                {
                    ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);

                    if (_nextMessage < _received)
                    {
                        var produced = Drain(packets, sizes, endpoints);
                        if (produced > 0)
                        {
                            return produced;
                        }

                        continue;
                    }

                    ReceiveBatch();
                }
            }
        }

        private void ReceiveBatch()
        {
            _received = 0;
            _nextMessage = 0;
            _nextOffset = 0;
            fixed (MMsgHdr* messages = _messages)
            fixed (IoVec* iovs = _iovs)
            fixed (byte* addresses = _addresses)
            fixed (byte* control = _control)
            {
                var controlSpace = CmsgSpace(4);
                for (var i = 0; i < ReceiveMessages; i++)
                {
                    fixed (byte* buffer = _buffers[i])
                    {
                        iovs[i] = new IoVec { Base = buffer, Length = (nuint)_buffers[i].Length };
                    }

                    messages[i] = new MMsgHdr
                    {
                        Header = new MsgHdr
                        {
                            Name = addresses + (i * SockAddrSize),
                            NameLength = SockAddrSize,
                            Iov = iovs + i,
                            IovLength = 1,
                            Control = Gro ? control + (i * controlSpace) : null,
                            ControlLength = Gro ? (nuint)controlSpace : 0,
                        },
                    };
                }

                Interlocked.Increment(ref _activeCalls);
                int n;
                try
                {
                    if (Volatile.Read(ref _closed) != 0)
                    {
                        return;
                    }

                    n = recvmmsg(_fd, messages, ReceiveMessages, MSG_WAITFORONE, null);
                }
                finally
                {
                    Interlocked.Decrement(ref _activeCalls);
                }

                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno is EINTR or EAGAIN or ECONNREFUSED || Volatile.Read(ref _closed) != 0)
                    {
                        return;
                    }

                    throw new IOException($"recvmmsg failed: errno {errno}");
                }

                _received = n;
            }
        }

        /// <summary>Copies datagrams out of received messages, splitting GRO buffers at their gso_size.</summary>
        private int Drain(byte[][] packets, int[] sizes, WgEndpoint[] endpoints)
        {
            var produced = 0;
            var capacity = Math.Min(packets.Length, Math.Min(sizes.Length, endpoints.Length));
            while (_nextMessage < _received && produced < capacity)
            {
                ref var message = ref _messages[_nextMessage];
                var total = (int)message.Length;
                var segmentSize = total;
                if (Gro)
                {
                    var gso = ReadGroSize(_nextMessage, message.Header.ControlLength);
                    if (gso > 0)
                    {
                        segmentSize = gso;
                    }
                }

                WgEndpoint from;
                fixed (byte* address = &_addresses[_nextMessage * SockAddrSize])
                {
                    from = ReadSockAddr(address);
                }

                var buffer = _buffers[_nextMessage];
                while (_nextOffset < total && produced < capacity)
                {
                    var length = Math.Min(segmentSize, total - _nextOffset);
                    _nextOffset += length;
                    if (length > packets[produced].Length)
                    {
                        // The caller's buffer cannot hold it: drop this datagram, not the batch.
                        continue;
                    }

                    buffer.AsSpan(_nextOffset - length, length).CopyTo(packets[produced]);
                    sizes[produced] = length;
                    endpoints[produced] = from;
                    produced++;
                }

                if (_nextOffset >= total)
                {
                    _nextMessage++;
                    _nextOffset = 0;
                }
            }

            return produced;
        }

        private int ReadGroSize(int message, nuint controlLength)
        {
            var space = CmsgSpace(4);
            var control = _control.AsSpan(message * space, (int)Math.Min((nuint)space, controlLength));
            if (control.Length < CmsgHeaderSize + 4)
            {
                return 0;
            }

            var level = MemoryMarshal.Read<int>(control[8..]);
            var type = MemoryMarshal.Read<int>(control[12..]);
            return level == SOL_UDP && type == UDP_GRO ? MemoryMarshal.Read<int>(control[CmsgHeaderSize..]) : 0;
        }

        /// <summary>Sends a slice of the batch; returns how many datagrams were dropped on errors.</summary>
        public int Send(SendContext context, byte[][] packets, int[] sizes, int start, int count, WgEndpoint endpoint)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);

            if (!_ipv6 && !endpoint.IsIPv4)
            {
                return count;
            }

            var pins = context.Pins;
            for (var i = 0; i < count; i++)
            {
                pins[i] = GCHandle.Alloc(packets[start + i], GCHandleType.Pinned);
            }

            Interlocked.Increment(ref _activeCalls);
            try
            {
                ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);

                var useGso = Volatile.Read(ref GsoOff) == 0;
                var dropped = SendPinned(context, sizes, start, count, endpoint, useGso, out var gsoRefused);
                if (gsoRefused)
                {
                    // The kernel or the route refuses UDP_SEGMENT: stop using it and resend plainly.
                    Volatile.Write(ref GsoOff, 1);
                    dropped = SendPinned(context, sizes, start, count, endpoint, false, out _);
                }

                return dropped;
            }
            finally
            {
                Interlocked.Decrement(ref _activeCalls);
                for (var i = 0; i < count; i++)
                {
                    pins[i].Free();
                }
            }
        }

        private int SendPinned(SendContext context, int[] sizes, int start, int count, WgEndpoint endpoint, bool useGso, out bool gsoRefused)
        {
            gsoRefused = false;
            fixed (MMsgHdr* messages = context.Messages)
            fixed (IoVec* iovs = context.Iovs)
            fixed (byte* control = context.Control)
            fixed (byte* address = context.Address)
            {
                var addressLength = WriteSockAddr(address, endpoint, _ipv6);
                var space = CmsgSpace(2);
                var messageCount = 0;
                var i = 0;
                while (i < count)
                {
                    var size = sizes[start + i];
                    var first = i;
                    var total = 0;
                    do
                    {
                        var length = sizes[start + i];
                        iovs[i] = new IoVec { Base = (byte*)context.Pins[i].AddrOfPinnedObject(), Length = (nuint)length };
                        total += length;
                        i++;
                        if (length < size)
                        {
                            break;
                        }
                    }
                    while (useGso && i < count && i - first < MaxGsoSegments && sizes[start + i] <= size && total + sizes[start + i] <= MaxGsoPayload);

                    var segments = i - first;
                    byte* cmsg = null;
                    nuint cmsgLength = 0;
                    if (segments > 1)
                    {
                        cmsg = control + (messageCount * space);
                        *(nuint*)cmsg = (nuint)(CmsgHeaderSize + 2);
                        *(int*)(cmsg + 8) = SOL_UDP;
                        *(int*)(cmsg + 12) = UDP_SEGMENT;
                        *(ushort*)(cmsg + CmsgHeaderSize) = (ushort)size;
                        cmsgLength = (nuint)space;
                    }

                    messages[messageCount++] = new MMsgHdr
                    {
                        Header = new MsgHdr
                        {
                            Name = address,
                            NameLength = addressLength,
                            Iov = iovs + first,
                            IovLength = (nuint)segments,
                            Control = cmsg,
                            ControlLength = cmsgLength,
                        },
                    };
                }

                var dropped = 0;
                var sent = 0;
                while (sent < messageCount)
                {
                    var n = sendmmsg(_fd, messages + sent, (uint)(messageCount - sent), 0);
                    if (n >= 0)
                    {
                        sent += n;
                        continue;
                    }

                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == EINTR)
                    {
                        continue;
                    }

                    if (useGso && messages[sent].Header.ControlLength != 0 && sent == 0 && errno is (EIO or EINVAL or ENOPROTOOPT or EOPNOTSUPP or EMSGSIZE))
                    {
                        gsoRefused = true;
                        return 0;
                    }

                    // Unreachable, no buffer space, ...: this message is lost, the rest still go.
                    dropped += (int)messages[sent].Header.IovLength;
                    sent++;
                }

                return dropped;
            }
        }

        public void Close()
        {
            if (Interlocked.Exchange(ref _closed, 1) != 0)
            {
                return;
            }

            // shutdown wakes a receiver blocked in recvmmsg; the fd is closed only once no call is inside it.
            shutdown(_fd, SHUT_RDWR);
            var spin = new SpinWait();
            var deadline = Environment.TickCount64 + 5000;
            while (Volatile.Read(ref _activeCalls) != 0 && Environment.TickCount64 < deadline)
            {
                spin.SpinOnce();
            }

            close(_fd);
        }
    }
}
