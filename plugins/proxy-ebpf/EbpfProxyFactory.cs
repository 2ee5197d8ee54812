using System.Composition;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// The "ebpf" proxy's factory. The eBPF data path is not built yet: it declines userspace
/// interfaces, a disabled or unprivileged host, and its Create throws, so automatic selection
/// falls back to the UDP proxy with one warning.
/// </summary>
[Export(typeof(IProxyFactory))]
[PluginName("ebpf")]
public sealed class EbpfProxyFactory : IProxyFactory
{
    public const string NotBuiltYet = "eBPF proxy not built yet";

    public string Description =>
        "Not built yet: will relay kernel-mode traffic with an eBPF program on loopback; today Create fails and the agent falls back to the UDP proxy.";

    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment)
    {
        if (iface.IsUserspace)
        {
            return ProxyCapability.No("the eBPF proxy serves kernel/external WireGuard only; use the bind proxy for a userspace interface");
        }

        if (environment.EbpfDisabled)
        {
            return ProxyCapability.No("disabled by NB_DISABLE_EBPF_WG_PROXY");
        }

        return environment.IsRoot
            ? ProxyCapability.Yes
            : ProxyCapability.No("loading eBPF programs needs root");
    }

    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
        => throw new NotSupportedException(NotBuiltYet);
}
