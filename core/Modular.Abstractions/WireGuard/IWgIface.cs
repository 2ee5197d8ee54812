using System.Net;

namespace Modular.Abstractions.WireGuard;

/// <summary>
/// One WireGuard interface, however it is realised (in-process or external). The engine
/// creates it, brings it up, sets and removes peers; it is always closed on stop, which
/// destroys the OS interface.
/// </summary>
/// <remarks>
/// The host's interface, not a plugin contract: proxies receive the narrow
/// <see cref="IWgInterfaceView"/>. It stays in this assembly while the obsolete
/// <c>IProxyFactory</c> members that take it remain (one contract release). The members it shares
/// with the view are declared again here so plugins built against contract 0.x keep binding to them.
/// </remarks>
public interface IWgIface : IWgInterfaceView, IAsyncDisposable
{
    /// <summary>The OS name of the interface, e.g. <c>wt0</c>.</summary>
    new string Name { get; }

    /// <summary>How the interface is realised.</summary>
    new WgInterfaceMode Mode { get; }

    /// <summary>True when WireGuard runs in this process and <see cref="BindHook"/> is available.</summary>
    new bool IsUserspace => Mode == WgInterfaceMode.Userspace;

    /// <summary>The overlay network the interface routes, e.g. 100.64.0.0/10 (an IPNetwork holds no host bits).</summary>
    IPNetwork Address { get; }

    /// <summary>This interface's own overlay address, e.g. 100.64.0.7.</summary>
    IPAddress OverlayIp { get; }

    /// <summary>Default 1280.</summary>
    int Mtu { get; }

    /// <summary>The UDP port WireGuard listens on; default 51820.</summary>
    new int ListenPort { get; }

    /// <summary>This interface's own WireGuard public key.</summary>
    WgKey PublicKey { get; }

    /// <summary>For a userspace interface: the Bind-level hook the bind proxy uses; null otherwise.</summary>
    new IWgBindHook? BindHook { get; }

    /// <summary>Creates the OS interface (TUN or external device) and configures key, port, address and MTU.</summary>
    ValueTask CreateAsync(CancellationToken cancellationToken);

    /// <summary>Sets the link up and starts moving packets.</summary>
    ValueTask UpAsync(CancellationToken cancellationToken);

    /// <summary>Stops packets and destroys the OS interface. Idempotent.</summary>
    ValueTask CloseAsync(CancellationToken cancellationToken);

    /// <summary>Adds the peer or replaces its configuration.</summary>
    ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken);

    /// <summary>Removes the peer; nothing happens if it is not set.</summary>
    ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken);

    /// <summary>Points the peer at <paramref name="endpoint"/> (a path switch) without touching its other settings.</summary>
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
/// <remarks>
/// Thread-safe: <see cref="Inject"/> may be called from any number of threads at once, and concurrently with
/// <see cref="ClaimEndpoint"/> and the release of a claim. Reentrancy: a sink's <see cref="IDatagramSink.Send"/>
/// runs on WireGuard's send path and must not call <see cref="Inject"/> synchronously. Close: once a claim is
/// disposed, no new call reaches its sink (a call already running may finish); dispose every claim before the
/// proxy that made it is closed.
/// </remarks>
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
    /// <summary>Takes one datagram; only valid during the call.</summary>
    void Send(ReadOnlySpan<byte> datagram);
}
