using System.Runtime.InteropServices;
using System.Text;
using Modular.WireGuard.Conn;
using static Modular.WireGuard.Conn.SocketNative;

namespace Modular.WireGuard.Tun;

/// <summary>
/// A Linux TUN device (/dev/net/tun). Where the kernel allows it, it is opened with
/// IFF_VNET_HDR and TCP segmentation offload, so one read returns a TSO super-packet (split
/// here into MSS-sized segments) and one write takes a GRO super-packet (coalesced here):
/// that moves dozens of packets per syscall. Reads block on the caller's thread (non-blocking
/// fd plus poll with a wake-up eventfd, so Dispose unblocks them). The interface exists while
/// this object does; Dispose closes the fd and the kernel removes it.
/// </summary>
public sealed unsafe class LinuxTun : ITun
{
    private const uint TunSetIff = 0x400454ca;
    private const uint TunSetOffload = 0x400454d0;
    private const short IffTun = 0x0001;
    private const short IffNoPi = 0x1000;
    private const short IffVnetHdr = 0x4000;
    private const uint TunFCsum = 1;
    private const uint TunFTso4 = 2;
    private const uint TunFTso6 = 4;
    private const int ORdWr = 2;
    private const int ONonBlock = 0x800;
    private const int OCloExec = 0x80000;
    private const int IfNameSize = 16;

    private static readonly System.Buffers.SearchValues<char> ForbiddenNameCharacters = System.Buffers.SearchValues.Create("/: \t\n\r\v\f\"'\\");

    private readonly int _fd;
    private readonly int _wakeFd;
    private readonly object _readLock = new();
    private readonly object _writeLock = new();

    // Reads land here first (virtio header + up to 64 KiB); a super-packet may span several Read calls.
    private readonly byte[] _readBuffer = GC.AllocateArray<byte>(VirtioNetHeader.Size + PacketBuffers.MaxSegmentSize, pinned: true);
    private readonly byte[] _writeBuffer = GC.AllocateArray<byte>(VirtioNetHeader.Size + PacketBuffers.MaxSegmentSize, pinned: true);
    private int _pendingLength;
    private int _pendingNext;
    private int _pendingCount;
    private VirtioNetHeader _pendingHeader;
    private SegmentLayout _pendingLayout;
    private int _disposed;

    private LinuxTun(string name, int fd, int wakeFd, bool offloads, int mtu)
    {
        Name = name;
        _fd = fd;
        _wakeFd = wakeFd;
        OffloadsEnabled = offloads;
        Mtu = mtu;
    }

    public string Name { get; }

    public int Mtu { get; private set; }

    /// <summary>A 64 KiB TSO super-packet at an MTU of 1280 is about 52 segments; 128 leaves room.</summary>
    public int BatchSize => PacketBuffers.DefaultBatchSize;

    /// <summary>True when the fd carries virtio headers with TSO/GRO; false on the plain fallback.</summary>
    public bool OffloadsEnabled { get; }

    /// <summary>Packets the kernel handed us that were malformed or of an unexpected offload type.</summary>
    public long DroppedReads => Interlocked.Read(ref _droppedReads);

    private long _droppedReads;

    /// <summary>
    /// Creates the interface <paramref name="name"/> (or a kernel-chosen name for "tun%d"), sets its MTU.
    /// <paramref name="offloads"/>: try IFF_VNET_HDR with TSO (falls back silently when refused).
    /// </summary>
    public static LinuxTun Create(string name, int mtu = 1280, bool offloads = true)
    {
        ValidateInterfaceName(name);

        var fd = OpenTun(name, offloads, out var actualName, out var offloadsOn);
        if (fd < 0 && offloads)
        {
            fd = OpenTun(name, false, out actualName, out offloadsOn);
        }

        if (fd < 0)
        {
            throw new IOException($"Cannot create TUN '{name}': {Marshal.GetLastPInvokeErrorMessage()} (errno {-fd}).");
        }

        var wakeFd = eventfd(0, OCloExec | ONonBlock);
        if (wakeFd < 0)
        {
            close(fd);
            throw new IOException($"eventfd failed: {Marshal.GetLastPInvokeErrorMessage()}");
        }

        var tun = new LinuxTun(actualName, fd, wakeFd, offloadsOn, mtu);
        try
        {
            RunIp($"link set dev {actualName} mtu {mtu}");
        }
        catch
        {
            tun.Dispose();
            throw;
        }

        return tun;
    }

