using System.Composition;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyBind;

/// <summary>The "bind" proxy: hands relayed datagrams straight to the in-process WireGuard's Bind.</summary>
[Export(typeof(IProxyFactory))]
[PluginName("bind")]
public sealed class BindProxyFactory : IProxyFactory
{
    public string Description =>
        "Joins a peer's relayed connection to the in-process WireGuard at its Bind (no loopback socket); userspace interfaces only.";

    public ProxyCapability CanServe(WgInterfaceMode mode) => mode == WgInterfaceMode.Userspace
        ? ProxyCapability.Yes
        : ProxyCapability.No("the bind proxy needs the in-process (userspace) WireGuard; kernel mode has none (use \"udp\" or \"auto\")");

    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment)
    {
        if (CanServe(iface.Mode) is { CanProxy: false } refused)
        {
            return refused;
        }

        return iface.BindHook is null
            ? ProxyCapability.No("this userspace interface exposes no Bind hook")
            : ProxyCapability.Yes;
    }

    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var hook = iface.BindHook
            ?? throw new NotSupportedException($"interface {iface.Name} has no Bind hook: the bind proxy needs a userspace interface");
        IProxy proxy = new BindProxy(hook, context.LoggerFactory.CreateLogger<BindProxy>());
        return ValueTask.FromResult(proxy);
    }
}
