using System.Buffers;

namespace Modular.Abstractions.Proxy;

/// <summary>
/// The relay-to-WireGuard half every proxy has: read datagrams from an <see cref="IRelayedConnection"/> into one
/// pooled buffer and hand each to <c>deliver</c> until the relay closes (or fails) or the proxy stops. One copy
/// of this loop, so every proxy treats a closed relay, a failure and cancellation the same way.
/// </summary>
public static class RelayedConnectionPump
{
    /// <summary>The largest datagram a relay carries.</summary>
    public const int MaxDatagram = 65535;

    /// <summary>
    /// Runs the loop. <paramref name="deliver"/> gets each datagram (valid only during the call) and handles its
    /// own delivery errors; an <see cref="OperationCanceledException"/> or <see cref="ObjectDisposedException"/>
    /// from it means the proxy is stopping. Returns true when the relay closed or failed (the failure goes to
    /// <paramref name="onFailure"/>), false when the proxy stopped.
    /// </summary>
    public static async Task<bool> RunAsync(
        IRelayedConnection connection,
        Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask> deliver,
        Action<Exception> onFailure,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(deliver);
        ArgumentNullException.ThrowIfNull(onFailure);
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDatagram);
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                int received;
                try
                {
                    received = await connection.ReceiveAsync(buffer, cancellationToken);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    return false;
                }
#pragma warning disable CA1031 // Any failure of the relay ends this connection; the caller logs it and falls back.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    onFailure(e);
                    return true;
                }

                if (received <= 0)
                {
                    return true;
                }

                try
                {
                    await deliver(buffer.AsMemory(0, received), cancellationToken);
                }
                catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
                {
                    return false;
                }
            }

            return false;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
