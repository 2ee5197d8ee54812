using Microsoft.Extensions.Logging;
using Modular.Abstractions.Plugins;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Engine;

/// <summary>
/// Creates the proxy for a relayed peer: the kind named in TOML, or automatically bind for a
/// userspace interface and ebpf, then udp, for a kernel one. An ebpf proxy that cannot be created
/// (no BPF here, verifier refusal) falls back to udp with one warning for the agent's lifetime.
/// </summary>
public sealed class ProxySelector
{
    private readonly string _kind;
    private readonly IReadOnlyDictionary<string, IProxyFactory> _factories;
    private readonly ProxyEnvironment _environment;
    private readonly Func<string, IPluginContext> _contextFor;
    private readonly ILogger _logger;
    private int _ebpfWarned;

    /// <param name="kind">"auto" or a factory name.</param>
    /// <param name="contextFor">The plugin context (its TOML section) for a factory name.</param>
    public ProxySelector(string kind, IReadOnlyDictionary<string, IProxyFactory> factories, ProxyEnvironment environment, Func<string, IPluginContext> contextFor, ILogger logger)
    {
        _kind = kind;
        _factories = factories;
        _environment = environment;
        _contextFor = contextFor;
        _logger = logger;
    }

    /// <summary>The kinds tried in order for <paramref name="iface"/>.</summary>
    public IReadOnlyList<string> Preference(IWgIface iface)
    {
        if (!string.Equals(_kind, "auto", StringComparison.OrdinalIgnoreCase))
        {
            return string.Equals(_kind, "ebpf", StringComparison.Ordinal) ? ["ebpf", "udp"] : [_kind];
        }

        return iface.IsUserspace ? ["bind", "udp"] : _environment.EbpfDisabled ? ["udp"] : ["ebpf", "udp"];
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
                reasons.Add($"{name}: {e.Message}");
                if (string.Equals(name, "ebpf", StringComparison.Ordinal))
                {
                    if (Interlocked.Exchange(ref _ebpfWarned, 1) == 0)
                    {
                        _logger.LogWarning("The eBPF proxy could not be created ({Reason}); using the UDP proxy instead", e.Message);
                    }

                    continue;
                }

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
