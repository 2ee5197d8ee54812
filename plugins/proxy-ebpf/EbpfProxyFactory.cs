using System.Composition;
using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Plugins.ProxyEbpf;

/// <summary>
/// The "ebpf" proxy: kernel/external WireGuard only (Linux 6.6+ for tcx, root). One <see cref="EbpfDataPath"/> per
/// WireGuard listen port, loaded and attached by the first proxy created and detached when the last one closes (the
/// engine holds one from start to stop, so a load failure stops start-up). Used only when <c>kind = "ebpf"</c> is
/// explicit: automatic selection picks udp in kernel mode (README, "Relay proxies"). A failing load throws from
/// <see cref="CreateAsync"/> with the reason.
/// </summary>
/// <remarks>
/// Setting <c>[plugins.ebpf] object</c>: the compiled program (default: bpf/wgproxy.o next to this assembly, built
/// from bpf/wgproxy.c by clang at build time).
/// </remarks>
[Export(typeof(IProxyFactory))]
[PluginName("ebpf")]
public sealed class EbpfProxyFactory : IProxyFactory
{
    private readonly Lock _lock = new();
    private readonly Dictionary<int, Shared> _paths = [];

    public string Description =>
        "Relays kernel-mode traffic through ONE loopback UDP socket and a tc program on lo that rewrites ports, so WireGuard sees each relayed peer at its own 127.0.0.1 port; kernel mode, root, Linux 6.6+.";

    /// <summary>Where the compiled program is by default.</summary>
    public static string DefaultObjectPath =>
        Path.Combine(Path.GetDirectoryName(typeof(EbpfProxyFactory).Assembly.Location) ?? AppContext.BaseDirectory, "bpf", "wgproxy.o");

    public ProxyCapability CanServe(WgInterfaceMode mode) => mode == WgInterfaceMode.Kernel
        ? ProxyCapability.Yes
        : ProxyCapability.No("the eBPF proxy serves kernel/external WireGuard only; use the bind proxy (or \"auto\") for a userspace interface");

    public ProxyCapability CanProxy(IWgInterfaceView iface, ProxyEnvironment environment)
    {
        if (CanServe(iface.Mode) is { CanProxy: false } refused)
        {
            return refused;
        }

        if (environment.EbpfDisabled)
        {
            return ProxyCapability.No("disabled by NB_DISABLE_EBPF_WG_PROXY=true");
        }

        return environment.IsRoot
            ? ProxyCapability.Yes
            : ProxyCapability.No("loading eBPF programs needs root");
    }

    public ValueTask<IProxy> CreateAsync(IWgInterfaceView iface, IPluginContext context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var objectPath = context.Settings.TryGetValue("object", out var value) && value is string { Length: > 0 } path ? path : DefaultObjectPath;
        var logger = context.LoggerFactory.CreateLogger<EbpfProxy>();
        var lease = Acquire(iface.ListenPort, objectPath, logger);
        IProxy proxy = new EbpfProxy(lease.Path, lease, logger);
        return ValueTask.FromResult(proxy);
    }

    /// <summary>Relayed peers each data path carries now (for tests and status).</summary>
    internal int PeersOn(int wireGuardPort)
    {
        lock (_lock)
        {
            return _paths.TryGetValue(wireGuardPort, out var shared) ? shared.Path.Peers : 0;
        }
    }

    private Lease Acquire(int wireGuardPort, string objectPath, ILogger logger)
    {
        lock (_lock)
        {
            if (!_paths.TryGetValue(wireGuardPort, out var shared))
            {
                shared = new Shared(EbpfDataPath.Open(objectPath, wireGuardPort, logger));
                _paths.Add(wireGuardPort, shared);
            }

            shared.Holders++;
            return new Lease(this, wireGuardPort, shared.Path);
        }
    }

    private void Release(int wireGuardPort)
    {
        EbpfDataPath? closing = null;
        lock (_lock)
        {
            if (_paths.TryGetValue(wireGuardPort, out var shared) && --shared.Holders == 0)
            {
                _paths.Remove(wireGuardPort);
                closing = shared.Path;
            }
        }

        closing?.Dispose();
    }

    private sealed class Shared(EbpfDataPath path)
    {
        public EbpfDataPath Path { get; } = path;

        public int Holders { get; set; }
    }

    /// <summary>One proxy's hold on a data path; disposing it twice releases once.</summary>
    private sealed class Lease(EbpfProxyFactory owner, int wireGuardPort, EbpfDataPath path) : IDisposable
    {
        private int _released;

        public EbpfDataPath Path { get; } = path;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                owner.Release(wireGuardPort);
            }
        }
    }
}
