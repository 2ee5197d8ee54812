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
    private readonly Lock _lock = new();
    private readonly Dictionary<int, SharedProxySocket> _shared = [];

    public string Description =>
        "Relays every relayed peer's traffic through ONE loopback UDP socket, each peer at its own 127.192.0.0/10 address that WireGuard uses as the peer's endpoint; works in userspace and kernel mode.";

    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment) => ProxyCapability.Yes;

    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var logger = context.LoggerFactory.CreateLogger<UdpProxy>();
        IProxy proxy = new UdpProxy(SharedFor(iface.ListenPort, logger), logger);
        return ValueTask.FromResult(proxy);
    }

    // One shared socket per WireGuard listen port (an agent has one interface); it opens with the first relayed
    // peer and closes with the last, so keeping the object costs no socket.
    private SharedProxySocket SharedFor(int wireGuardPort, ILogger logger)
    {
        lock (_lock)
        {
            if (!_shared.TryGetValue(wireGuardPort, out var shared))
            {
                shared = new SharedProxySocket(wireGuardPort, logger);
                _shared.Add(wireGuardPort, shared);
            }

            return shared;
        }
    }
}
