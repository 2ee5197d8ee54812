using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Modular.Core.Lazy;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// ONE loopback UDP socket for every relayed peer of one WireGuard listen port, instead of a socket per peer. Each
/// relayed peer's WireGuard endpoint is its own address of 127.192.0.0/10 (<see cref="StandInAddressPool.RelayProxies"/>;
/// the lazy-connection stand-ins have the other half of 127.128.0.0/9) on the socket's one port. WireGuard's
/// datagrams for a peer arrive addressed to that peer's address, which IP_PKTINFO reports, and datagrams from the
/// relay are sent with that address as their source (sendmsg with IP_PKTINFO), so WireGuard sees each peer at its
/// own endpoint. The socket is bound to the device lo (SO_BINDTODEVICE); a datagram that is not from WireGuard's
/// port on a 127/8 address, or is for an address no proxy holds, is dropped and counted. The socket is opened with
/// the first peer and closed with the last, so an agent with no relayed peer holds no proxy socket. Reading is
/// <see cref="LoopbackReceiver"/>, the lazy-connection monitor's reader (the same source file).
/// Create it in the network namespace of the WireGuard it serves.
/// </summary>
public sealed class SharedProxySocket
{
    // A burst for many peers must not keep the loop from noticing it was stopped.
    private const int MaxDatagramsPerWakeup = 1024;
    private const int SendBufferBytes = 4 << 20;

    private readonly ILogger _logger;
    private readonly Lock _lock = new();
    private readonly ConcurrentDictionary<uint, UdpProxy> _byAddress = new();
    private readonly StandInAddressPool _addresses = StandInAddressPool.RelayProxies();
    private LoopbackReceiver? _receiver;
    private long _dropped;
    private long _opened;

