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
    /// <summary>Binds with the old, unsigned form (a v1 token only), as an agent of the previous release does.</summary>
    public static Task<RelayedConnection> ConnectAsync(IPEndPoint relay, WgKey ownKey, WgKey remoteKey, byte[] token, CancellationToken cancellationToken, TimeSpan? keepalive = null)
    {
        if (token.Length != RelayToken.Size)
        {
            throw new ArgumentException($"A relay token is {RelayToken.Size} bytes.", nameof(token));
        }

        return ConnectAsync(relay, ownKey, remoteKey, RelayCredentials.Legacy(token), cancellationToken, keepalive);
    }

    /// <summary>
    /// Binds (own key → remote key) at <paramref name="relay"/> with management-issued credentials and returns the
    /// connection once the relay accepted them. The remote side may bind later; data flows from then on. Every Bind
    /// (the first, its retries and each keepalive) is signed with a new counter when the credentials have a secret.
    /// </summary>
    /// <param name="time">Clock of the keepalive interval (tests pass a fake one).</param>
    /// <exception cref="UnauthorizedAccessException">The relay rejected the credentials.</exception>
    /// <exception cref="TimeoutException">The relay did not answer.</exception>
    public static async Task<RelayedConnection> ConnectAsync(IPEndPoint relay, WgKey ownKey, WgKey remoteKey, RelayCredentials credentials, CancellationToken cancellationToken, TimeSpan? keepalive = null, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(credentials);
        if (!credentials.Signed && credentials.Token.Length != RelayToken.Size)
        {
            throw new ArgumentException($"A relay token is {RelayToken.Size} bytes.", nameof(credentials));
        }

        time ??= TimeProvider.System;
        var socket = new Socket(relay.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            socket.ReceiveBufferSize = 4 << 20;
            socket.SendBufferSize = 4 << 20;
            socket.Connect(relay);
            var bind = new byte[RelayProtocol.SignedBindSize];
            var reply = new byte[RelayProtocol.MaxDatagram];
            for (var attempt = 0; attempt < 5; attempt++)
            {
                // A fresh counter on every attempt: the relay refuses a signed Bind it has seen (a replay).
                var length = RelayedConnection.WriteBind(bind, ownKey, remoteKey, credentials, time);
                await socket.SendAsync(bind.AsMemory(0, length), SocketFlags.None, cancellationToken);
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

                            return new RelayedConnection(socket, relay, ownKey, remoteKey, credentials, status == RelayProtocol.BindStatus.Paired, keepalive ?? TimeSpan.FromSeconds(10), time);
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
    // The last counter any signed Bind of this process used: counters start from the clock (100 ns ticks) so a new
    // connection after a restart is above the old one's, and never repeat within the process.
    private static long s_lastCounter;

    private readonly Socket _socket;
    private readonly WgKey _own;
    private readonly WgKey _remote;
    private readonly TimeProvider _time;
    private readonly CancellationTokenSource _closed = new();
    private readonly Task _keepalive;
    private volatile RelayCredentials _credentials;
    private volatile TaskCompletionSource _refreshed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _paired;

    internal RelayedConnection(Socket socket, IPEndPoint relay, WgKey own, WgKey remote, RelayCredentials credentials, bool paired, TimeSpan keepalive, TimeProvider time)
    {
        _socket = socket;
        _own = own;
        _remote = remote;
        _credentials = credentials;
        _time = time;
        _paired = paired;
        RelayAddress = relay.ToString();
        _keepalive = KeepaliveAsync(keepalive);
    }

    /// <summary>The connection was disposed.</summary>
    public bool IsClosed => _closed.IsCancellationRequested;

    /// <summary>When the credentials in use expire (Unix seconds).</summary>
    public long CredentialsExpireUnix => _credentials.ExpiresUnix;

    /// <summary>
    /// Takes fresher credentials (management refreshes them well before they expire) and rebinds with them at once,
    /// so the relay extends this binding's lifetime without a new connection.
    /// </summary>
    public void Refresh(RelayCredentials credentials)
    {
        ArgumentNullException.ThrowIfNull(credentials);
        if (credentials.ExpiresUnix < _credentials.ExpiresUnix || (!credentials.Signed && credentials.Token.Length != RelayToken.Size))
        {
            return; // never go back to older credentials
        }

        _credentials = credentials;
        _refreshed.TrySetResult();
    }

    /// <summary>Writes the Bind for <paramref name="credentials"/> into <paramref name="destination"/> and returns its length.</summary>
    internal static int WriteBind(Span<byte> destination, WgKey own, WgKey remote, RelayCredentials credentials, TimeProvider time)
    {
        if (!credentials.Signed)
        {
            RelayProtocol.WriteBind(destination, own, remote, credentials.Token);
            return RelayProtocol.BindSize;
        }

        RelayProtocol.WriteSignedBind(destination, own, remote, credentials.ExpiresUnix, NextCounter(time), credentials.Secret);
        return RelayProtocol.SignedBindSize;
    }

    private static ulong NextCounter(TimeProvider time)
    {
        var now = time.GetUtcNow().UtcTicks;
        while (true)
        {
            var last = Volatile.Read(ref s_lastCounter);
            var next = Math.Max(now, last + 1);
            if (Interlocked.CompareExchange(ref s_lastCounter, next, last) == last)
            {
                return (ulong)next;
            }
        }
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

                if (n == RelayProtocol.BoundSize && scratch[0] == RelayProtocol.Bound
                    && scratch[1] is (byte)RelayProtocol.BindStatus.Waiting or (byte)RelayProtocol.BindStatus.Paired)
                {
                    // Rejected is not about pairing (a keepalive overtaken by a newer one, or a Bind someone forged
                    // with our address); the relay keeps the session all the same.
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
        var bind = new byte[RelayProtocol.SignedBindSize];
        try
        {
            while (!_closed.IsCancellationRequested)
            {
                var refreshed = _refreshed;
                await Task.WhenAny(Task.Delay(interval, _time, _closed.Token), refreshed.Task).WaitAsync(_closed.Token);
                if (refreshed.Task.IsCompleted)
                {
                    _refreshed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }

                try
                {
                    var length = WriteBind(bind, _own, _remote, _credentials, _time);
                    await _socket.SendAsync(bind.AsMemory(0, length), SocketFlags.None, _closed.Token);
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
