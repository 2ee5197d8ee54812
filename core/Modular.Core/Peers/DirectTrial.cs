using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>
/// A relayed peer that just switched to a direct path keeps its relayed proxy until the direct path is proven: the
/// remote may still send through the relay (its own recheck comes later), and closing the proxy at once would lose
/// those packets and stall the tunnel until the remote noticed. Proof is WireGuard reporting the direct endpoint with
/// traffic that came on the direct path since the switch. Without a redirect, WireGuard roams its endpoint to the
/// source of the last authenticated packet, so a packet through the relay would have moved it to the proxy's address:
/// a handshake or bytes since the switch on the direct endpoint prove it. With the proxy redirected as the direct
/// endpoint (<see cref="Modular.Abstractions.Proxy.IProxy.RedirectAs"/>), relayed packets look direct too: only
/// received bytes beyond those the proxy handed WireGuard since the switch prove it.
/// </summary>
/// <param name="Since">When WireGuard's endpoint was set to the direct path.</param>
/// <param name="Endpoint">The direct endpoint WireGuard was given.</param>
/// <param name="RxAtSwitch">WireGuard's received-bytes counter at the switch (null: none yet).</param>
/// <param name="RelayedAtSwitch">
/// With the kept proxy redirected: its <see cref="Modular.Abstractions.Proxy.IProxy.BytesToWireGuard"/> at the switch;
/// null when it was not redirected.
/// </param>
public sealed record DirectTrial(DateTimeOffset Since, IPEndPoint Endpoint, long? RxAtSwitch, long? RelayedAtSwitch = null)
{
    /// <summary>
    /// The direct path is proven by <paramref name="stats"/> (see the type's remarks); <paramref name="relayedNow"/> is the
    /// kept proxy's <see cref="Modular.Abstractions.Proxy.IProxy.BytesToWireGuard"/> now (used only when redirected).
    /// </summary>
    public bool ProvenBy(WgPeerStats? stats, long? relayedNow = null)
    {
        if (stats is not { Endpoint: { } reported } s || !SameEndpoint(reported, Endpoint))
        {
            return false;
        }

        var received = s.RxBytes - (RxAtSwitch ?? 0);
        if (RelayedAtSwitch is { } relayedAtSwitch)
        {
            // A handshake may have come through the relay as well: bytes alone, and only those the proxy did not bring.
            return relayedNow is { } relayed && received > relayed - relayedAtSwitch;
        }

        return s.LastHandshake >= Since || received > 0;
    }

    // WireGuard may report an IPv4 endpoint in its IPv4-mapped IPv6 form (or the other way round).
    private static bool SameEndpoint(IPEndPoint a, IPEndPoint b)
        => a.Port == b.Port && Normal(a.Address).Equals(Normal(b.Address));

    private static IPAddress Normal(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
