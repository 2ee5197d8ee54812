using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;

namespace Modular.E2E.Tests;

/// <summary>
/// Test-only: a UDP forwarder inside a network namespace that holds every datagram for a fixed delay, both ways (these
/// kernels have no netem). Listens on <c>listen</c>; each client address gets its own upstream socket to the target, so
/// the target tells the clients apart as it would without the forwarder. Datagrams leave in arrival order, each
/// <see cref="Delay"/> after it came in. Everything closes on Dispose.
/// </summary>
public sealed class UdpDelayForwarder : IDisposable
{
    private readonly string _namespace;
    private readonly IPEndPoint _target;
    private readonly Socket _listener;
    private readonly ConcurrentDictionary<IPEndPoint, Socket> _upstream = new();
    private readonly Channel<(long Due, Socket Via, byte[] Data, IPEndPoint To)> _queue = Channel.CreateUnbounded<(long, Socket, byte[], IPEndPoint)>();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _loops = [];
    private long _forwarded;

    public UdpDelayForwarder(string namespaceName, IPEndPoint listen, IPEndPoint target, TimeSpan delay)
    {
        _namespace = namespaceName;
        _target = target;
        Delay = delay;
        _listener = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        _listener.Bind(listen);
        _loops.Add(Task.Run(() => ReceiveAsync(_listener, null, _stop.Token)));
        _loops.Add(Task.Run(() => SendLoopAsync(_stop.Token)));
    }

    public TimeSpan Delay { get; }

    /// <summary>Datagrams sent on so far (both ways).</summary>
    public long Forwarded => Interlocked.Read(ref _forwarded);

    /// <summary>Reads one socket: from the listener, client datagrams go up through the client's own socket; from an upstream socket, replies go back to its client.</summary>
    private async Task ReceiveAsync(Socket socket, IPEndPoint? client, CancellationToken cancellationToken)
    {
        var buffer = new byte[65535];
        EndPoint any = new IPEndPoint(IPAddress.Any, 0);
        while (!cancellationToken.IsCancellationRequested)
        {
            SocketReceiveFromResult received;
            try
            {
                received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, any, cancellationToken);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (cancellationToken.IsCancellationRequested || e is ObjectDisposedException)
                {
                    return;
                }

                continue; // an ICMP error for an earlier datagram (ECONNREFUSED): UDP goes on
            }

            var data = buffer.AsSpan(0, received.ReceivedBytes).ToArray();
            var due = Environment.TickCount64 + (long)Delay.TotalMilliseconds;
            if (client is null)
            {
                var from = (IPEndPoint)received.RemoteEndPoint;
                var up = _upstream.GetOrAdd(from, OpenUpstream);
                _queue.Writer.TryWrite((due, up, data, _target));
            }
            else
            {
                _queue.Writer.TryWrite((due, _listener, data, client));
            }
        }
    }

    private Socket OpenUpstream(IPEndPoint client)
    {
        var socket = NamespaceSocket.Create(_namespace, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Any, 0));
        lock (_loops)
        {
            _loops.Add(Task.Run(() => ReceiveAsync(socket, client, _stop.Token)));
        }

        return socket;
    }

    private async Task SendLoopAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var (due, via, data, to) in _queue.Reader.ReadAllAsync(cancellationToken))
            {
                var wait = due - Environment.TickCount64;
                if (wait > 0)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(wait), cancellationToken);
                }

                try
                {
                    await via.SendToAsync(data, SocketFlags.None, to, cancellationToken);
                    Interlocked.Increment(ref _forwarded);
                }
                catch (SocketException)
                {
                    // The far side is not there (yet): a lost datagram, as on a real path.
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        foreach (var socket in _upstream.Values)
        {
            socket.Dispose();
        }

        Task[] loops;
        lock (_loops)
        {
            loops = [.. _loops];
        }

        try
        {
            Task.WaitAll(loops, TimeSpan.FromSeconds(5));
        }
        catch (AggregateException)
        {
        }

        _stop.Dispose();
    }
}
