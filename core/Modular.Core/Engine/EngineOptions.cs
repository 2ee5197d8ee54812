using Modular.Abstractions.Config;
using Modular.Abstractions.Flows;
using Modular.Abstractions.Proxy;
using Modular.Abstractions.Security;
using Modular.Abstractions.WireGuard;
using Modular.Core.Config;
using Modular.Core.Peers;

namespace Modular.Core.Engine;

/// <summary>What the engine runs with besides the config.</summary>
/// <param name="PrivateKey">The WireGuard identity (from the host's key file); never logged.</param>
/// <param name="ProxyFactories">Loaded proxy plugins by name.</param>
/// <param name="Services">Handed to plugins through their context.</param>
/// <param name="AgentVersion">Reported to management.</param>
/// <param name="Hostname">Reported to management; peers see this name.</param>
public sealed record EngineOptions(
    AgentConfig Config,
    WgKey PrivateKey,
    IReadOnlyDictionary<string, IProxyFactory> ProxyFactories,
    IServiceProvider Services,
    string AgentVersion,
    string Hostname)
{
    public PeerConnOptions PeerOptions { get; init; } = new(ForceRelay: Config.Connection.ForceRelay);

    /// <summary>How often interface counters are read for status and handshake watching.</summary>
    public TimeSpan StatsInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>What the user switches at run time (the local UI); the stats loop applies changes.</summary>
    public FeatureSwitches Switches { get; init; } = new();

    /// <summary>
    /// Userspace mode: where the interface's read-only UAPI socket is served (`wg show`), as wireguard-go
    /// does; null serves none. Kernel mode ignores it (wireguard-go serves its own).
    /// </summary>
    public string? UapiDirectory { get; init; } = Modular.WireGuard.Uapi.UapiServer.DefaultDirectory;

    /// <summary>Loaded flow-sink plugins by name; the engine creates those <c>[netflow] sinks</c> names while flow logging is on.</summary>
    public IReadOnlyDictionary<string, IFlowSinkFactory> FlowSinkFactories { get; init; } = new Dictionary<string, IFlowSinkFactory>(StringComparer.Ordinal);

    /// <summary>Loaded PSK provider plugins by name; the engine creates the one <c>[rosenpass] provider</c> names while Rosenpass is on.</summary>
    public IReadOnlyDictionary<string, IPresharedKeyProviderFactory> PskProviderFactories { get; init; } = new Dictionary<string, IPresharedKeyProviderFactory>(StringComparer.Ordinal);
}