    private static int OpenTun(string name, bool offloads, out string actualName, out bool offloadsOn)
    {
        actualName = name;
        offloadsOn = false;
        var fd = open("/dev/net/tun", ORdWr | OCloExec | ONonBlock);
        if (fd < 0)
        {
            return -Marshal.GetLastPInvokeError();
        }

        var ifreq = stackalloc byte[40];
        new Span<byte>(ifreq, 40).Clear();
        Encoding.ASCII.GetBytes(name, new Span<byte>(ifreq, IfNameSize));
        *(short*)(ifreq + IfNameSize) = (short)(IffTun | IffNoPi | (offloads ? IffVnetHdr : 0));
        if (ioctl(fd, TunSetIff, ifreq) < 0)
        {
            var error = Marshal.GetLastPInvokeError();
            close(fd);
            Marshal.SetLastPInvokeError(error);
            return -error;
        }

        if (offloads && ioctl(fd, TunSetOffload, (nuint)(TunFCsum | TunFTso4 | TunFTso6)) < 0)
        {
            var error = Marshal.GetLastPInvokeError();
            close(fd);
            Marshal.SetLastPInvokeError(error);
            return -error;
        }

        offloadsOn = offloads;
        actualName = Encoding.ASCII.GetString(new ReadOnlySpan<byte>(ifreq, IfNameSize)).TrimEnd('\0');
        return fd;
    }

