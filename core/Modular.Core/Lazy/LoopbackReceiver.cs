using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace Modular.Core.Lazy;

/// <summary>
/// The loopback monitor's socket and the way it reads it: recvmsg(2) into one buffer kept for the socket's life,
/// with the source address and the IP_PKTINFO destination, allocating nothing per datagram (.NET's
/// ReceiveMessageFrom allocates an IPAddress and an IPEndPoint for each). Linux x86_64/aarch64 ABI (msghdr and
/// cmsghdr as there); no unsafe code, since Modular.Core has none. Compiled into Modular.Core (the lazy-connection
/// loopback monitor) and into the proxy-udp plugin (its shared socket), so both read loopback the same way.
/// </summary>
internal sealed class LoopbackReceiver : IDisposable
{
    /// <summary>The largest UDP payload: nothing is ever truncated.</summary>
    public const int MaxDatagram = 65535;

    /// <summary>
    /// Asked for (the kernel caps it at net.core.rmem_max): room for a few thousand handshake initiations, so
    /// that many idle peers waking at once are not lost to a full queue (each loss costs a 5 s retry).
    /// </summary>
    public const int ReceiveBufferBytes = 4 << 20;

    private const int SockAddrInSize = 16;
    private const int CmsgHeaderSize = 16;
    private const int InPktInfoSize = 12;
    private const int ControlSize = 64; // IP_PKTINFO (32) and SO_RXQ_OVFL (24)
    private const int AfInet = 2;
    private const int SolSocket = 1;
    private const int SoBindToDevice = 25;
    private const int SoRxqOvfl = 40;
    private const int IpProtoIp = 0;
    private const int IpPktInfo = 8;
    private const int MsgDontWait = 0x40;
    private const int MsgCtrunc = 0x08;
    private const int MsgTrunc = 0x20;
    private const int Eintr = 4;
    private const int Eagain = 11;

    // One pinned block: datagram, then source sockaddr_in, then control messages, then the iovec.
    private const int AddressOffset = MaxDatagram + 1; // 65536: every part starts 8-byte aligned
    private const int ControlOffset = AddressOffset + SockAddrInSize;
    private const int IoVecOffset = ControlOffset + ControlSize;
    private const int BlockSize = IoVecOffset + 16;

    private readonly byte[] _block = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
    private readonly nint _blockAddress;
    private int _length;
    private long _kernelDrops;

    private LoopbackReceiver(Socket socket, bool boundToLoopback)
    {
        Socket = socket;
        BoundToLoopback = boundToLoopback;
        Port = ((IPEndPoint)socket.LocalEndPoint!).Port;
        _blockAddress = Marshal.UnsafeAddrOfPinnedArrayElement(_block, 0);

        // The iovec never changes: it always points at the datagram area.
        var iov = _block.AsSpan(IoVecOffset, 16);
        BinaryPrimitives.WriteInt64LittleEndian(iov, _blockAddress);
        BinaryPrimitives.WriteInt64LittleEndian(iov[8..], MaxDatagram);
    }

    /// <summary>What one <see cref="TryReceive"/> produced.</summary>
    public enum Outcome
    {
        /// <summary>A whole IPv4 datagram with its destination: see <see cref="Source"/>, <see cref="Destination"/>, <see cref="Datagram"/>.</summary>
        Datagram,

        /// <summary>A datagram that lacked its destination or was cut short; it is gone.</summary>
        Malformed,

        /// <summary>Nothing queued right now.</summary>
        Empty,

        /// <summary>recvmsg failed; see <see cref="LastError"/>.</summary>
        Failed,
    }

    public Socket Socket { get; }

    public int Port { get; }

    /// <summary>Whether SO_BINDTODEVICE "lo" took effect.</summary>
    public bool BoundToLoopback { get; }

    /// <summary>Source IPv4 address of the last datagram, host byte order.</summary>
    public uint Source { get; private set; }

    /// <summary>Source UDP port of the last datagram.</summary>
    public int SourcePort { get; private set; }

    /// <summary>The IPv4 address the last datagram was sent to (IP_PKTINFO), host byte order.</summary>
    public uint Destination { get; private set; }

    /// <summary>errno of the last failure.</summary>
    public int LastError { get; private set; }

    /// <summary>The last datagram; valid until the next call.</summary>
    public ReadOnlySpan<byte> Datagram => _block.AsSpan(0, _length);

    /// <summary>The last datagram as memory (for an awaited send); valid until the next call.</summary>
    public ReadOnlyMemory<byte> DatagramMemory => _block.AsMemory(0, _length);

    /// <summary>Datagrams the kernel dropped because the socket's queue was full (SO_RXQ_OVFL; known when the next one arrives).</summary>
    public long KernelDrops => Interlocked.Read(ref _kernelDrops);

