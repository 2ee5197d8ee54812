using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using Modular.Abstractions.WireGuard;
using Modular.WireGuard.Conn;

namespace Modular.WireGuard.Device;

/// <summary>
/// Wraps the device's real <see cref="IBind"/> so plugins can take over endpoints: sends to a
/// claimed endpoint go to its <see cref="IDatagramSink"/> instead of the socket, and
/// <see cref="Inject"/> feeds datagrams into the device as if they came from the network
/// (through one extra receive function). The bind proxy and lazy connections use it.
/// </summary>
public sealed class HookableBind : IBindWithMark, IWgBindHook
{
    /// <summary>Injected datagrams waiting for the device; beyond this they are dropped (like a full socket buffer).</summary>
    public const int InjectQueueCapacity = 4096;

    private readonly IBind _inner;
    private readonly ConcurrentDictionary<WgEndpoint, IDatagramSink> _claims = new();
    private readonly Lock _lock = new();
    private BlockingCollection<InjectedDatagram>? _injected;
    private long _injectDrops;

    private readonly record struct InjectedDatagram(byte[] Buffer, int Length, WgEndpoint From);

    public HookableBind(IBind inner) => _inner = inner;

    public int BatchSize => _inner.BatchSize;

    /// <summary>Injected datagrams dropped because the device was down or behind.</summary>
    public long InjectDrops => Interlocked.Read(ref _injectDrops);

    public IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort)
    {
        var functions = new List<ReceiveFunc>(_inner.Open(port, out actualPort));
        var queue = new BlockingCollection<InjectedDatagram>(InjectQueueCapacity);
        lock (_lock)
        {
            _injected = queue;
        }

        functions.Add((packets, sizes, endpoints) => ReceiveInjected(queue, packets, sizes, endpoints));
        return functions;
    }

    public void Close()
    {
        BlockingCollection<InjectedDatagram>? queue;
        lock (_lock)
        {
            queue = _injected;
            _injected = null;
        }

        queue?.CompleteAdding();
        _inner.Close();
    }

    /// <summary>Passes the mark to the inner bind when it supports one (injected datagrams have no socket to mark).</summary>
    public void SetMark(uint mark) => (_inner as IBindWithMark)?.SetMark(mark);

    public void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint)
    {
        if (_claims.TryGetValue(endpoint, out var sink))
        {
            for (var i = 0; i < count; i++)
            {
                sink.Send(packets[i].AsSpan(0, sizes[i]));
            }

            return;
        }

        _inner.Send(packets, sizes, count, endpoint);
    }

    public IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink)
    {
        var key = WgEndpoint.FromIPEndPoint(endpoint);
        if (!_claims.TryAdd(key, sink))
        {
            throw new InvalidOperationException($"Endpoint {endpoint} is already claimed.");
        }

        return new Claim(this, key, sink);
    }

    public void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from)
    {
        BlockingCollection<InjectedDatagram>? queue;
        lock (_lock)
        {
            queue = _injected;
        }

        if (queue is null || datagram.Length > PacketBuffers.MaxSegmentSize)
        {
            Interlocked.Increment(ref _injectDrops);
            return;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(datagram.Length);
        datagram.CopyTo(buffer);
        bool added;
        try
        {
            added = queue.TryAdd(new InjectedDatagram(buffer, datagram.Length, WgEndpoint.FromIPEndPoint(from)));
        }
        catch (InvalidOperationException)
        {
            added = false; // closed meanwhile
        }

        if (!added)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            Interlocked.Increment(ref _injectDrops);
        }
    }

    public void Dispose()
    {
        Close();
        _inner.Dispose();
    }

    private static int ReceiveInjected(BlockingCollection<InjectedDatagram> queue, byte[][] packets, int[] sizes, WgEndpoint[] endpoints)
    {
        InjectedDatagram first;
        try
        {
            first = queue.Take();
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(HookableBind));
        }

        var count = 0;
        var next = first;
        do
        {
            next.Buffer.AsSpan(0, next.Length).CopyTo(packets[count]);
            sizes[count] = next.Length;
            endpoints[count] = next.From;
            ArrayPool<byte>.Shared.Return(next.Buffer);
            count++;
        }
        while (count < packets.Length && queue.TryTake(out next));

        return count;
    }

    private sealed class Claim(HookableBind owner, WgEndpoint endpoint, IDatagramSink sink) : IDisposable
    {
        public void Dispose() => owner._claims.TryRemove(new KeyValuePair<WgEndpoint, IDatagramSink>(endpoint, sink));
    }
}
