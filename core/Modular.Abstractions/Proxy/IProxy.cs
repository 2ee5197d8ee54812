using System.Net;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Proxy;

/// <summary>A relayed (relay server or TURN) datagram connection to one remote peer.</summary>
/// <remarks>
/// Threading: one receiver and one sender may run at the same time (the proxy's two loops);
/// <see cref="ReceiveAsync"/> is not called concurrently with itself, nor <see cref="SendAsync"/> with itself.
/// Close: <see cref="IAsyncDisposable.DisposeAsync"/> may be called from any thread, once or more, while a
/// receive or send is pending; it makes a pending <see cref="ReceiveAsync"/> return 0 (or throw) promptly.
/// The connection belongs to whoever it was handed to (<see cref="IProxy.AddRelayedConnAsync"/>).
/// </remarks>
public interface IRelayedConnection : IAsyncDisposable
{
    /// <summary>The relay's address, for status.</summary>
    string RelayAddress { get; }

    /// <summary>Receives one datagram into <paramref name="buffer"/>; 0 means the connection closed.</summary>
    ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);

    /// <summary>
    /// Sends one datagram to the remote peer. May be called concurrently with <see cref="ReceiveAsync"/>, but not
    /// with itself. The memory is only read during the call. Throws once the connection closed.
    /// </summary>
    ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken);
}

/// <summary>
/// Carries one relayed peer's traffic between its <see cref="IRelayedConnection"/> and WireGuard.
/// Lifecycle: <see cref="AddRelayedConnAsync"/>, point WireGuard at <see cref="EndpointAddr"/>,
/// <see cref="Work"/>; <see cref="Pause"/> while a direct path is tried; <see cref="CloseAsync"/>.
/// </summary>
/// <remarks>
/// Threading: the host calls the lifecycle members from one peer's connection logic, one at a time, but
/// <see cref="CloseAsync"/> may race with everything else (engine stop) and must be safe to call at any time,
/// from any thread, more than once. The packet loops are the proxy's own; they must not block the caller.
/// Reentrancy: <see cref="Disconnected"/> handlers run on the proxy's receive loop and must not await the
/// proxy's close from inside the handler (post it). Close: after <see cref="CloseAsync"/> returns, no datagram
/// reaches WireGuard or the relay, the relayed connection is disposed and <see cref="Disconnected"/> is not
/// raised any more. <see cref="RelayedProxy"/> implements these rules; derive from it.
/// </remarks>
public interface IProxy : IAsyncDisposable
{
    /// <summary>The proxy's kind, e.g. "udp"; shown in status.</summary>
    string Kind { get; }

    /// <summary>Takes ownership of the relayed connection for <paramref name="remotePeer"/>.</summary>
    ValueTask AddRelayedConnAsync(IRelayedConnection connection, WgKey remotePeer, CancellationToken cancellationToken);

    /// <summary>What WireGuard should use as the remote peer's endpoint. Valid after <see cref="AddRelayedConnAsync"/>.</summary>
    IPEndPoint EndpointAddr { get; }

    /// <summary>Starts (or resumes) moving packets both ways.</summary>
    void Work();

    /// <summary>Stops forwarding from the relay to WireGuard, keeping the connection.</summary>
    void Pause();

    /// <summary>
    /// Makes packets from the relay appear to WireGuard as coming from <paramref name="endpoint"/>, and resumes
    /// forwarding; <see cref="EndpointAddr"/> returns to the normal path. The host calls it when a relayed peer switches
    /// to a direct path while it keeps this proxy (the remote may still send through the relay until its own switch):
    /// <paramref name="endpoint"/> is the peer's direct endpoint, so those packets do not roam WireGuard back to the
    /// proxy. It undoes it with <see cref="EndpointAddr"/> before pointing WireGuard at the proxy again. Only called on
    /// a proxy whose <see cref="BytesToWireGuard"/> is not null.
    /// </summary>
    void RedirectAs(IPEndPoint endpoint);

    /// <summary>
    /// Bytes of the datagrams from the relay handed to WireGuard so far, whole datagrams (as WireGuard counts what it
    /// receives); null when the proxy does not count them. While redirected, packets through the relay look like packets
    /// on the direct path: the host proves the direct path only by bytes beyond these. A proxy that answers null is
    /// never redirected (WireGuard then roams to the proxy when relayed packets arrive, which tells the paths apart).
    /// </summary>
    long? BytesToWireGuard => null;

    /// <summary>Raised once when the relayed connection closes underneath the proxy.</summary>
    event EventHandler? Disconnected;