    /// <param name="wireGuardPort">The UDP port WireGuard listens on (on 127.0.0.1).</param>
    public SharedProxySocket(int wireGuardPort, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(wireGuardPort, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(wireGuardPort, 65535);
        ArgumentNullException.ThrowIfNull(logger);
        WireGuardPort = wireGuardPort;
        _logger = logger;
    }

    /// <summary>The port WireGuard listens on.</summary>
    public int WireGuardPort { get; }

    /// <summary>The socket's port while it is open (every relayed peer's endpoint uses it); 0 while closed.</summary>
    public int Port
    {
        get
        {
            lock (_lock)
            {
                return _receiver?.Port ?? 0;
            }
        }
    }

    /// <summary>Relayed peers carried now.</summary>
    public int Peers => _byAddress.Count;

    /// <summary>Whether the socket is open (it is while any peer is carried).</summary>
    public bool IsOpen
    {
        get
        {
            lock (_lock)
            {
                return _receiver is not null;
            }
        }
    }

    /// <summary>How many times a socket was opened (one per stretch with at least one relayed peer).</summary>
    public long SocketsOpened => Interlocked.Read(ref _opened);

    /// <summary>Datagrams dropped: not from WireGuard's port on 127/8, to an address no proxy holds, or malformed.</summary>
    public long DatagramsDropped => Interlocked.Read(ref _dropped);

    /// <summary>Datagrams the kernel dropped because the socket's queue was full.</summary>
    public long DatagramsLostInKernel
    {
        get
        {
            lock (_lock)
            {
                return _receiver?.KernelDrops ?? 0;
            }
        }
    }

    /// <summary>Gives <paramref name="proxy"/> its own address on the socket (opening it for the first peer); returns the endpoint.</summary>
    internal IPEndPoint Register(UdpProxy proxy)
    {
        lock (_lock)
        {
            if (_receiver is null)
            {
                var receiver = LoopbackReceiver.Open(_logger, "UDP proxy: the shared socket");
                try
                {
                    receiver.Socket.SendBufferSize = SendBufferBytes;
                }
                catch (SocketException e)
                {
                    _logger.LogDebug("UDP proxy: the shared socket keeps its default send buffer: {Error}", e.SocketErrorCode);
                }

                _receiver = receiver;
                Interlocked.Increment(ref _opened);
                _ = Task.Run(() => ReceiveLoopAsync(receiver));
                _logger.LogDebug("UDP proxy: shared socket opened on 0.0.0.0:{Port} for WireGuard port {WireGuardPort} (lo only: {BoundToLoopback})",
                    receiver.Port, WireGuardPort, receiver.BoundToLoopback);
            }

            var address = _addresses.Rent();
            _byAddress[address] = proxy;
            return new IPEndPoint(StandInAddressPool.ToIPAddress(address), _receiver.Port);
        }
    }

    /// <summary>Frees <paramref name="endpoint"/>'s address; the last peer closes the socket.</summary>
    internal void Unregister(IPEndPoint endpoint)
    {
        var address = BinaryPrimitives.ReadUInt32BigEndian(endpoint.Address.GetAddressBytes());
        lock (_lock)
        {
            if (!_byAddress.TryRemove(address, out _))
            {
                return;
            }

            _addresses.Return(address);
            if (_byAddress.IsEmpty && _receiver is { } receiver)
            {
                _receiver = null;
                receiver.Dispose(); // ends its receive loop
                _logger.LogDebug("UDP proxy: shared socket on port {Port} closed (no relayed peer left)", receiver.Port);
            }
        }
    }

    /// <summary>
    /// Sends <paramref name="datagram"/> to WireGuard from <paramref name="source"/> (a registered endpoint).
    /// Throws <see cref="SocketException"/> when the kernel refuses it and <see cref="ObjectDisposedException"/>
    /// once the socket is closed.
    /// </summary>
    internal void SendToWireGuard(PktInfoMessage message, ReadOnlyMemory<byte> datagram)
    {
        var receiver = Volatile.Read(ref _receiver) ?? throw new ObjectDisposedException(nameof(SharedProxySocket));
        message.Send(receiver.Socket, datagram);
    }

    private async Task ReceiveLoopAsync(LoopbackReceiver receiver)
    {
        var socket = receiver.Socket;
        while (true)
        {
            try
            {
                // A zero-byte peek only waits until a datagram is queued; the receiver then takes all of them
                // without waiting and without allocating.
                await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.Peek);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.OperationAborted or SocketError.Interrupted)
            {
                return; // closed under the wait
            }
            catch (SocketException e)
            {
                _logger.LogDebug("UDP proxy: the shared socket's wait failed ({Error}); retrying", e.SocketErrorCode);
                await Task.Delay(TimeSpan.FromMilliseconds(10));
                continue;
            }

            try
            {
                await ReceiveQueuedAsync(receiver);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }

    private async Task ReceiveQueuedAsync(LoopbackReceiver receiver)
    {
        for (var i = 0; i < MaxDatagramsPerWakeup; i++)
        {
            switch (receiver.TryReceive())
            {
                case LoopbackReceiver.Outcome.Empty:
                    return;
                case LoopbackReceiver.Outcome.Failed:
                    _logger.LogDebug("UDP proxy: the shared socket's receive failed (errno {Errno})", receiver.LastError);
                    return;
                case LoopbackReceiver.Outcome.Malformed:
                    Interlocked.Increment(ref _dropped);
                    break;
                default:
                    if (receiver.Source >> 24 == 127
                        && receiver.SourcePort == WireGuardPort
                        && StandInAddressPool.IsRelayProxy(receiver.Destination)
                        && _byAddress.TryGetValue(receiver.Destination, out var proxy))
                    {
                        // The datagram lives in the receiver's buffer until the next TryReceive: the relay send
                        // is awaited before that (a UDP send to the relay practically never waits).
                        await proxy.ForwardFromWireGuardAsync(receiver.DatagramMemory);
                    }
                    else
                    {
                        Interlocked.Increment(ref _dropped);
                    }

                    break;
            }
        }
    }
}

/// <summary>
/// One proxy's sendmsg(2) arguments for the shared socket: the destination (WireGuard) and an IP_PKTINFO control
/// message whose ipi_spec_dst is the proxy's own address, so the datagram leaves from that address. The block is
/// pinned for the proxy's life; the datagram is pinned per send. Linux x86_64/aarch64 ABI; one sender at a time.
/// </summary>
internal sealed class PktInfoMessage
{
    private const int SockAddrInSize = 16;
    private const int CmsgHeaderSize = 16;
    private const int InPktInfoSize = 12;
    private const int ControlSize = 32; // CMSG_SPACE(sizeof(struct in_pktinfo))
    private const int AfInet = 2;
    private const int IpProtoIp = 0;
    private const int IpPktInfo = 8;
    private const int MsgNoSignal = 0x4000;
    private const int Eintr = 4;
    private const int Eagain = 11;
    private const int Enobufs = 105;
    private const int Econnrefused = 111;

    // Destination sockaddr_in, then the control message, then the iovec.
    private const int ControlOffset = SockAddrInSize;
    private const int IoVecOffset = ControlOffset + ControlSize;
    private const int BlockSize = IoVecOffset + 16;

    private readonly byte[] _block = GC.AllocateArray<byte>(BlockSize, pinned: true);
    private readonly nint _blockAddress;

    public PktInfoMessage(IPEndPoint source, int wireGuardPort)
    {
        _blockAddress = Marshal.UnsafeAddrOfPinnedArrayElement(_block, 0);
        var block = _block.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(block, AfInet);
        BinaryPrimitives.WriteUInt16BigEndian(block[2..], (ushort)wireGuardPort);
        IPAddress.Loopback.TryWriteBytes(block[4..8], out _);

        var control = block.Slice(ControlOffset, ControlSize);
        BinaryPrimitives.WriteInt64LittleEndian(control, CmsgHeaderSize + InPktInfoSize);
        BinaryPrimitives.WriteInt32LittleEndian(control[8..], IpProtoIp);
        BinaryPrimitives.WriteInt32LittleEndian(control[12..], IpPktInfo);
        source.Address.TryWriteBytes(control.Slice(CmsgHeaderSize + 4, 4), out _); // ipi_spec_dst: our source
    }

    public void Send(Socket socket, ReadOnlyMemory<byte> datagram)
    {
        if (!MemoryMarshal.TryGetArray(datagram, out var segment) || segment.Array is null)
        {
            throw new ArgumentException("The datagram must live in an array.", nameof(datagram));
        }

        var pin = GCHandle.Alloc(segment.Array, GCHandleType.Pinned);
        var handle = socket.SafeHandle;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var iov = _block.AsSpan(IoVecOffset, 16);
            BinaryPrimitives.WriteInt64LittleEndian(iov, pin.AddrOfPinnedObject() + segment.Offset);
            BinaryPrimitives.WriteInt64LittleEndian(iov[8..], segment.Count);
            var header = new NativeMessages.MsgHdr
            {
                Name = _blockAddress,
                NameLength = SockAddrInSize,
                Iov = _blockAddress + IoVecOffset,
                IovLength = 1,
                Control = _blockAddress + ControlOffset,
                ControlLength = ControlSize,
            };
            while (NativeMessages.SendMsg((int)handle.DangerousGetHandle(), ref header, MsgNoSignal) < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno != Eintr)
                {
                    throw new SocketException((int)(errno switch
                    {
                        Econnrefused => SocketError.ConnectionRefused,
                        Eagain => SocketError.WouldBlock,
                        Enobufs => SocketError.NoBufferSpaceAvailable,
                        _ => SocketError.SocketError,
                    }));
                }
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }

            pin.Free();
        }
    }
}
