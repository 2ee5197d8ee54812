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
/// The lifecycle is <see cref="RelayedProxy"/>'s.
/// </summary>
public sealed class BindProxy : RelayedProxy
{
    private const int QueueCapacity = 1024;

    // Buffers for queued datagrams: rented on WireGuard's threads, returned on the relay loop's. The shared
    // ArrayPool keeps only a few dozen arrays per size beyond each thread's own, so a burst that fills the queue
    // would allocate per datagram; this pool holds a full queue's worth (retained only after such a burst).
    private static readonly ArrayPool<byte> QueuedDatagrams = ArrayPool<byte>.Create(RelayedConnectionPump.MaxDatagram, QueueCapacity);
    private static int _endpointCounter;

    private readonly IWgBindHook _hook;
    private readonly Channel<(byte[] Buffer, int Length)> _toRelay;
    private IDisposable? _claim;
    private volatile IPEndPoint? _injectAs;
    private long _droppedToRelay;

    public BindProxy(IWgBindHook hook, ILogger logger)
        : base(logger)
    {
        ArgumentNullException.ThrowIfNull(hook);
        _hook = hook;
        _toRelay = Channel.CreateBounded<(byte[], int)>(new BoundedChannelOptions(QueueCapacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait, // TryWrite then fails at once and we count a drop
        });
    }

    public override string Kind => "bind";

    /// <summary>WireGuard datagrams dropped because the relay could not keep up.</summary>
    public long DroppedToRelay => Interlocked.Read(ref _droppedToRelay);

    protected override IPEndPoint AttachToWireGuard()
    {
        var endpoint = NextVirtualEndpoint();
        _claim = _hook.ClaimEndpoint(endpoint, new RelaySink(this));
        _injectAs = endpoint;
        return endpoint;
    }

    protected override void DetachFromWireGuard()
    {
        _claim?.Dispose();
        _toRelay.Writer.TryComplete();
    }

    protected override void OnLoopsStopped()
    {
        while (_toRelay.Reader.TryRead(out var item))
        {
            QueuedDatagrams.Return(item.Buffer);
        }
    }

    /// <summary>Injects relay datagrams as coming from <paramref name="endpoint"/>.</summary>
    protected override void ApplyRedirect(IPEndPoint endpoint) => _injectAs = endpoint;

    protected override ValueTask SendToWireGuardAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken)
    {
        if (_injectAs is { } from)
        {
            _hook.Inject(datagram.Span, from);
        }

        return ValueTask.CompletedTask;
    }

    protected override async Task RunWireGuardToRelayAsync(IRelayedConnection connection, CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var (buffer, length) in _toRelay.Reader.ReadAllAsync(cancellationToken))
            {
                try
                {
                    if (!await SendToRelayAsync(connection, buffer.AsMemory(0, length), cancellationToken))
                    {
                        return;
                    }
                }
                finally
                {
                    QueuedDatagrams.Return(buffer);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    // Virtual endpoints never touch the network; they only have to be distinct per proxy.
    private static IPEndPoint NextVirtualEndpoint()
    {
        var n = (uint)Interlocked.Increment(ref _endpointCounter);
        var address = new IPAddress(new byte[] { 127, 130, (byte)(n >> 16), (byte)(n >> 8) });
        return new IPEndPoint(address, 1024 + (int)(n & 0xFF));
    }

    private void EnqueueFromWireGuard(ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length > RelayedConnectionPump.MaxDatagram || IsClosed)
        {
            return;
        }

        var buffer = QueuedDatagrams.Rent(datagram.Length);
        datagram.CopyTo(buffer);
        if (!_toRelay.Writer.TryWrite((buffer, datagram.Length)))
        {
            QueuedDatagrams.Return(buffer);
            Interlocked.Increment(ref _droppedToRelay);
        }
    }

    private sealed class RelaySink(BindProxy owner) : IDatagramSink
    {
        public void Send(ReadOnlySpan<byte> datagram) => owner.EnqueueFromWireGuard(datagram);
    }
}
