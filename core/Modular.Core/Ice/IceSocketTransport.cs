using System.Net;
using System.Net.Sockets;

namespace Modular.Core.Ice;

/// <summary>
/// The ICE transport for kernel mode (the kernel module or a wireguard-go process owns WireGuard's
/// socket, so this process cannot read or write on it). Checks run from a socket of their own on
/// WireGuard's port + 1, and a pair that answers is then confirmed by WireGuard's own handshake over
/// the remote's WireGuard port: the engine marks a peer Connected only after a fresh handshake, and
/// falls back to the relay when none comes. Why not a raw socket with a port filter on WireGuard's
/// port: it would see WireGuard's traffic but could not make the kernel's NAT mapping for that port
/// answer our checks any better, and it needs CAP_NET_RAW plus a BPF program per interface; the
/// separate socket keeps kernel mode simple, and the handshake is the real proof either way. The cost:
/// behind a NAT that does not preserve ports, kernel mode ends up relayed where userspace would not.
/// </summary>
public sealed class IceSocketTransport : IIceTransport, IDisposable
{
    private readonly Socket _socket;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _receiveLoop;
    private volatile IStunReceiver? _receiver;

    public IceSocketTransport(int port)
    {
        _socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _socket.Bind(new IPEndPoint(IPAddress.Any, port));
        LocalPort = ((IPEndPoint)_socket.LocalEndPoint!).Port;
        _receiveLoop = Task.Run(ReceiveLoopAsync);
    }

    public int LocalPort { get; }

    public void SetReceiver(IStunReceiver receiver) => _receiver = receiver;

    /// <summary>Marks the check socket as WireGuard's is marked (SO_MARK), so exit-node policy routing keeps checks off the tunnel too; 0 clears it.</summary>
    public void SetMark(uint mark) => _socket.SetRawSocketOption(1 /* SOL_SOCKET */, 36 /* SO_MARK */, BitConverter.GetBytes(mark));

    public void Send(ReadOnlySpan<byte> datagram, IPEndPoint to)
    {
        try
        {
            _socket.SendTo(datagram, SocketFlags.None, to);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // A lost check.
        }
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = new byte[2048];
        var any = new IPEndPoint(IPAddress.Any, 0);
        while (!_stop.IsCancellationRequested)
        {
            SocketReceiveFromResult result;
            try
            {
                result = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
            }
            catch (SocketException)
            {
                continue;
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }

            if (result.RemoteEndPoint is IPEndPoint from && PacketClassifier.IsStun(buffer.AsSpan(0, result.ReceivedBytes)))
            {
                _receiver?.OnStun(buffer.AsSpan(0, result.ReceivedBytes), from);
            }
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _socket.Dispose();
        try
        {
            _receiveLoop.Wait(TimeSpan.FromSeconds(2));
        }
        catch (AggregateException)
        {
        }

        _stop.Dispose();
    }
}
