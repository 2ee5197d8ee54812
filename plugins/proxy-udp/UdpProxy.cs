using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyUdp;

/// <summary>
/// Joins one relayed connection to WireGuard through a loopback UDP socket: WireGuard is told
/// the socket's address (<see cref="EndpointAddr"/>) is the peer's endpoint, datagrams from the
/// relay are sent from that socket to WireGuard's listen port, and whatever WireGuard sends to
/// it goes back over the relay. The socket is connected to WireGuard's port, so the kernel
/// drops datagrams from anyone else.
/// </summary>
public sealed class UdpProxy : IProxy
{
    private const int MaxDatagram = 65535;
    private const int SocketBufferBytes = 1 << 20;

    private readonly IPEndPoint _wireGuard;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private Socket? _socket;
    private IRelayedConnection? _connection;
    private WgKey _peer;
    private IPEndPoint? _endpoint;
    private Task _relayToWireGuard = Task.CompletedTask;
    private Task _wireGuardToRelay = Task.CompletedTask;
    private bool _started;
    private volatile bool _paused = true;
    private volatile SpoofingSender? _redirect;
    private int _disconnectRaised;
    private int _closed;
    private long _droppedToWireGuard;

    /// <param name="wireGuardPort">The UDP port WireGuard listens on (on 127.0.0.1).</param>
    public UdpProxy(int wireGuardPort, ILogger logger)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(wireGuardPort, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(wireGuardPort, 65535);
        _wireGuard = new IPEndPoint(IPAddress.Loopback, wireGuardPort);
        _logger = logger;
    }

    public string Kind => "udp";

    public IPEndPoint EndpointAddr => _endpoint ?? throw new InvalidOperationException("Call AddRelayedConnAsync first.");

    /// <summary>Datagrams from the relay that could not be handed to WireGuard (e.g. nothing listened).</summary>
    public long DroppedToWireGuard => Interlocked.Read(ref _droppedToWireGuard);

    public event EventHandler? Disconnected;

    public ValueTask AddRelayedConnAsync(IRelayedConnection connection, WgKey remotePeer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
            if (_connection is not null)
            {
                throw new InvalidOperationException("This proxy already carries a relayed connection; create one proxy per peer.");
            }

            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
            try
            {
                // Bursts from WireGuard (a batch of sealed packets) must not overflow the default buffers;
                // the kernel caps these at net.core.[rw]mem_max.
                socket.ReceiveBufferSize = SocketBufferBytes;
                socket.SendBufferSize = SocketBufferBytes;
                socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
                socket.Connect(_wireGuard);
            }
            catch
            {
                socket.Dispose();
                throw;
            }

            _socket = socket;
            _endpoint = (IPEndPoint)socket.LocalEndPoint!;
            _connection = connection;
            _peer = remotePeer;
        }

        _logger.LogDebug("UDP proxy for {Peer}: {Endpoint} <-> WireGuard {WireGuard} via relay {Relay}",
            remotePeer.ToShortString(), _endpoint, _wireGuard, connection.RelayAddress);
        return ValueTask.CompletedTask;
    }

    public void Work()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
            if (_connection is null || _socket is null)
            {
                throw new InvalidOperationException("Call AddRelayedConnAsync before Work.");
            }

            _paused = false;
            if (_started)
            {
                return;
            }

            _started = true;
            var token = _stop.Token;
            _relayToWireGuard = Task.Run(() => RelayToWireGuardAsync(_connection, _socket, token), CancellationToken.None);
            _wireGuardToRelay = Task.Run(() => WireGuardToRelayAsync(_connection, _socket, token), CancellationToken.None);
        }
    }

    public void Pause() => _paused = true;

    /// <summary>
    /// From now on datagrams from the relay reach WireGuard with <paramref name="endpoint"/> as
    /// their source, so switching from a direct path to the relay is not a roam. That needs a
    /// raw socket (root or CAP_NET_RAW) and an IPv4 endpoint; otherwise it is logged and the
    /// proxy keeps sending from <see cref="EndpointAddr"/>. Passing <see cref="EndpointAddr"/>
    /// returns to the normal path. Also resumes forwarding, like <see cref="Work"/>.
    /// </summary>
    public void RedirectAs(IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
        var own = _endpoint ?? throw new InvalidOperationException("Call AddRelayedConnAsync before RedirectAs.");
        SpoofingSender? next = null;
        if (!endpoint.Equals(own))
        {
            try
            {
                next = SpoofingSender.Create(endpoint, _wireGuard);
            }
            catch (Exception ex) when (ex is SocketException or NotSupportedException)
            {
                _logger.LogWarning("UDP proxy for {Peer} cannot send as {Endpoint} ({Reason}); WireGuard will see {Own} instead",
                    _peer.ToShortString(), endpoint, ex.Message, _endpoint);
            }
        }

        Interlocked.Exchange(ref _redirect, next)?.Dispose();
        Work();
    }

    public async ValueTask CloseAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return;
        }

        IRelayedConnection? connection;
        lock (_gate)
        {
            connection = _connection;
            _stop.Cancel();
            _socket?.Dispose();
        }

        if (connection is not null)
        {
            try
            {
                await connection.DisposeAsync();
            }
            catch (Exception ex)
            {
                _logger.LogDebug(ex, "Closing the relayed connection of {Peer} failed", _peer.ToShortString());
            }
        }

        await Task.WhenAll(_relayToWireGuard, _wireGuardToRelay).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Interlocked.Exchange(ref _redirect, null)?.Dispose();
        _stop.Dispose();
    }

    public ValueTask DisposeAsync() => CloseAsync();

    private async Task RelayToWireGuardAsync(IRelayedConnection connection, Socket socket, CancellationToken cancellationToken)
    {
        var closed = await RelayedConnectionPump.RunAsync(
            connection,
            async (datagram, token) =>
            {
                if (_paused)
                {
                    return;
                }

                try
                {
                    if (_redirect is { } redirect)
                    {
                        redirect.Send(datagram.Span);
                    }
                    else
                    {
                        await socket.SendAsync(datagram, SocketFlags.None, token);
                    }
                }
                catch (SocketException)
                {
                    // WireGuard not listening (ICMP port unreachable): drop like a lossy path would.
                    Interlocked.Increment(ref _droppedToWireGuard);
                }
            },
            e => _logger.LogDebug(e, "Relayed connection of {Peer} failed", _peer.ToShortString()),
            cancellationToken);
        if (closed)
        {
            OnRelayClosed();
        }
    }

    private async Task WireGuardToRelayAsync(IRelayedConnection connection, Socket socket, CancellationToken cancellationToken)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDatagram);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                int received;
                try
                {
                    received = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
                }
                catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionRefused or SocketError.ConnectionReset)
                {
                    // The ICMP error of an earlier send to a WireGuard that was not listening.
                    continue;
                }
                catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
                {
                    return;
                }

                try
                {
                    await connection.SendAsync(buffer.AsMemory(0, received), cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    // The receive loop notices a closed relay and reports it; a failed send is a lost datagram.
                    _logger.LogDebug(ex, "Sending to the relay of {Peer} failed", _peer.ToShortString());
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void OnRelayClosed()
    {
        if (Volatile.Read(ref _closed) != 0 || Interlocked.Exchange(ref _disconnectRaised, 1) != 0)
        {
            return;
        }

        _logger.LogInformation("Relayed connection of {Peer} closed", _peer.ToShortString());
        try
        {
            Disconnected?.Invoke(this, EventArgs.Empty);
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "A Disconnected handler of the UDP proxy for {Peer} threw", _peer.ToShortString());
        }
    }
}
