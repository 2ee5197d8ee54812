using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Control.Relay;

/// <summary>Opens relayed connections to one remote peer through a Modular relay.</summary>
public static class RelayClient
{
    /// <summary>
    /// Binds (own key → remote key) at <paramref name="relay"/> with a management-issued token and returns the
    /// connection once the relay accepted the token. The remote side may bind later; data flows from then on.
    /// </summary>
    /// <exception cref="UnauthorizedAccessException">The relay rejected the token.</exception>
    /// <exception cref="TimeoutException">The relay did not answer.</exception>
    public static async Task<RelayedConnection> ConnectAsync(IPEndPoint relay, WgKey ownKey, WgKey remoteKey, byte[] token, CancellationToken cancellationToken, TimeSpan? keepalive = null)
    {
        if (token.Length != RelayToken.Size)
        {
            throw new ArgumentException($"A relay token is {RelayToken.Size} bytes.", nameof(token));
        }

        var socket = new Socket(relay.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.ReceiveBufferSize = 4 << 20;
            socket.SendBufferSize = 4 << 20;
            socket.Connect(relay);
            var bind = new byte[RelayProtocol.BindSize];
            RelayProtocol.WriteBind(bind, ownKey, remoteKey, token);
            var reply = new byte[RelayProtocol.MaxDatagram];
            for (var attempt = 0; attempt < 5; attempt++)
            {
                await socket.SendAsync(bind, SocketFlags.None, cancellationToken);
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                timeout.CancelAfter(TimeSpan.FromSeconds(1));
                try
                {
                    while (true)
                    {
                        var n = await socket.ReceiveAsync(reply, SocketFlags.None, timeout.Token);
                        if (n == RelayProtocol.BoundSize && reply[0] == RelayProtocol.Bound)
                        {
                            var status = (RelayProtocol.BindStatus)reply[1];
                            if (status is RelayProtocol.BindStatus.Rejected or RelayProtocol.BindStatus.Full)
                            {
                                throw new UnauthorizedAccessException($"The relay at {relay} refused the binding: {status}.");
                            }

                            return new RelayedConnection(socket, relay, bind, status == RelayProtocol.BindStatus.Paired, keepalive ?? TimeSpan.FromSeconds(10));
                        }
                    }
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    // No answer in time: send the bind again.
                }
                catch (SocketException) when (attempt < 4)
                {
                    // ICMP port unreachable from a relay still starting: try again.
                }
            }

            throw new TimeoutException($"The relay at {relay} did not answer.");
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

/// <summary>
/// One peer-to-peer path through the relay: a connected UDP socket whose datagrams carry a one-byte
/// header. Keeps its binding alive in the background. Receive/send copy through pooled buffers; no
/// per-packet allocation.
/// </summary>
public sealed class RelayedConnection : IRelayedConnection
{
    private readonly Socket _socket;
    private readonly byte[] _bind;
    private readonly CancellationTokenSource _closed = new();
    private readonly Task _keepalive;
    private volatile bool _paired;

    internal RelayedConnection(Socket socket, IPEndPoint relay, byte[] bind, bool paired, TimeSpan keepalive)
    {
        _socket = socket;
        _bind = bind;
        _paired = paired;
        RelayAddress = relay.ToString();
        _keepalive = KeepaliveAsync(keepalive);
    }

    public string RelayAddress { get; }

    /// <summary>Whether the relay last said the remote peer has bound to us.</summary>
    public bool IsPaired => _paired;

    // Pooled builders: the state machines of these per-packet methods are reused, not allocated.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        var scratch = ArrayPool<byte>.Shared.Rent(RelayProtocol.MaxDatagram);
        try
        {
            while (true)
            {
                int n;
                try
                {
                    // No linked token source per packet: DisposeAsync closes the socket, which ends a pending receive.
                    n = await _socket.ReceiveAsync(scratch, SocketFlags.None, cancellationToken);
                }
                catch (ObjectDisposedException)
                {
                    return 0;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.OperationAborted || _closed.IsCancellationRequested)
                {
                    return 0;
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
                {
                    // The relay restarted or is unreachable for a moment; keepalive rebinds.
                    continue;
                }

                if (n >= RelayProtocol.HeaderSize && scratch[0] == RelayProtocol.Data)
                {
                    var length = Math.Min(n - RelayProtocol.HeaderSize, buffer.Length);
                    scratch.AsSpan(RelayProtocol.HeaderSize, length).CopyTo(buffer.Span);
                    return length;
                }

                if (n == RelayProtocol.BoundSize && scratch[0] == RelayProtocol.Bound)
                {
                    _paired = scratch[1] == (byte)RelayProtocol.BindStatus.Paired;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        if (datagram.Length > RelayProtocol.MaxDatagram - RelayProtocol.HeaderSize)
        {
            throw new ArgumentException("Datagram too large for the relay.", nameof(datagram));
        }

        var scratch = ArrayPool<byte>.Shared.Rent(datagram.Length + RelayProtocol.HeaderSize);
        try
        {
            scratch[0] = RelayProtocol.Data;
            datagram.Span.CopyTo(scratch.AsSpan(RelayProtocol.HeaderSize));
            await _socket.SendAsync(scratch.AsMemory(0, datagram.Length + RelayProtocol.HeaderSize), SocketFlags.None, cancellationToken);
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            // UDP: a refused send is a lost datagram, like any other loss.
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
        }
    }

    private async Task KeepaliveAsync(TimeSpan interval)
    {
        try
        {
            while (!_closed.IsCancellationRequested)
            {
                await Task.Delay(interval, _closed.Token);
                try
                {
                    await _socket.SendAsync(_bind, SocketFlags.None, _closed.Token);
                }
                catch (SocketException)
                {
                    // Try again at the next interval.
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_closed.IsCancellationRequested)
        {
            return;
        }

        await _closed.CancelAsync();
        _socket.Dispose();
        await _keepalive;
        _closed.Dispose();
    }
}
