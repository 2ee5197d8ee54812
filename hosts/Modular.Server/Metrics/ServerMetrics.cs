using Microsoft.Extensions.DependencyInjection;
using Modular.Server.Management;
using Modular.Server.Relay;
using Modular.Server.Signal;
using Prometheus;

namespace Modular.Server.Metrics;

/// <summary>
/// <c>modular-server</c>'s Prometheus metrics (<c>metrics = { listen = "host:port" }</c>, off by default), read at
/// scrape time: peers in the network, live Sync and signal streams, maps pushed, signal messages, relay traffic. A
/// component this process does not run exports nothing for it. No label names a peer, so the series stay few however
/// large the network grows.
/// </summary>
public sealed class ServerMetrics
{
    private readonly IServiceProvider _services;
    private readonly ServerCounters _counters;
    private readonly Gauge _peers;
    private readonly Gauge _syncStreams;
    private readonly Gauge _signalStreams;
    private readonly Counter _mapPushes;
    private readonly Counter _signalMessages;
    private readonly Counter _relayBytes;
    private readonly Counter _relayPackets;
    private readonly Counter _relayDropped;
    private readonly Gauge _relaySessions;

    public ServerMetrics(IServiceProvider services, ServerCounters counters)
    {
        _services = services;
        _counters = counters;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);
        _peers = f.CreateGauge("modular_server_peers", "Peers registered in the network (management's current snapshot).");
        _syncStreams = f.CreateGauge("modular_server_sync_streams", "Live management Sync streams (one per connected agent).");
        _signalStreams = f.CreateGauge("modular_server_signal_streams", "Live signal streams.");
        _mapPushes = f.CreateCounter("modular_server_map_pushes_total", "Network maps (full or delta) and service refreshes sent on Sync streams.");
        _signalMessages = f.CreateCounter("modular_server_signal_messages_total", "Signal messages routed, by result (delivered, undeliverable).", "result");
        _relayBytes = f.CreateCounter("modular_server_relay_bytes_total", "Payload bytes the relay forwarded.");
        _relayPackets = f.CreateCounter("modular_server_relay_packets_total", "Packets the relay forwarded.");
        _relayDropped = f.CreateCounter("modular_server_relay_dropped_total", "Datagrams the relay dropped (malformed, unknown session, over a limit).");
        _relaySessions = f.CreateGauge("modular_server_relay_sessions", "Relay sessions bound now.");
        Registry.AddBeforeCollectCallback(Collect);
    }

    /// <summary>What the endpoint exports.</summary>
    public CollectorRegistry Registry { get; }

    private void Collect()
    {
        if (_services.GetService<NetworkState>() is { } network)
        {
            _peers.Set(network.CurrentPeerCount);
        }

        _syncStreams.Set(_services.GetRequiredService<PeerSessions<ManagementGrpcService>>().Count);
        _signalStreams.Set(_services.GetRequiredService<PeerSessions<SignalGrpcService>>().Count);
        _mapPushes.IncTo(_counters.MapPushes);
        _signalMessages.WithLabels("delivered").IncTo(_counters.SignalMessages);
        _signalMessages.WithLabels("undeliverable").IncTo(_counters.SignalUndeliverable);
        if (_services.GetService<RelayServer>() is { } relay)
        {
            _relayBytes.IncTo(relay.ForwardedBytes);
            _relayPackets.IncTo(relay.ForwardedPackets);
            _relayDropped.IncTo(relay.Dropped);
            _relaySessions.Set(relay.SessionCount);
        }
    }
}
