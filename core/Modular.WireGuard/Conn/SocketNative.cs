using System.Runtime.InteropServices;

namespace Modular.WireGuard.Conn;

/// <summary>
/// The libc calls and x86_64/aarch64 Linux ABI layouts the batched UDP bind and the TUN need.
/// Declared once here so every native path shares the same, reviewed struct layouts.
/// </summary>
internal static unsafe partial class SocketNative
{
    public const int AF_INET = 2;
    public const int AF_INET6 = 10;
    public const int SOCK_DGRAM = 2;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int IPPROTO_UDP = 17;
    public const int SOL_SOCKET = 1;
    public const int SOL_UDP = 17;
    public const int IPPROTO_IPV6 = 41;
    public const int SO_REUSEADDR = 2;
    public const int SO_SNDBUF = 7;
    public const int SO_RCVBUF = 8;
    public const int SO_SNDBUFFORCE = 32;
    public const int SO_RCVBUFFORCE = 33;
    public const int SO_MARK = 36;
    public const int IPV6_V6ONLY = 26;
    public const int UDP_SEGMENT = 103;
    public const int UDP_GRO = 104;
    public const int MSG_WAITFORONE = 0x10000;
    public const int MSG_DONTWAIT = 0x40;
    public const int SHUT_RDWR = 2;

    public const int EINTR = 4;
    public const int EIO = 5;
    public const int EBADF = 9;
    public const int EAGAIN = 11;
    public const int EINVAL = 22;
    public const int ENOPROTOOPT = 92;
    public const int EOPNOTSUPP = 95;
    public const int ECONNREFUSED = 111;
    public const int EMSGSIZE = 90;

    /// <summary>Room for a sockaddr_in6 (28 bytes), the largest address we use.</summary>
    public const int SockAddrSize = 28;

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public byte* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public byte* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MMsgHdr
    {
        public MsgHdr Header;
        public uint Length;
    }

    /// <summary>struct cmsghdr: size_t len; int level; int type; data follows 8-byte aligned.</summary>
    public const int CmsgHeaderSize = 16;

    /// <summary>CMSG_SPACE for a payload of <paramref name="dataLength"/> bytes.</summary>
    public static int CmsgSpace(int dataLength) => CmsgHeaderSize + ((dataLength + 7) & ~7);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int bind(int fd, byte* address, uint addressLength);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int getsockname(int fd, byte* address, uint* addressLength);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int setsockopt(int fd, int level, int name, void* value, uint valueLength);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int getsockopt(int fd, int level, int name, void* value, uint* valueLength);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int recvmmsg(int fd, MMsgHdr* messages, uint count, int flags, void* timeout);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int sendmmsg(int fd, MMsgHdr* messages, uint count, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int shutdown(int fd, int how);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint read(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint write(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial nint writev(int fd, IoVec* iov, int count);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, void* argument);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, nuint argument);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int eventfd(uint initial, int flags);

    [LibraryImport("libc", SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeoutMs);

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    public const short POLLIN = 1;

    /// <summary>Writes a sockaddr_in or sockaddr_in6 for <paramref name="endpoint"/>; returns its length.</summary>
    public static uint WriteSockAddr(byte* destination, WgEndpoint endpoint, bool asIPv6)
    {
        var span = new Span<byte>(destination, SockAddrSize);
        span.Clear();
        if (!asIPv6)
        {
            *(ushort*)destination = AF_INET;
            span[2] = (byte)(endpoint.Port >> 8);
            span[3] = (byte)endpoint.Port;
            endpoint.WriteAddress(span[4..8]);
            return 16;
        }

        *(ushort*)destination = AF_INET6;
        span[2] = (byte)(endpoint.Port >> 8);
        span[3] = (byte)endpoint.Port;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt128BigEndian(span[8..24], endpoint.Address);
        return SockAddrSize;
    }

    /// <summary>Reads a sockaddr_in or sockaddr_in6; IPv4-mapped IPv6 addresses come back as IPv4 endpoints.</summary>
    public static WgEndpoint ReadSockAddr(byte* source)
    {
        var span = new ReadOnlySpan<byte>(source, SockAddrSize);
        var family = *(ushort*)source;
        var port = (ushort)((span[2] << 8) | span[3]);
        return family == AF_INET
            ? WgEndpoint.FromIPv4(span[4..8], port)
            : WgEndpoint.FromIPv6(span[8..24], port);
    }
}