    /// <summary>
    /// Opens the socket in the calling thread's network namespace: UDP on 0.0.0.0 and an ephemeral port, bound to
    /// the device lo, with IP_PKTINFO. Throws <see cref="SocketException"/> when that cannot be done.
    /// </summary>
    /// <param name="purpose">Names the socket in log messages.</param>
    public static LoopbackReceiver Open(ILogger logger, string purpose = "Lazy: the activity socket")
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            var boundToLoopback = false;
            try
            {
                socket.SetRawSocketOption(SolSocket, SoBindToDevice, "lo\0"u8);
                boundToLoopback = true;
            }
            catch (SocketException e)
            {
                // Kernels before 5.7 want CAP_NET_RAW for this. Correctness does not depend on it: only datagrams
                // to a watched 127.128.0.0/9 address from a 127/8 source are reported, and no other host can send
                // those (the kernel drops loopback addresses arriving on a real interface as martians).
                logger.LogWarning("{Socket} cannot be bound to lo ({Error}); relying on its address checks alone", purpose, e.SocketErrorCode);
            }

            socket.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.PacketInformation, true);
            TrySet(socket, () => socket.SetRawSocketOption(SolSocket, SoRxqOvfl, [1, 0, 0, 0]), "SO_RXQ_OVFL", purpose, logger);
            TrySet(socket, () => socket.ReceiveBufferSize = ReceiveBufferBytes, "SO_RCVBUF", purpose, logger);
            socket.Bind(new IPEndPoint(IPAddress.Any, 0));
            return new LoopbackReceiver(socket, boundToLoopback);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Takes one queued datagram without waiting. Throws <see cref="ObjectDisposedException"/> once the socket is closed.</summary>
    public Outcome TryReceive()
    {
        var handle = Socket.SafeHandle;
        var added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            while (true)
            {
                var header = new NativeMessages.MsgHdr
                {
                    Name = _blockAddress + AddressOffset,
                    NameLength = SockAddrInSize,
                    Iov = _blockAddress + IoVecOffset,
                    IovLength = 1,
                    Control = _blockAddress + ControlOffset,
                    ControlLength = ControlSize,
                };
                var received = NativeMessages.RecvMsg((int)handle.DangerousGetHandle(), ref header, MsgDontWait);
                if (received < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Eintr)
                    {
                        continue;
                    }

                    LastError = errno;
                    return errno == Eagain ? Outcome.Empty : Outcome.Failed;
                }

                _length = (int)received;
                return Parse(header) ? Outcome.Datagram : Outcome.Malformed;
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public void Dispose() => Socket.Dispose();

    private bool Parse(in NativeMessages.MsgHdr header)
    {
        if ((header.Flags & (MsgTrunc | MsgCtrunc)) != 0 || header.NameLength < 8)
        {
            return false;
        }

        var address = _block.AsSpan(AddressOffset, SockAddrInSize);
        if (BinaryPrimitives.ReadUInt16LittleEndian(address) != AfInet)
        {
            return false;
        }

        SourcePort = BinaryPrimitives.ReadUInt16BigEndian(address[2..]);
        Source = BinaryPrimitives.ReadUInt32BigEndian(address[4..]);

        // Walk the control messages: IP_PKTINFO { int ifindex; in_addr spec_dst; in_addr addr } and SO_RXQ_OVFL { u32 }.
        var hasDestination = false;
        var control = _block.AsSpan(ControlOffset, (int)Math.Min(header.ControlLength, ControlSize));
        while (control.Length >= CmsgHeaderSize)
        {
            var length = (int)BinaryPrimitives.ReadInt64LittleEndian(control);
            if (length < CmsgHeaderSize || length > control.Length)
            {
                return false;
            }

            var level = BinaryPrimitives.ReadInt32LittleEndian(control[8..]);
            var type = BinaryPrimitives.ReadInt32LittleEndian(control[12..]);
            var data = control[CmsgHeaderSize..length];
            if (level == IpProtoIp && type == IpPktInfo && data.Length >= InPktInfoSize)
            {
                Destination = BinaryPrimitives.ReadUInt32BigEndian(data[8..]);
                hasDestination = true;
            }
            else if (level == SolSocket && type == SoRxqOvfl && data.Length >= 4)
            {
                // The socket's drop count when this datagram was queued: it only grows (until it wraps at 2^32).
                Interlocked.Exchange(ref _kernelDrops, BinaryPrimitives.ReadUInt32LittleEndian(data));
            }

            var space = (length + 7) & ~7;
            if (space >= control.Length)
            {
                break;
            }

            control = control[space..];
        }

        return hasDestination;
    }

    private static void TrySet(Socket socket, Action set, string option, string purpose, ILogger logger)
    {
        try
        {
            set();
        }
        catch (SocketException e)
        {
            logger.LogDebug("{Socket} ({Port}) has no {Option}: {Error}", purpose, socket.LocalEndPoint, option, e.SocketErrorCode);
        }
    }
}
