using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Modular.Core.Lazy;

/// <summary>
/// Reads datagrams from the loopback monitor's socket with recvmsg(2) into one buffer kept for the socket's
/// life, together with the source address and the IP_PKTINFO destination, without allocating. .NET's
/// ReceiveMessageFrom would allocate an IPAddress and an IPEndPoint for each datagram.
/// Linux x86_64/aarch64 ABI: msghdr and cmsghdr as there; no unsafe code (Modular.Core has none).
/// </summary>
internal sealed class LoopbackReceiver
{
    /// <summary>The largest UDP payload: nothing is ever truncated.</summary>
    public const int MaxDatagram = 65535;

    private const int SockAddrInSize = 16;
    private const int CmsgHeaderSize = 16;
    private const int InPktInfoSize = 12;
    private const int ControlSize = 64; // room for IP_PKTINFO and anything else the kernel adds
    private const int AfInet = 2;
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

    private readonly SafeSocketHandle _socket;
    private readonly byte[] _block = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);
    private readonly nint _blockAddress;

    public LoopbackReceiver(SafeSocketHandle socket)
    {
        _socket = socket;
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

    /// <summary>Source IPv4 address of the last datagram, host byte order.</summary>
    public uint Source { get; private set; }

    /// <summary>The IPv4 address the last datagram was sent to (IP_PKTINFO), host byte order.</summary>
    public uint Destination { get; private set; }

    /// <summary>errno of the last failure.</summary>
    public int LastError { get; private set; }

    /// <summary>The last datagram; valid until the next call.</summary>
    public ReadOnlySpan<byte> Datagram => _block.AsSpan(0, _length);

    private int _length;

    /// <summary>Takes one queued datagram without waiting.</summary>
    public Outcome TryReceive()
    {
        var added = false;
        _socket.DangerousAddRef(ref added);
        try
        {
            while (true)
            {
                var header = new MsgHdr
                {
                    Name = _blockAddress + AddressOffset,
                    NameLength = SockAddrInSize,
                    Iov = _blockAddress + IoVecOffset,
                    IovLength = 1,
                    Control = _blockAddress + ControlOffset,
                    ControlLength = ControlSize,
                };
                var received = recvmsg((int)_socket.DangerousGetHandle(), ref header, MsgDontWait);
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
                _socket.DangerousRelease();
            }
        }
    }

    private bool Parse(in MsgHdr header)
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

        Source = BinaryPrimitives.ReadUInt32BigEndian(address[4..]);

        // Walk the control messages for IP_PKTINFO { int ifindex; in_addr spec_dst; in_addr addr }.
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
            if (level == IpProtoIp && type == IpPktInfo && length >= CmsgHeaderSize + InPktInfoSize)
            {
                Destination = BinaryPrimitives.ReadUInt32BigEndian(control[(CmsgHeaderSize + 8)..]);
                return true;
            }

            var space = (length + 7) & ~7;
            if (space >= control.Length)
            {
                break;
            }

            control = control[space..];
        }

        return false;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public nint Name;
        public uint NameLength;
        public nint Iov;
        public nuint IovLength;
        public nint Control;
        public nuint ControlLength;
        public int Flags;
    }

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern nint recvmsg(int fd, ref MsgHdr message, int flags);
}
