using Modular.Abstractions.Proxy;
using Modular.Testing;

namespace Modular.Composition.Tests.Plugins;

/// <summary>
/// What a relay may hand a proxy that is not a WireGuard message (malformed, or longer than any WireGuard message
/// or any relay datagram), and well-formed messages of each kind at their exact lengths, the longest transport
/// included; with the check every proxy kind runs against it.
/// </summary>
internal static class RelayJunk
{
    /// <summary>Not WireGuard messages: each must be dropped and counted in <see cref="RelayedProxy.MalformedFromRelay"/>.</summary>
    public static byte[][] Malformed() =>
    [
        [1, 2, 3],                                   // shorter than any message
        [4, 0, 0, 0, .. new byte[27]],               // transport without room for header and tag
        [1, 0, 0, 0, .. new byte[100]],              // an initiation of the wrong length (148)
        [2, 0, 0, 0, .. new byte[60]],               // a response of the wrong length (92)
        [3, 0, 0, 0, .. new byte[90]],               // a cookie reply of the wrong length (64)
        [4, 1, 0, 0, .. new byte[40]],               // reserved bytes set
        [9, 0, 0, 0, .. new byte[40]],               // no such message type
    ];

    /// <summary>Too long: each must be dropped and counted in <see cref="RelayedProxy.OversizedFromRelay"/>.</summary>
    public static byte[][] Oversized() =>
    [
        WgFrames.AsTransport(new byte[RelayedConnectionPump.MaxWireGuardMessage + 1]),
        WgFrames.AsTransport(new byte[RelayedConnectionPump.MaxDatagram + 1]), // more than a relay may carry
    ];

    /// <summary>Well-formed: each must reach WireGuard whole.</summary>
    public static byte[][] Valid() =>
    [
        [1, 0, 0, 0, .. new byte[144]],
        [2, 0, 0, 0, .. new byte[88]],
        [3, 0, 0, 0, .. new byte[60]],
        WgFrames.AsTransport(new byte[32]),
        WgFrames.AsTransport(new byte[RelayedConnectionPump.MaxWireGuardMessage]),
    ];

    /// <summary>
    /// Sends the malformed and oversized datagrams through <paramref name="relay"/> into the working
    /// <paramref name="proxy"/>, then the valid ones: each valid one is the next thing WireGuard receives (so nothing
    /// sent before it got through), and the proxy counted every dropped one by its reason.
    /// </summary>
    /// <param name="wireGuardReceives">The next datagram the WireGuard side receives (bounded wait).</param>
    public static async Task AssertDroppedAndCountedAsync(RelayedProxy proxy, InMemoryRelayedConnection relay, Func<Task<byte[]>> wireGuardReceives)
    {
        var malformed = Malformed();
        var oversized = Oversized();
        foreach (var datagram in malformed.Concat(oversized))
        {
            await relay.FromRelay.Writer.WriteAsync(datagram);
        }

        foreach (var datagram in Valid())
        {
            await relay.FromRelay.Writer.WriteAsync(datagram);
            Assert.Equal(datagram, await wireGuardReceives());
        }

        Assert.Equal(malformed.Length, proxy.MalformedFromRelay);
        Assert.Equal(oversized.Length, proxy.OversizedFromRelay);
    }
}
