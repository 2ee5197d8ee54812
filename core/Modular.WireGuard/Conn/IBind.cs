namespace Modular.WireGuard.Conn;

/// <summary>
/// Receives a batch of datagrams into <paramref name="packets"/> (each buffer at least
/// <see cref="PacketBuffers.MaxSegmentSize"/> long), writing each one's length to
/// <paramref name="sizes"/> and sender to <paramref name="endpoints"/>. Blocks until at
/// least one datagram; returns how many. Throws <see cref="ObjectDisposedException"/> once the bind is closed.
/// </summary>
public delegate int ReceiveFunc(byte[][] packets, int[] sizes, WgEndpoint[] endpoints);

/// <summary>
/// How the WireGuard device sends and receives UDP datagrams (wireguard-go's conn.Bind).
/// The default is UDP sockets with batched I/O; tests use an in-memory pair; the agent's
/// ICE layer and the bind proxy wrap it to share the WireGuard port and inject relayed packets.
/// Receive functions are called from dedicated threads; Send may be called concurrently.
/// </summary>
public interface IBind : IDisposable
{
    /// <summary>Most datagrams one receive or send call moves.</summary>
    int BatchSize { get; }

    /// <summary>Starts listening on <paramref name="port"/> (0: any); returns the receive loops and the port bound.</summary>
    IReadOnlyList<ReceiveFunc> Open(ushort port, out ushort actualPort);

    /// <summary>Stops listening; blocked receive functions return by throwing <see cref="ObjectDisposedException"/>. Open may be called again.</summary>
    void Close();

    /// <summary>Sends <paramref name="count"/> datagrams (packets[i][0..sizes[i]]) to one endpoint.</summary>
    void Send(byte[][] packets, int[] sizes, int count, WgEndpoint endpoint);
}