    /// <summary>Closes the relayed connection and frees the proxy's sockets. Idempotent.</summary>
    ValueTask CloseAsync();
}

/// <summary>Facts about the host a factory needs to decide whether it can serve.</summary>
/// <param name="EbpfDisabled">NB_DISABLE_EBPF_WG_PROXY=true.</param>
/// <param name="IsRoot">The process can load eBPF programs and open raw sockets.</param>
public sealed record ProxyEnvironment(bool EbpfDisabled, bool IsRoot);

/// <summary>A factory's answer to "can you proxy for this interface?"; <paramref name="Reason"/> says why not.</summary>
public readonly record struct ProxyCapability(bool CanProxy, string? Reason)
{
    /// <summary>The factory can serve the interface.</summary>
    public static ProxyCapability Yes => new(true, null);

    /// <summary>The factory cannot serve the interface; <paramref name="reason"/> is shown in the log and status.</summary>
    public static ProxyCapability No(string reason) => new(false, reason);
}

/// <summary>
/// Creates proxies of one kind. Export with <c>[Export(typeof(IProxyFactory))]</c> and
/// <c>[PluginName("udp")]</c>. Selection: the TOML name, else automatically bind (then udp) for a
/// userspace interface and udp for a kernel one (ebpf only when named).
/// </summary>
/// <remarks>
/// Implement <see cref="CanProxy(IWgInterfaceView, ProxyEnvironment)"/> and
/// <see cref="CreateAsync(IWgInterfaceView, IPluginContext, CancellationToken)"/>. The members taking
/// <see cref="IWgIface"/> are the contract 0.x shape, kept for one release so plugins built against it
/// still load; each pair forwards to the other, so implement one pair (a factory that implements
/// neither recurses).
/// </remarks>
public interface IProxyFactory : IPluginFactory
{
    /// <summary>
    /// Whether this factory can serve an interface of <paramref name="mode"/> at all, asked before any interface
    /// exists (<c>modular config check</c>, and <c>up</c> before it creates one), so a kind that can never work in
    /// the configured mode (bind with kernel mode) is refused at its TOML key instead of failing on every relayed
    /// connect. Answer only from the mode; what depends on the host or the interface belongs in
    /// <see cref="CanProxy(IWgInterfaceView, ProxyEnvironment)"/>. The default says yes, so a factory built
    /// before this member existed still loads and is asked per interface as before.
    /// </summary>
    ProxyCapability CanServe(WgInterfaceMode mode) => ProxyCapability.Yes;

    /// <summary>
    /// Whether this factory can serve <paramref name="iface"/> here. Cheap and free of side effects: the
    /// host calls it for every relayed peer, from any thread, possibly concurrently.
    /// </summary>
    ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment)
#pragma warning disable CS0618 // The contract 0.x member, for plugins built against it.
        => iface is IWgIface full
            ? CanProxy(full, environment)
            : throw new NotSupportedException("this factory implements neither CanProxy overload");
#pragma warning restore CS0618

    /// <summary>
    /// Creates a proxy for one peer. May fail (e.g. an eBPF load); the relayed connect then fails with the reason
    /// (a factory that cannot serve should say so in CanProxy, which lets automatic selection try the next). Called from
    /// any thread, possibly concurrently for different peers; <paramref name="context"/> is this plugin's.
    /// </summary>
    ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
#pragma warning disable CS0618 // The contract 0.x member, for plugins built against it.
        => iface is IWgIface full
            ? CreateAsync(full, context, cancellationToken)
            : throw new NotSupportedException("this factory implements neither CreateAsync overload");
#pragma warning restore CS0618

    /// <summary>Contract 0.x: whether this factory can serve <paramref name="iface"/>.</summary>
    [Obsolete("Implement CanProxy(IWgInterfaceView, ProxyEnvironment): a proxy sees the narrow view. Removed in contract 2.0.")]
    ProxyCapability CanProxy(IWgIface iface, ProxyEnvironment environment) => CanProxy((IWgInterfaceView)iface, environment);

    /// <summary>Contract 0.x: creates a proxy for one peer.</summary>
    [Obsolete("Implement CreateAsync(IWgInterfaceView, IPluginContext, CancellationToken): a proxy sees the narrow view. Removed in contract 2.0.")]
    ValueTask<IProxy> CreateAsync(IWgIface iface, IPluginContext context, CancellationToken cancellationToken)
        => CreateAsync((IWgInterfaceView)iface, context, cancellationToken);
}
