using System.Net;

namespace Modular.Abstractions.WireGuard;

/// <summary>
/// One WireGuard interface, however it is realised (in-process or external). The engine
/// creates it, brings it up, sets and removes peers; it is always closed on stop, which
/// destroys the OS interface.
/// </summary>
public interface IWgIface : IAsyncDisposable
{
    string Name { get; }

    WgInterfaceMode Mode { get; }

    /// <summary>True when WireGuard runs in this process and <see cref="BindHook"/> is available.</summary>
    bool IsUserspace => Mode == WgInterfaceMode.Userspace;

    /// <summary>The overlay network the interface routes, e.g. 100.64.0.0/10 (an IPNetwork holds no host bits).</summary>
    IPNetwork Address { get; }

    /// <summary>This interface's own overlay address, e.g. 100.64.0.7.</summary>
    IPAddress OverlayIp { get; }

    /// <summary>Default 1280.</summary>
    int Mtu { get; }

    /// <summary>The UDP port WireGuard listens on; default 51820.</summary>
    int ListenPort { get; }

    WgKey PublicKey { get; }

    /// <summary>For a userspace interface: the Bind-level hook the bind proxy uses; null otherwise.</summary>
    IWgBindHook? BindHook { get; }

    /// <summary>Creates the OS interface (TUN or external device) and configures key, port, address and MTU.</summary>
    ValueTask CreateAsync(CancellationToken cancellationToken);

    /// <summary>Sets the link up and starts moving packets.</summary>
    ValueTask UpAsync(CancellationToken cancellationToken);

    /// <summary>Stops packets and destroys the OS interface. Idempotent.</summary>
    ValueTask CloseAsync(CancellationToken cancellationToken);

    /// <summary>Adds the peer or replaces its configuration.</summary>
    ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken);

    ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken);

    ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken);

    /// <summary>Counters of every peer, keyed by public key.</summary>
    ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Marks WireGuard's own UDP packets with <paramref name="mark"/> (SO_MARK; 0 clears it), so policy routing
    /// can keep them out of the tunnel (an exit node's default route).
    /// </summary>
    ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken);
}

/// <summary>
/// The packet hand-off into the in-process WireGuard at the Bind level: a plugin can claim
/// a virtual endpoint (WireGuard's datagrams for it go to the plugin, not to a socket) and
/// inject datagrams as if they had arrived from it. This is what the bind proxy uses to
/// join a relayed connection to WireGuard without a loopback socket.
/// </summary>
public interface IWgBindHook
{
    /// <summary>
    /// Routes WireGuard's outgoing datagrams for <paramref name="endpoint"/> to <paramref name="sink"/>.
    /// Dispose the result to give the endpoint back.
    /// </summary>
    IDisposable ClaimEndpoint(IPEndPoint endpoint, IDatagramSink sink);

    /// <summary>Delivers one datagram to WireGuard as received from <paramref name="from"/>. The span is copied.</summary>
    void Inject(ReadOnlySpan<byte> datagram, IPEndPoint from);
}

/// <summary>Receives datagrams. Called on the packet path: must not block; copy the span if it is kept.</summary>
public interface IDatagramSink
{
    void Send(ReadOnlySpan<byte> datagram);
}
