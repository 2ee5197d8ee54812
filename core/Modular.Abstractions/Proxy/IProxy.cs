using System.Net;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.WireGuard;

namespace Modular.Abstractions.Proxy;

/// <summary>A relayed (relay server or TURN) datagram connection to one remote peer.</summary>
public interface IRelayedConnection : IAsyncDisposable
{
    /// <summary>The relay's address, for status.</summary>
    string RelayAddress { get; }

    /// <summary>Receives one datagram into <paramref name="buffer"/>; 0 means the connection closed.</summary>
    ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken);

    ValueTask SendAsync(ReadOnlyMemory<byte> datagram, CancellationToken cancellationToken);
}

/// <summary>
/// Carries one relayed peer's traffic between its <see cref="IRelayedConnection"/> and WireGuard.
/// Lifecycle: <see cref="AddRelayedConnAsync"/>, point WireGuard at <see cref="EndpointAddr"/>,
/// <see cref="Work"/>; <see cref="Pause"/> while a direct path is tried; <see cref="CloseAsync"/>.
/// </summary>
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

    /// <summary>Makes packets from the relay appear to WireGuard as coming from <paramref name="endpoint"/>
    /// (used when switching paths so WireGuard does not see a roam).</summary>
    void RedirectAs(IPEndPoint endpoint);

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
    public static ProxyCapability Yes => new(true, null);

    public static ProxyCapability No(string reason) => new(false, reason);
}

/// <summary>
/// Creates proxies of one kind. Export with <c>[Export(typeof(IProxyFactory))]</c> and
/// <c>[PluginName("udp")]</c>. Selection: the TOML name, else automatically bind for a
/// userspace interface, ebpf then udp for a kernel one.
/// </summary>
public interface IProxyFactory : IPluginFactory
{
    /// <summary>Whether this factory can serve <paramref name="iface"/> here; cheap, no side effects.</summary>
    ProxyCapability CanProxy(IWgIface iface, ProxyEnvironment environment);

    /// <summary>Creates a proxy for one peer. May fail (e.g. an eBPF load); the caller then falls back.</summary>
    ValueTask<IProxy> CreateAsync(IWgIface iface, IPluginContext context, CancellationToken cancellationToken);
}
