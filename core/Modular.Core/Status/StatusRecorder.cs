using System.Collections.Immutable;

namespace Modular.Core.Status;

/// <summary>
/// Holds the agent's status as an immutable snapshot that the engine updates as things
/// happen (a peer changes state, management connects) and that readers take without
/// locking or waiting: `status -d` must never compute anything on demand or wait on a peer.
/// Writers are serialised by compare-and-swap; readers see one consistent moment.
/// </summary>
public sealed class StatusRecorder
{
    private State _state;

    public StatusRecorder(
        InterfaceStatus iface,
        FeatureStatus features,
        string publicKey,
        ServiceStatus management,
        ServiceStatus signal)
    {
        _state = new State(
            null,
            publicKey,
            iface,
            features,
            management,
            signal,
            ImmutableSortedDictionary<string, ServiceStatus>.Empty.WithComparers(StringComparer.Ordinal),
            ImmutableSortedDictionary<string, PeerStatus>.Empty.WithComparers(StringComparer.Ordinal));
    }

    /// <summary>The current snapshot; cheap enough to call per request.</summary>
    public AgentStatus Snapshot()
    {
        var s = Volatile.Read(ref _state);
        return new AgentStatus(
            s.Ip,
            s.PublicKey,
            s.Interface,
            s.Features,
            s.Management,
            s.Signal,
            [.. s.Relays.Values],
            [.. s.Peers.Values])
        {
            Firewall = s.Firewall,
            Routes = s.Routes,
            Dns = s.Dns,
            Flows = s.Flows,
            EngineRestarts = s.EngineRestarts,
            Metrics = s.Metrics,
            Ui = s.Ui,
        };
    }

    /// <summary>Peers in total and connected, without copying the peer list.</summary>
    public (int Total, int Connected) PeerCounts()
    {
        var peers = Volatile.Read(ref _state).Peers;
        var connected = 0;
        foreach (var peer in peers.Values)
        {
            if (peer.State == Abstractions.Peers.PeerConnectionState.Connected)
            {
                connected++;
            }
        }

        return (peers.Count, connected);
    }

    public void SetOverlayIp(string? ip) => Update(s => s with { Ip = ip });

    public void SetFeatures(FeatureStatus features) => Update(s => s with { Features = features });

    /// <summary>Changes what is in force at run time (e.g. lazy connections turned on by the account).</summary>
    public void UpdateFeatures(Func<FeatureStatus, FeatureStatus> change) => Update(s => s with { Features = change(s.Features) });

    public void SetManagement(ServiceStatus management) => Update(s => s with { Management = management });

    public void SetSignal(ServiceStatus signal) => Update(s => s with { Signal = signal });

    /// <summary>Replaces the firewall's mode and counters (the firewall publishes them every few seconds).</summary>
    public void SetFirewall(FirewallStatus firewall) => Update(s => s with { Firewall = firewall });

    /// <summary>Replaces the route list (after each route apply).</summary>
    public void SetRoutes(IReadOnlyList<RouteStatus> routes) => Update(s => s with { Routes = routes });

    /// <summary>Replaces the resolver's state and counters (on map, listener change, and every few seconds).</summary>
    public void SetDns(DnsStatus dns) => Update(s => s with { Dns = dns });

    /// <summary>Replaces flow logging's state and sink counters (every second while the engine runs).</summary>
    public void SetFlows(FlowStatus flows) => Update(s => s with { Flows = flows });

    /// <summary>How many times the engine was restarted (see <see cref="Engine.EngineSupervisor"/>).</summary>
    public void SetEngineRestarts(long restarts) => Update(s => s with { EngineRestarts = restarts });

    /// <summary>The Prometheus endpoint started, failed to (with why), or stopped.</summary>
    public void SetMetrics(EndpointStatus metrics) => Update(s => s with { Metrics = metrics });

    /// <summary>The local web UI started, failed to (with why), or stopped.</summary>
    public void SetUi(EndpointStatus ui) => Update(s => s with { Ui = ui });

    /// <summary>Adds or replaces the relay with this URL.</summary>
    public void SetRelay(ServiceStatus relay) => Update(s => s with { Relays = s.Relays.SetItem(relay.Url, relay) });

    public void RemoveRelay(string url) => Update(s => s with { Relays = s.Relays.Remove(url) });

    /// <summary>Adds or replaces the peer with this public key.</summary>
    public void SetPeer(PeerStatus peer) => Update(s => s with { Peers = s.Peers.SetItem(peer.PublicKey, peer) });

    /// <summary>Changes one peer if present (e.g. new counters); returns false when unknown.</summary>
    public bool UpdatePeer(string publicKey, Func<PeerStatus, PeerStatus> change)
    {
        var found = false;
        Update(s =>
        {
            found = s.Peers.TryGetValue(publicKey, out var peer);
            return found ? s with { Peers = s.Peers.SetItem(publicKey, change(peer!)) } : s;
        });
        return found;
    }

    public void RemovePeer(string publicKey) => Update(s => s with { Peers = s.Peers.Remove(publicKey) });

    private void Update(Func<State, State> change)
    {
        while (true)
        {
            var current = Volatile.Read(ref _state);
            var next = change(current);
            if (ReferenceEquals(current, next) || ReferenceEquals(Interlocked.CompareExchange(ref _state, next, current), current))
            {
                return;
            }
        }
    }

    private sealed record State(
        string? Ip,
        string PublicKey,
        InterfaceStatus Interface,
        FeatureStatus Features,
        ServiceStatus Management,
        ServiceStatus Signal,
        ImmutableSortedDictionary<string, ServiceStatus> Relays,
        ImmutableSortedDictionary<string, PeerStatus> Peers)
    {
        public FirewallStatus Firewall { get; init; } = FirewallStatus.Off;

        public IReadOnlyList<RouteStatus> Routes { get; init; } = [];

        public DnsStatus Dns { get; init; } = DnsStatus.Off;

        public FlowStatus Flows { get; init; } = FlowStatus.Off;

        public long EngineRestarts { get; init; }
        public EndpointStatus Metrics { get; init; } = EndpointStatus.Off;

        public EndpointStatus Ui { get; init; } = EndpointStatus.Off;
    }
}
