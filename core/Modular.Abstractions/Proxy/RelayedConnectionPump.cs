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
    /// The longest WireGuard message handed on: what one UDP datagram over IPv4 can carry (65,535 minus the IP and
    /// UDP headers), so a proxy that hands it to WireGuard over loopback UDP can always send it. Longer is oversized.
    /// </summary>
    public const int MaxWireGuardMessage = 65507;

    private const int TransportHeaderAndTag = 32;

    /// <summary>
    /// What a datagram from the relay is: a WireGuard message by its framing (type 1 initiation of 148 bytes, 2
    /// response of 92, 3 cookie reply of 64, 4 transport data of at least 32, the three reserved bytes zero), or
    /// not. Only the framing is checked (nothing is decrypted): it keeps garbage and oversized datagrams a relay
    /// or a broken peer sends from costing a hand-off to WireGuard.
    /// </summary>
    public static RelayedDatagram Classify(ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length > MaxWireGuardMessage)
        {
            return RelayedDatagram.Oversized;
        }

        if (datagram.Length < 4 || datagram[1] != 0 || datagram[2] != 0 || datagram[3] != 0)
        {
            return RelayedDatagram.Malformed;
        }

        var valid = datagram[0] switch
        {
            1 => datagram.Length == 148,
            2 => datagram.Length == 92,
            3 => datagram.Length == 64,
            4 => datagram.Length >= TransportHeaderAndTag,
            _ => false,
        };
        return valid ? RelayedDatagram.WireGuard : RelayedDatagram.Malformed;
    }

    /// <summary>
    /// Runs the loop. <paramref name="deliver"/> gets each datagram (valid only during the call) and handles its
    /// own delivery errors; an <see cref="OperationCanceledException"/> or <see cref="ObjectDisposedException"/>
    /// from it means the proxy is stopping. Returns true when the relay closed or failed (the failure goes to
    /// <paramref name="onFailure"/>), false when the proxy stopped.
    /// </summary>
    public static Task<bool> RunAsync(
        IRelayedConnection connection,
        Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask> deliver,
        Action<Exception> onFailure,
        CancellationToken cancellationToken)
        => RunAsync(connection, deliver, onFailure, static _ => { }, cancellationToken);

    /// <summary>
    /// Same as <see cref="RunAsync(IRelayedConnection, Func{ReadOnlyMemory{byte}, CancellationToken, ValueTask}, Action{Exception}, CancellationToken)"/>;
    /// a datagram that <see cref="Classify"/> finds malformed or oversized is not delivered but reported to
    /// <paramref name="onDropped"/> (to count it).
    /// </summary>
    public static async Task<bool> RunAsync(
        IRelayedConnection connection,
        Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask> deliver,
        Action<Exception> onFailure,
        Action<RelayedDatagram> onDropped,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(deliver);
        ArgumentNullException.ThrowIfNull(onFailure);
        ArgumentNullException.ThrowIfNull(onDropped);

        // One byte more than the relay may carry, so a connection that hands over more than that is seen.
        var buffer = ArrayPool<byte>.Shared.Rent(MaxDatagram + 1);
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

                var kind = received > MaxDatagram ? RelayedDatagram.Oversized : Classify(buffer.AsSpan(0, received));
                if (kind != RelayedDatagram.WireGuard)
                {
                    onDropped(kind);
                    continue;
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

/// <summary>What <see cref="RelayedConnectionPump.Classify"/> found a datagram from the relay to be.</summary>
public enum RelayedDatagram
{
    /// <summary>A WireGuard message by its framing: handed to WireGuard.</summary>
    WireGuard,

    /// <summary>Not a WireGuard message (unknown type, wrong length, reserved bytes set, empty): dropped.</summary>
    Malformed,

    /// <summary>Longer than <see cref="RelayedConnectionPump.MaxWireGuardMessage"/>: dropped.</summary>
    Oversized,
}
