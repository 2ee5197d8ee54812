using System.Collections.Concurrent;
using Modular.WireGuard.Conn;

namespace Modular.Testing.WireGuard;

/// <summary>
/// A tiny in-memory UDP network for WireGuard tests: binds register their endpoint when opened,
/// datagrams are copied to whichever bind owns the destination, and a filter can drop or watch
/// them. Nothing leaves the process.
/// </summary>
public sealed class InMemoryNetwork
{
    private readonly ConcurrentDictionary<WgEndpoint, InMemoryBind> _binds = new();
    private long _delivered;
    private long _dropped;

    /// <summary>Called for each datagram (from, to, bytes); return false to drop it. Null: deliver all.</summary>
    public Func<WgEndpoint, WgEndpoint, ReadOnlyMemory<byte>, bool>? Filter { get; set; }

    public long Delivered => Interlocked.Read(ref _delivered);

    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Creates a bind whose address is 198.18.0.<paramref name="hostByte"/> (the benchmarking range).</summary>
    public InMemoryBind CreateBind(byte hostByte) => new(this, hostByte);

    internal void Register(WgEndpoint endpoint, InMemoryBind bind)
    {
        if (!_binds.TryAdd(endpoint, bind))
        {
            throw new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.AddressAlreadyInUse);
        }
    }

    internal void Unregister(WgEndpoint endpoint, InMemoryBind bind) => _binds.TryRemove(new KeyValuePair<WgEndpoint, InMemoryBind>(endpoint, bind));

    internal void Deliver(WgEndpoint from, WgEndpoint to, ReadOnlySpan<byte> datagram)
    {
        var copy = datagram.ToArray();
        if ((Filter is { } filter && !filter(from, to, copy)) || !_binds.TryGetValue(to, out var bind) || !bind.Enqueue(copy, from))
        {
            Interlocked.Increment(ref _dropped);
            return;
        }

        Interlocked.Increment(ref _delivered);
    }
}

/// <summary>One side of an <see cref="InMemoryNetwork"/>: an <see cref="IBind"/> with a fixed address.</summary>
public sealed class InMemoryBind : IBind
{
    private static int _nextPort = 40000;
    private readonly InMemoryNetwork _network;
    private readonly byte _hostByte;
    private readonly Lock _lock = new();
    private BlockingCollection<(byte[] Data, WgEndpoint From)>? _queue;
    private WgEndpoint _endpoint;
    private long _sent;

    internal InMemoryBind(InMemoryNetwork network, byte hostByte)
    {
        _network = network;
        _hostByte = hostByte;
    }

    public int BatchSize { get; init; } = PacketBuffers.DefaultBatchSize;

    /// <summary>Where this bind receives (and what its datagrams come from); empty while closed.</summary>
    public WgEndpoint Endpoint
    {
        get
        {
            lock (_lock)
            {
                return _endpoint;
            }
        }
    }

    /// <summary>How many datagrams this bind has sent.</summary>
    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>How many Send calls carried more than one datagram (batching reached the bind).</summary>
    public long MultiPacketSends => Interlocked.Read(ref _multiPacketSends);

    private long _multiPacketSends;

    public IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort)
    {
        lock (_lock)
        {
            if (_queue is not null)
            {
                throw new InvalidOperationException("Already open.");
            }

            actualPort = port != 0 ? port : (ushort)Interlocked.Increment(ref _nextPort);
            var endpoint = WgEndpoint.FromIPv4([198, 18, 0, _hostByte], actualPort);
            _network.Register(endpoint, this);
            _endpoint = endpoint;
            var queue = new BlockingCollection<(byte[] Data, WgEndpoint From)>(4096);
            _queue = queue;
            return [(packets, sizes, endpoints) => Receive(queue, packets, sizes, endpoints)];
        }
    }

    /// <summary>Moves this bind to another port while open (the peer sees it roam).</summary>
    public void Roam(ushort newPort)
    {
        lock (_lock)
        {
            var moved = _endpoint with { Port = newPort };
            _network.Register(moved, this);
            _network.Unregister(_endpoint, this);
            _endpoint = moved;
        }
    }

    public void Close()
    {
        lock (_lock)
        {
            _queue?.CompleteAdding();
            _queue = null;
            if (!_endpoint.IsEmpty)
            {
                _network.Unregister(_endpoint, this);
                _endpoint = default;
            }
        }
    }

    public void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint)
    {
        var from = Endpoint;
        ObjectDisposedException.ThrowIf(from.IsEmpty, this);

        if (count > 1)
        {
            Interlocked.Increment(ref _multiPacketSends);
        }

        for (var i = 0; i < count; i++)
        {
            Interlocked.Increment(ref _sent);
            _network.Deliver(from, endpoint, packets[i].AsSpan(0, sizes[i]));
        }
    }

    public void Dispose() => Close();

    internal bool Enqueue(byte[] data, WgEndpoint from)
    {
        BlockingCollection<(byte[] Data, WgEndpoint From)>? queue;
        lock (_lock)
        {
            queue = _queue;
        }

        try
        {
            return queue is not null && queue.TryAdd((data, from));
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static int Receive(BlockingCollection<(byte[] Data, WgEndpoint From)> queue, byte[][] packets, int[] sizes, WgEndpoint[] endpoints)
    {
        (byte[] Data, WgEndpoint From) item;
        try
        {
            item = queue.Take();
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(InMemoryBind));
        }

        var count = 0;
        do
        {
            item.Data.CopyTo(packets[count], 0);
            sizes[count] = item.Data.Length;
            endpoints[count] = item.From;
            count++;
        }
        while (count < packets.Length && queue.TryTake(out item));

        return count;
    }
}

/// <summary>Two binds on one in-memory network (198.18.0.1 and 198.18.0.2), as two hosts would have.</summary>
public sealed class InMemoryBindPair
{
    public InMemoryBindPair()
    {
        A = Network.CreateBind(1);
        B = Network.CreateBind(2);
    }

    public InMemoryNetwork Network { get; } = new();

    public InMemoryBind A { get; }

    public InMemoryBind B { get; }
}
