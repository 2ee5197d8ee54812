using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Engine;

/// <summary>
/// Creates the proxy for a relayed peer: the kind named in TOML, or automatically bind (then udp) for a userspace
/// interface and udp for a kernel or external one. Auto never tries ebpf: measured at 1,000 relayed peers the shared
/// socket udp proxy carried more for less CPU, set up faster and needs neither root nor a tc program on lo (README,
/// "Relay proxies"). An explicit <c>kind = "ebpf"</c> is the only way to the eBPF proxy and never falls back:
/// <see cref="StartAsync"/> loads it when the engine starts, so a host that cannot run it stops start-up with the reason.
/// </summary>
public sealed class ProxySelector : IAsyncDisposable
{
    private readonly string _kind;
    private readonly IReadOnlyDictionary<string, IProxyFactory> _factories;
    private readonly ProxyEnvironment _environment;
    private readonly Func<string, IPluginContext> _contextFor;
    private IProxy? _held;

    /// <param name="kind">"auto" or a factory name.</param>
    /// <param name="contextFor">The plugin context (its TOML section) for a factory name.</param>
    public ProxySelector(string kind, IReadOnlyDictionary<string, IProxyFactory> factories, ProxyEnvironment environment, Func<string, IPluginContext> contextFor)
    {
        _kind = kind;
        _factories = factories;
        _environment = environment;
        _contextFor = contextFor;
    }

    /// <summary>The kinds tried in order for <paramref name="iface"/>.</summary>
    public IReadOnlyList<string> Preference(IWgIface iface)
    {
        if (!string.Equals(_kind, "auto", StringComparison.OrdinalIgnoreCase))
        {
            return [_kind];
        }

        // Kernel (and external) WireGuard: udp only, never ebpf, so NB_DISABLE_EBPF_WG_PROXY does not change auto.
        return iface.IsUserspace ? ["bind", "udp"] : ["udp"];
    }

    /// <summary>
    /// Called once the interface is up. For an explicit <c>kind = "ebpf"</c>, creates one proxy and holds it until
    /// <see cref="DisposeAsync"/>, so the program is loaded and attached from start to stop (not at the first relayed
    /// connect) and a failure (NB_DISABLE_EBPF_WG_PROXY=true, no root, a refused program) throws
    /// <see cref="InvalidOperationException"/> with the reason. Other kinds have nothing to prepare.
    /// </summary>
    public async Task StartAsync(IWgIface iface, CancellationToken cancellationToken)
    {
        if (!string.Equals(_kind, "ebpf", StringComparison.Ordinal) || _held is not null)
        {
            return;
        }

        if (!_factories.TryGetValue("ebpf", out var factory))
        {
            throw new InvalidOperationException("the ebpf proxy plugin is not loaded");
        }

        var capability = factory.CanProxy((IWgInterfaceView)iface, _environment);
        if (!capability.CanProxy)
        {
            throw new InvalidOperationException($"the eBPF proxy cannot serve {iface.Name}: {capability.Reason}");
        }

        try
        {
            _held = await factory.CreateAsync((IWgInterfaceView)iface, _contextFor("ebpf"), cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new InvalidOperationException($"the eBPF proxy cannot start: {e.Message}", e);
        }
    }

    /// <summary>Releases what <see cref="StartAsync"/> holds (the eBPF program stays only while a relayed peer uses it).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _held, null) is { } held)
        {
            await held.CloseAsync();
        }
    }

    public async Task<IProxy> CreateAsync(IWgIface iface, CancellationToken cancellationToken)
    {
        // Plugins see only the narrow view; the object is the whole interface so a factory built against
        // contract 0.x (IWgIface overloads, obsolete) still receives what it expects.
        IWgInterfaceView view = iface;
        var reasons = new List<string>();
        foreach (var name in Preference(iface))
        {
            if (!_factories.TryGetValue(name, out var factory))
            {
                reasons.Add($"{name}: not loaded");
                continue;
            }

            var capability = factory.CanProxy(view, _environment);
            if (!capability.CanProxy)
            {
                reasons.Add($"{name}: {capability.Reason}");
                continue;
            }

            try
            {
                return await factory.CreateAsync(view, _contextFor(name), cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A kind that declined (CanProxy) gives way to the next; one that accepted and then failed is an error.
                throw new InvalidOperationException($"the {name} proxy failed: {e.Message}", e);
            }
        }

        throw new InvalidOperationException($"no proxy can serve {iface.Name}: {string.Join("; ", reasons)}");
    }
}

/// <summary>What a plugin factory receives from the engine.</summary>
public sealed record EnginePluginContext(
    IReadOnlyDictionary<string, object?> Settings,
    ILoggerFactory LoggerFactory,
    TimeProvider Time,
    string StateDirectory,
    IServiceProvider Services) : IPluginContext
{
    /// <summary>The engine's flow uploader (<see cref="ManagementFlowUploader"/>); null when it has none.</summary>
    public Abstractions.Flows.IFlowUploader? FlowUploader { get; init; }

    /// <summary>The host's Rosenpass key directory; set only in the PSK provider's context.</summary>
    public Modular.Abstractions.Security.IRosenpassKeyDirectory? RosenpassKeys { get; init; }
}
