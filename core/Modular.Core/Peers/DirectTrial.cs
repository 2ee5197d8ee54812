using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Peers;

/// <summary>
/// A relayed peer that just switched to a direct path keeps its relayed proxy until the direct path is proven: the
/// remote may still send through the relay (its own recheck comes later), and closing the proxy at once would lose
/// those packets and stall the tunnel until the remote noticed. Proof is WireGuard reporting the direct endpoint
/// after a handshake or bytes received since the switch (WireGuard roams its endpoint to the source of the last
/// authenticated packet, so a packet that came through the relay would have moved it to the proxy's address).
/// </summary>
/// <param name="Since">When WireGuard's endpoint was set to the direct path.</param>
/// <param name="Endpoint">The direct endpoint WireGuard was given.</param>
/// <param name="RxAtSwitch">WireGuard's received-bytes counter at the switch (null: none yet).</param>
public sealed record DirectTrial(DateTimeOffset Since, IPEndPoint Endpoint, long? RxAtSwitch)
{
    /// <summary>The direct path is proven by <paramref name="stats"/> (see the type's remarks).</summary>
    public bool ProvenBy(WgPeerStats? stats)
    {
        if (stats is not { Endpoint: { } reported } s || !SameEndpoint(reported, Endpoint))
        {
            return false;
        }

        return s.LastHandshake >= Since || (RxAtSwitch is { } rx ? s.RxBytes > rx : s.RxBytes > 0);
    }

    // WireGuard may report an IPv4 endpoint in its IPv4-mapped IPv6 form (or the other way round).
    private static bool SameEndpoint(IPEndPoint a, IPEndPoint b)
        => a.Port == b.Port && Normal(a.Address).Equals(Normal(b.Address));

    private static IPAddress Normal(IPAddress address) => address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
}
