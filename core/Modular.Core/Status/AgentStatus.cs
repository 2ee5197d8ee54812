using System.Collections.Immutable;
using Modular.Abstractions.Peers;

namespace Modular.Core.Status;

// The status snapshot `modular status` prints. Property names map one to one onto the JSON
// field names of DESIGN.md (snake_case): scripts and tests rely on them, so rename nothing.

/// <summary>Everything the agent reports about itself and its peers at one moment.</summary>
/// <param name="Ip">The overlay address management assigned; null until it did.</param>
/// <param name="PublicKey">The WireGuard public key (base64), as peers know this agent.</param>
public sealed record AgentStatus(
    string? Ip,
    string PublicKey,
    InterfaceStatus Interface,
    FeatureStatus Features,
    ServiceStatus Management,
    ServiceStatus Signal,
    IReadOnlyList<ServiceStatus> Relays,
    IReadOnlyList<PeerStatus> Peers)
{
    /// <summary>Policy enforcement and its drop counters (a snapshot refreshed every few seconds).</summary>
    public FirewallStatus Firewall { get; init; } = FirewallStatus.Off;

    /// <summary>Every route of the current map: which peer carries it, and whether it is in place.</summary>
    public IReadOnlyList<RouteStatus> Routes { get; init; } = [];

    /// <summary>The mesh resolver: where it listens, what it answers, and its query counters.</summary>
    public DnsStatus Dns { get; init; } = DnsStatus.Off;

    /// <summary>Flow logging's sinks and their counters (a snapshot refreshed every second).</summary>
    public FlowStatus Flows { get; init; } = FlowStatus.Off;

    /// <summary>How many times the daemon restarted its engine (a network change, or asked to) since it started.</summary>
    public long EngineRestarts { get; init; }
    /// <summary>The Prometheus endpoint (<c>[metrics] listen</c>): serving or not, and why not.</summary>
    public EndpointStatus Metrics { get; init; } = EndpointStatus.Off;

    /// <summary>The local web UI (<c>[ui] listen</c>): serving or not, and why not.</summary>
    public EndpointStatus Ui { get; init; } = EndpointStatus.Off;
}

/// <summary>A local HTTP endpoint of the daemon (the Prometheus endpoint, the web UI) as it runs.</summary>
/// <param name="Listen">The configured address ("127.0.0.1:9090"); "" when turned off.</param>
/// <param name="Serving">True only while it listens.</param>
/// <param name="Warning">Why it does not listen although asked to (the port is taken, ...); null otherwise.</param>
public sealed record EndpointStatus(string Listen, bool Serving, string? Warning)
{
    /// <summary>Turned off (<c>listen = ""</c>), or not started yet.</summary>
    public static readonly EndpointStatus Off = new("", false, null);
}

/// <summary>The local WireGuard interface as configured.</summary>
/// <param name="Mode">"userspace" or "kernel".</param>
public sealed record InterfaceStatus(string Name, string Mode, int Port, int Mtu);

/// <summary>
/// The features in force after flags, environment, the local UI, file and account settings merged: a boolean is true
/// only when the feature is in effect; one that was asked for but cannot be is false and listed in <see cref="Unavailable"/>.
/// </summary>
/// <param name="InactivityTimeout">A duration as written in TOML, e.g. "15m".</param>
/// <param name="Proxy">The proxy kind selected ("auto" or a plugin name).</param>
public sealed record FeatureStatus(
    bool LazyConnections,
    string InactivityTimeout,
    IReadOnlyList<string> AlwaysConnected,
    bool ForceRelay,
    string Proxy,
    bool Rosenpass,
    bool RosenpassPermissive,
    bool Netflow)
{
    /// <summary>Which source decided lazy connections: flag, environment, ui, config, account or default.</summary>
    public string LazyConnectionsSource { get; init; } = "default";

    /// <summary>Which source decided whether Rosenpass is asked for (see <see cref="LazyConnectionsSource"/>).</summary>
    public string RosenpassSource { get; init; } = "default";

    /// <summary>Which source decided whether flow logging is asked for (see <see cref="LazyConnectionsSource"/>).</summary>
    public string NetflowSource { get; init; } = "default";

    /// <summary>Features asked for (by this config, its default or the account) that are not in effect, with why.</summary>
    public IReadOnlyDictionary<string, string> Unavailable { get; init; } = ImmutableSortedDictionary<string, string>.Empty;
}

/// <summary>A control-plane service (management, signal, a relay) as this agent sees it.</summary>
/// <param name="Error">Why it is not connected; null when connected.</param>
public sealed record ServiceStatus(string Url, bool Connected, string? Error);

/// <summary>One remote peer.</summary>
/// <param name="Reason">Why the peer is not Connected (null when it is).</param>
/// <param name="ConnectionType">P2P or Relayed while connected, else null.</param>
/// <param name="Proxy">The proxy plugin carrying relayed traffic, else null.</param>
/// <param name="LatencyMs">Last measured round trip, null before one was measured.</param>
public sealed record PeerStatus(
    string Name,
    string Ip,
    string PublicKey,
    PeerConnectionState State,
    string? Reason,
    ConnectionType? ConnectionType,
    string? LocalCandidate,
    string? RemoteCandidate,
    string? Relay,
    string? Proxy,
    DateTimeOffset? LastStateChange,
    DateTimeOffset? LastHandshake,
    long RxBytes,
    long TxBytes,
    double? LatencyMs,
    bool QuantumResistant,
    DateTimeOffset? QuantumResistantSince);
