using System.Buffers;
using System.Net;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyBind;

/// <summary>
/// Joins one relayed connection to the in-process WireGuard through its Bind hook: the proxy
/// claims a virtual endpoint (no socket), WireGuard's datagrams for it are queued and sent over
/// the relay, and datagrams from the relay are injected as if they arrived from that endpoint.
/// </summary>
public sealed class BindProxy : IProxy
{
    private const int MaxDatagram = 65535;
    private const int QueueCapacity = 1024;
    private static int _endpointCounter;

    private readonly IWgBindHook _hook;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private readonly Channel<(byte[] Buffer, int Length)> _toRelay;
    private IRelayedConnection? _connection;
    private IDisposable? _claim;
    private IPEndPoint? _endpoint;
    private volatile IPEndPoint? _injectAs;
    private WgKey _peer;
    private Task _relayToWireGuard = Task.CompletedTask;
    private Task _wireGuardToRelay = Task.CompletedTask;
    private bool _started;
    private volatile bool _paused = true;
    private int _disconnectRaised;
    private int _closed;
    private long _droppedToRelay;

    public BindProxy(IWgBindHook hook, ILogger logger)
    {
        _hook = hook;
        _logger = logger;
        _toRelay = Channel.CreateBounded<(byte[], int)>(new BoundedChannelOptions(QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite then fails at once and we count a drop
        });
    }

    public string Kind => "bind";

    public IPEndPoint EndpointAddr => _endpoint ?? throw new InvalidOperationException("Call AddRelayedConnAsync first.");

    /// <summary>WireGuard datagrams dropped because the relay could not keep up.</summary>
    public long DroppedToRelay => Interlocked.Read(ref _droppedToRelay);

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

            _endpoint = NextVirtualEndpoint();
            _injectAs = _endpoint;
            _claim = _hook.ClaimEndpoint(_endpoint, new RelaySink(this));
            _connection = connection;
            _peer = remotePeer;
        }

        _logger.LogDebug("Bind proxy for {Peer}: virtual endpoint {Endpoint} via relay {Relay}",
            remotePeer.ToShortString(), _endpoint, connection.RelayAddress);
        return ValueTask.CompletedTask;
    }

    public void Work()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _closed) != 0, this);
            if (_connection is null)
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
            _relayToWireGuard = Task.Run(() => RelayToWireGuardAsync(_connection, token), CancellationToken.None);
            _wireGuardToRelay = Task.Run(() => WireGuardToRelayAsync(_connection, token), CancellationToken.None);
        }
    }

    public void Pause() => _paused = true;

    /// <summary>Injects relay datagrams as coming from <paramref name="endpoint"/>; resumes forwarding.</summary>
    public void RedirectAs(IPEndPoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        _injectAs = endpoint;
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
            _claim?.Dispose();
            _toRelay.Writer.TryComplete();
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
        while (_toRelay.Reader.TryRead(out var item))
        {
            ArrayPool<byte>.Shared.Return(item.Buffer);
        }

        _stop.Dispose();
    }

    public ValueTask DisposeAsync() => CloseAsync();

    // Virtual endpoints never touch the network; they only have to be distinct per proxy.
    private static IPEndPoint NextVirtualEndpoint()
    {
        var n = (uint)Interlocked.Increment(ref _endpointCounter);
        var address = new IPAddress(new byte[] { 127, 130, (byte)(n >> 16), (byte)(n >> 8) });
        return new IPEndPoint(address, 1024 + (int)(n & 0xFF));
    }

    private void EnqueueFromWireGuard(ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length > MaxDatagram || Volatile.Read(ref _closed) != 0)
        {
            return;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(datagram.Length);
        datagram.CopyTo(buffer);
        if (!_toRelay.Writer.TryWrite((buffer, datagram.Length)))
        {
            ArrayPool<byte>.Shared.Return(buffer);
            Interlocked.Increment(ref _droppedToRelay);
        }
    }

    private async Task RelayToWireGuardAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        var closed = await RelayedConnectionPump.RunAsync(
            connection,
            (datagram, _) =>
            {
                if (!_paused && _injectAs is { } from)
                {
                    _hook.Inject(datagram.Span, from);
                }

                return ValueTask.CompletedTask;
            },
            e => _logger.LogDebug(e, "Relayed connection of {Peer} failed", _peer.ToShortString()),
            cancellationToken);
        if (closed)
        {
            OnRelayClosed();
        }
    }

    private async Task WireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var (buffer, length) in _toRelay.Reader.ReadAllAsync(cancellationToken))
            {
                try
                {
                    await connection.SendAsync(buffer.AsMemory(0, length), cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return;
                }
                catch (Exception ex)
                {
                    _logger.LogDebug(ex, "Sending to the relay of {Peer} failed", _peer.ToShortString());
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                }
            }
        }
        catch (OperationCanceledException)
        {
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
            _logger.LogWarning(ex, "A Disconnected handler of the bind proxy for {Peer} threw", _peer.ToShortString());
        }
    }

    private sealed class RelaySink(BindProxy owner) : IDatagramSink
    {
        public void Send(ReadOnlySpan<byte> datagram) => owner.EnqueueFromWireGuard(datagram);
    }
}
