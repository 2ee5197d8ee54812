using System.Net;
using Modular.WireGuard.Conn;

namespace Modular.Core.Ice;

/// <summary>
/// Shares WireGuard's UDP port with the ICE layer (userspace mode): wraps the device's bind, takes
/// STUN-format datagrams (connectivity checks and STUN server replies) out of each received batch and
/// hands them to the ICE receiver, and lets the ICE layer send from the same socket. So a check that
/// succeeds proves the very path — NAT mapping included — that WireGuard's packets will take.
/// WireGuard datagrams pass through untouched and unallocated.
/// </summary>
public sealed class IceDemuxBind : IBindWithMark, IIceTransport
{
    private readonly IBind _inner;
    private readonly Lock _sendLock = new();
    private readonly byte[][] _sendPackets = [new byte[IceCheckMessage.MaxSize * 4]];
    private readonly int[] _sendSizes = new int[1];
    private volatile IStunReceiver? _receiver;
    private int _port;
    private long _stunReceived;

    public IceDemuxBind(IBind inner) => _inner = inner;

    public int BatchSize => _inner.BatchSize;

    public int LocalPort => Volatile.Read(ref _port);

    /// <summary>STUN-format datagrams taken out of the WireGuard stream so far.</summary>
    public long StunReceived => Interlocked.Read(ref _stunReceived);

    public void SetReceiver(IStunReceiver receiver) => _receiver = receiver;

    public IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort)
    {
        var inner = _inner.Open(port, out actualPort);
        Volatile.Write(ref _port, actualPort);
        var wrapped = new ReceiveFunc[inner.Count];
        for (var i = 0; i < inner.Count; i++)
        {
            var receive = inner[i];
            wrapped[i] = (packets, sizes, endpoints) => ReceiveFiltered(receive, packets, sizes, endpoints);
        }

        return wrapped;
    }

    public void Close() => _inner.Close();

    /// <summary>Marks the shared socket (exit-node policy routing keeps WireGuard's and ICE's datagrams out of the tunnel); a no-op when the inner bind has no marks.</summary>
    public void SetMark(uint mark) => (_inner as IBindWithMark)?.SetMark(mark);

    public void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint) => _inner.Send(packets, sizes, count, endpoint);

    public void Send(ReadOnlySpan<byte> datagram, IPEndPoint to)
    {
        lock (_sendLock)
        {
            if (datagram.Length > _sendPackets[0].Length)
            {
                return;
            }

            datagram.CopyTo(_sendPackets[0]);
            _sendSizes[0] = datagram.Length;
            try
            {
                _inner.Send(_sendPackets, _sendSizes, 1, WgEndpoint.FromIPEndPoint(to));
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or ObjectDisposedException or InvalidOperationException or IOException)
            {
                // Closed or unreachable: a lost check.
            }
        }
    }

    public void Dispose() => _inner.Dispose();

    private int ReceiveFiltered(ReceiveFunc receive, byte[][] packets, int[] sizes, WgEndpoint[] endpoints)
    {
        while (true)
        {
            var count = receive(packets, sizes, endpoints);
            var kept = 0;
            for (var i = 0; i < count; i++)
            {
                if (PacketClassifier.IsStun(packets[i].AsSpan(0, sizes[i])))
                {
                    Interlocked.Increment(ref _stunReceived);
                    Deliver(packets[i].AsSpan(0, sizes[i]), endpoints[i]);
                    continue;
                }

                if (kept != i)
                {
                    // Swap buffers so every slot still owns a distinct buffer of the device's pool.
                    (packets[kept], packets[i]) = (packets[i], packets[kept]);
                    sizes[kept] = sizes[i];
                    endpoints[kept] = endpoints[i];
                }

                kept++;
            }

            if (kept > 0 || count == 0)
            {
                return kept;
            }
        }
    }

    private void Deliver(ReadOnlySpan<byte> datagram, WgEndpoint from)
    {
        var receiver = _receiver;
        if (receiver is null)
        {
            return;
        }

        try
        {
            receiver.OnStun(datagram, from.ToIPEndPoint());
        }
#pragma warning disable CA1031 // A bug in the ICE layer must not stop WireGuard's receive thread.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }
}