    /// <summary>
    /// Throws unless <paramref name="name"/> is a name the kernel accepts (1-15 bytes, no '/', ':' or
    /// whitespace, not "." or ".."), which also keeps it a single word on an `ip` command line.
    /// </summary>
    public static void ValidateInterfaceName(string name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 15 || name is "." or ".."
            || name.AsSpan().IndexOfAny(ForbiddenNameCharacters) >= 0 || !System.Text.Ascii.IsValid(name))
        {
            throw new ArgumentException($"'{name}' is not a valid interface name (1-15 ASCII characters, no '/', ':', quotes or spaces).", nameof(name));
        }
    }

    /// <summary>Sets the link up (address and routes are the caller's, through `ip`).</summary>
    public void Up() => RunIp($"link set dev {Name} up");

    /// <summary>Changes the interface MTU.</summary>
    public void SetMtu(int mtu)
    {
        RunIp($"link set dev {Name} mtu {mtu}");
        Mtu = mtu;
    }

    public int Read(byte[][] packets, int[] sizes, int offset)
    {
        lock (_readLock)
        {
            while (true)
            {
                ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
                if (_pendingNext < _pendingCount)
                {
                    return DrainPending(packets, sizes, offset);
                }

                var length = ReadOnce(packets, sizes, offset);
                if (length > 0)
                {
                    return length;
                }
            }
        }
    }

    /// <summary>One read(2): returns packets delivered (0 means try again).</summary>
    private int ReadOnce(byte[][] packets, int[] sizes, int offset)
    {
        if (!OffloadsEnabled)
        {
            fixed (byte* target = &packets[0][offset])
            {
                var n = read(_fd, target, (nuint)(packets[0].Length - offset));
                if (n < 0)
                {
                    WaitReadable(Marshal.GetLastPInvokeError());
                    return 0;
                }

                sizes[0] = (int)n;
                return n > 0 ? 1 : 0;
            }
        }

        nint got;
        fixed (byte* buffer = _readBuffer)
        {
            got = read(_fd, buffer, (nuint)_readBuffer.Length);
        }

        if (got < 0)
        {
            WaitReadable(Marshal.GetLastPInvokeError());
            return 0;
        }

        if (got <= VirtioNetHeader.Size)
        {
            Interlocked.Increment(ref _droppedReads);
            return 0;
        }

        _pendingHeader = VirtioNetHeader.Read(_readBuffer);
        _pendingLength = (int)got - VirtioNetHeader.Size;
        _pendingCount = OffloadSplitter.Plan(_readBuffer.AsSpan(VirtioNetHeader.Size, _pendingLength), _pendingHeader, out _pendingLayout);
        _pendingNext = 0;
        if (_pendingCount == 0)
        {
            Interlocked.Increment(ref _droppedReads);
            return 0;
        }

        return DrainPending(packets, sizes, offset);
    }

    private int DrainPending(byte[][] packets, int[] sizes, int offset)
    {
        var packet = _readBuffer.AsSpan(VirtioNetHeader.Size, _pendingLength);
        var produced = 0;
        while (_pendingNext < _pendingCount && produced < packets.Length)
        {
            var size = OffloadSplitter.WriteSegment(packet, _pendingHeader, _pendingLayout, _pendingNext, packets[produced].AsSpan(offset));
            _pendingNext++;
            if (size == 0)
            {
                Interlocked.Increment(ref _droppedReads);
                continue;
            }

            sizes[produced++] = size;
        }

        return produced;
    }

    private void WaitReadable(int errno)
    {
        if (errno is not (EAGAIN or EINTR))
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

            // EBADFD: the interface was deleted under us (`ip link del`); the device is gone.
            throw new IOException($"TUN {Name} read failed: errno {errno}");
        }

        var fds = stackalloc PollFd[2];
        fds[0] = new PollFd { Fd = _fd, Events = POLLIN };
        fds[1] = new PollFd { Fd = _wakeFd, Events = POLLIN };
        poll(fds, 2, -1);
        if ((fds[0].Revents & ~POLLIN) != 0 && (fds[0].Revents & POLLIN) == 0)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            throw new IOException($"TUN {Name} is gone (poll events 0x{fds[0].Revents:x})");
        }
    }

    public void Write(byte[][] packets, int[] sizes, int offset, int count)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        lock (_writeLock)
        {
            if (!OffloadsEnabled)
            {
                for (var i = 0; i < count; i++)
                {
                    fixed (byte* packet = &packets[i][offset])
                    {
                        WriteChecked(packet, sizes[i]);
                    }
                }

                return;
            }

            for (var i = 0; i < count;)
            {
                var consumed = OffloadCoalescer.Coalesce(packets, sizes, offset, i, count, _writeBuffer, out var length);
                if (consumed > 1)
                {
                    fixed (byte* buffer = _writeBuffer)
                    {
                        WriteChecked(buffer, length);
                    }
                }
                else
                {
                    WriteAlone(packets[i], sizes[i], offset);
                }

                i += consumed;
            }
        }
    }

    /// <summary>A packet with an all-zero virtio header: in the headroom when there is room, else copied.</summary>
    private void WriteAlone(byte[] packet, int size, int offset)
    {
        if (offset >= VirtioNetHeader.Size)
        {
            var headerStart = offset - VirtioNetHeader.Size;
            packet.AsSpan(headerStart, VirtioNetHeader.Size).Clear();
            fixed (byte* start = &packet[headerStart])
            {
                WriteChecked(start, VirtioNetHeader.Size + size);
            }

            return;
        }

        _writeBuffer.AsSpan(0, VirtioNetHeader.Size).Clear();
        packet.AsSpan(offset, size).CopyTo(_writeBuffer.AsSpan(VirtioNetHeader.Size));
        fixed (byte* buffer = _writeBuffer)
        {
            WriteChecked(buffer, VirtioNetHeader.Size + size);
        }
    }

    private void WriteChecked(byte* data, int length)
    {
        var n = write(_fd, data, (nuint)length);
        if (n < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

            // The kernel refuses a packet it cannot parse (EINVAL) or has no room (EAGAIN): drop that one, like a full queue would.
            if (errno is not (EINVAL or EAGAIN or EIO))
            {
                throw new IOException($"TUN {Name} write failed: errno {errno}");
            }
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        ulong one = 1;
        write(_wakeFd, (byte*)&one, 8);

        // Readers hold _readLock while blocked in poll; once woken they see _disposed and leave.
        lock (_readLock)
        {
            lock (_writeLock)
            {
                close(_fd);
                close(_wakeFd);
            }
        }
    }

    private static void RunIp(string arguments) => Interface.IpCommand.Run(arguments);
}
