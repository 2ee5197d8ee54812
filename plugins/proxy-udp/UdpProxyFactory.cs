using System.Composition;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyUdp;

/// <summary>The "udp" proxy: works with any WireGuard (kernel, wireguard-go or in-process).</summary>
[Export(typeof(IProxyFactory))]
[PluginName("udp")]
public sealed class UdpProxyFactory : IProxyFactory
{
    public string Description =>
        "Relays a peer's relayed traffic through a loopback UDP socket per peer that WireGuard uses as the peer's endpoint; works in userspace and kernel mode.";

    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment) => ProxyCapability.Yes;

    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        IProxy proxy = new UdpProxy(iface.ListenPort, context.LoggerFactory.CreateLogger<UdpProxy>());
        return ValueTask.FromResult(proxy);
    }
}
