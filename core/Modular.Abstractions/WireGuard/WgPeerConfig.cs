using System.Net;

namespace Modular.Abstractions.WireGuard;

/// <summary>What WireGuard needs to know about one peer.</summary>
/// <param name="PublicKey">The peer's static public key; identifies the peer.</param>
/// <param name="AllowedIps">Cryptokey routing: the overlay prefixes this peer may send from and receives.</param>
/// <param name="Endpoint">Where to send the peer's packets; null until known (the peer may roam to us).</param>
/// <param name="PresharedKey">Optional symmetric key mixed into the handshake (account PSK or Rosenpass).</param>
/// <param name="PersistentKeepalive">Keepalive interval for peers behind NAT; null or zero: off.</param>
public sealed record WgPeerConfig(
    WgKey PublicKey,
    IReadOnlyList<IPNetwork> AllowedIps,
    IPEndPoint? Endpoint = null,
    WgKey? PresharedKey = null,
    TimeSpan? PersistentKeepalive = null);

/// <summary>Per-peer counters, read from the interface.</summary>
public readonly record struct WgPeerStats(DateTimeOffset? LastHandshake, long RxBytes, long TxBytes, IPEndPoint? Endpoint);

/// <summary>How the WireGuard interface is realised.</summary>
public enum WgInterfaceMode
{
    /// <summary>WireGuard runs inside the agent (Modular.WireGuard); it exposes a Bind hook.</summary>
    Userspace,

    /// <summary>An external device: the kernel module, else a wireguard-go process the agent owns.</summary>
    Kernel,
}
