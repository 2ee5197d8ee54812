using Modular.Abstractions.Peers;
using Modular.Core.Status;
using Prometheus;

namespace Modular.Agent.Metrics;

/// <summary>
/// The agent's Prometheus metrics, read at scrape time from the status snapshot the engine keeps anyway (the one
/// `status -d` prints): nothing is counted on the packet path, so metrics cost nothing per packet and one pass over
/// the peers per scrape. No label carries a peer (name, key or address): every label has a handful of values, so
/// 10,000 peers make the same number of series as two. Counters that the snapshot holds per peer (WireGuard's
/// transfer) are summed from per-peer deltas, so a peer that leaves the map does not make a total go down.
/// </summary>
internal sealed class AgentMetrics
{
    /// <summary>A peer's handshake younger than this counts as recent (WireGuard's reject-after-time, 180 s).</summary>
    public static readonly TimeSpan RecentHandshake = TimeSpan.FromSeconds(180);

    private static readonly PeerConnectionState[] States = [PeerConnectionState.Idle, PeerConnectionState.Connecting, PeerConnectionState.Connected];

    private readonly StatusRecorder _recorder;
    private readonly TimeProvider _time;
    private readonly Lock _lock = new();
    private readonly Dictionary<string, PeerCounters> _peers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _last = new(StringComparer.Ordinal);

    private readonly Gauge _peersByState;
    private readonly Gauge _peersByType;
    private readonly Gauge _relayedByProxy;
    private readonly Gauge _proxyKind;
    private readonly Gauge _recentHandshakes;
    private readonly Counter _handshakes;
    private readonly Counter _rxBytes;
    private readonly Counter _txBytes;
    private readonly Gauge _management;
    private readonly Gauge _signal;
    private readonly Gauge _relays;
    private readonly Counter _firewallDrops;
    private readonly Gauge _firewallFlows;
    private readonly Counter _dnsQueries;
    private readonly Counter _dnsOutcomes;
    private readonly Counter _flowEvents;
    private readonly Counter _engineRestarts;

    public AgentMetrics(StatusRecorder recorder, TimeProvider time)
    {
        _recorder = recorder;
        _time = time;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        var f = Prometheus.Metrics.WithCustomRegistry(Registry);
        _peersByState = f.CreateGauge("modular_peers", "Peers in the network map by state (Idle, Connecting, Connected).", "state");
        _peersByType = f.CreateGauge("modular_peers_connected", "Connected peers by connection type (p2p, relayed).", "connection_type");
        _relayedByProxy = f.CreateGauge("modular_relayed_peers", "Relayed peers by the proxy plugin that carries them.", "proxy");
        _proxyKind = f.CreateGauge("modular_proxy_kind_info", "The configured [proxy] kind (auto or a plugin name): always 1.", "kind");
        _recentHandshakes = f.CreateGauge("modular_peers_recent_handshake", "Peers whose last WireGuard handshake is under 180 s old.");
        _handshakes = f.CreateCounter("modular_wireguard_handshakes_total", "WireGuard handshakes seen: a peer's last-handshake time that moved since the previous scrape counts one.");
        _rxBytes = f.CreateCounter("modular_wireguard_received_bytes_total", "Bytes WireGuard received from all peers.");
        _txBytes = f.CreateCounter("modular_wireguard_transmitted_bytes_total", "Bytes WireGuard sent to all peers.");
        _management = f.CreateGauge("modular_management_connected", "1 while management is connected.");
        _signal = f.CreateGauge("modular_signal_connected", "1 while signal is connected.");
        _relays = f.CreateGauge("modular_relays", "Relays this agent was told about, by state (connected, disconnected).", "state");
        _firewallDrops = f.CreateCounter("modular_firewall_drops_total", "Packets the firewall dropped, by reason (rule, default, invalid, malformed, fragment, table_full).", "reason");
        _firewallFlows = f.CreateGauge("modular_firewall_active_flows", "Connections the firewall tracks now.");
        _dnsQueries = f.CreateCounter("modular_dns_queries_total", "Queries the mesh resolver received.");
        _dnsOutcomes = f.CreateCounter("modular_dns_outcomes_total", "Mesh resolver queries by outcome (local, forwarded, nxdomain, refused, servfail, malformed).", "outcome");
        _flowEvents = f.CreateCounter("modular_flow_events_total", "Flow events by sink and stage (recorded, sent, acknowledged, dropped, exported).", "sink", "stage");
        _engineRestarts = f.CreateCounter("modular_engine_restarts_total", "Times the daemon restarted the engine (network change, ...), not counting the first start.");
        foreach (var state in States)
        {
            _peersByState.WithLabels(state.ToString());
        }

        _peersByType.WithLabels("p2p");
        _peersByType.WithLabels("relayed");
        Registry.AddBeforeCollectCallback(Collect);
        RuntimeMetrics.Register(Registry);
    }

    /// <summary>What the endpoint exports.</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>Brings every metric up to the current snapshot; runs before each scrape.</summary>
    public void Collect()
    {
        var status = _recorder.Snapshot();
        lock (_lock)
        {
            CollectPeers(status);
            _proxyKind.WithLabels(status.Features.Proxy).Set(1);
            _management.Set(status.Management.Connected ? 1 : 0);
            _signal.Set(status.Signal.Connected ? 1 : 0);
            var connectedRelays = status.Relays.Count(r => r.Connected);
            _relays.WithLabels("connected").Set(connectedRelays);
            _relays.WithLabels("disconnected").Set(status.Relays.Count - connectedRelays);

            var fw = status.Firewall;
            long ruleDrops = 0;
            foreach (var (rule, drops) in fw.DropsByRule)
            {
                ruleDrops += Delta("firewall-rule|" + rule, drops); // per rule: a rule leaving the map takes nothing back
            }

            _firewallDrops.WithLabels("rule").Inc(ruleDrops);
            Advance(_firewallDrops, "default", fw.DefaultDrops);
            Advance(_firewallDrops, "invalid", fw.InvalidDrops ?? 0);
            Advance(_firewallDrops, "malformed", fw.MalformedDrops ?? 0);
            Advance(_firewallDrops, "fragment", fw.FragmentDrops ?? 0);
            Advance(_firewallDrops, "table_full", fw.TableFullDrops ?? 0);
            _firewallFlows.Set(fw.ActiveFlows ?? 0);

            var dns = status.Dns;
            Advance(_dnsQueries, [], dns.Queries);
            Advance(_dnsOutcomes, "local", dns.AnsweredLocally);
            Advance(_dnsOutcomes, "forwarded", dns.Forwarded);
            Advance(_dnsOutcomes, "nxdomain", dns.Nxdomain);
            Advance(_dnsOutcomes, "refused", dns.Refused);
            Advance(_dnsOutcomes, "servfail", dns.Servfail);
            Advance(_dnsOutcomes, "malformed", dns.Malformed);

            foreach (var sink in status.Flows.Sinks)
            {
                if (sink.Counters is { } c)
                {
                    Advance(_flowEvents, [sink.Name, "recorded"], c.Recorded);
                    Advance(_flowEvents, [sink.Name, "sent"], c.Sent);
                    Advance(_flowEvents, [sink.Name, "acknowledged"], c.Acknowledged);
                    Advance(_flowEvents, [sink.Name, "dropped"], c.Dropped);
                    Advance(_flowEvents, [sink.Name, "exported"], c.Exported);
                }
            }

            _engineRestarts.IncTo(status.EngineRestarts);
        }
    }

    private void CollectPeers(AgentStatus status)
    {
        Span<int> byState = stackalloc int[States.Length];
        int p2p = 0, relayed = 0, recent = 0;
        long rxDelta = 0, txDelta = 0, handshakes = 0;
        var byProxy = new Dictionary<string, int>(StringComparer.Ordinal);
        var now = _time.GetUtcNow();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var peer in status.Peers)
        {
            byState[Array.IndexOf(States, peer.State)]++;
            if (peer.State == PeerConnectionState.Connected)
            {
                if (peer.ConnectionType == ConnectionType.P2P)
                {
                    p2p++;
                }
                else if (peer.ConnectionType == ConnectionType.Relayed)
                {
                    relayed++;
                    var proxy = peer.Proxy ?? "none";
                    byProxy[proxy] = byProxy.GetValueOrDefault(proxy) + 1;
                }
            }

            if (peer.LastHandshake is { } handshake && now - handshake < RecentHandshake)
            {
                recent++;
            }

            seen.Add(peer.PublicKey);
            var before = _peers.GetValueOrDefault(peer.PublicKey);
            // WireGuard's counters restart with the peer (removed and added again, an engine restart): the new value
            // is then all new traffic.
            rxDelta += peer.RxBytes >= before.Rx ? peer.RxBytes - before.Rx : peer.RxBytes;
            txDelta += peer.TxBytes >= before.Tx ? peer.TxBytes - before.Tx : peer.TxBytes;
            if (peer.LastHandshake is { } h && h != before.Handshake)
            {
                handshakes++;
            }

            _peers[peer.PublicKey] = new PeerCounters(peer.RxBytes, peer.TxBytes, peer.LastHandshake);
        }

        if (seen.Count != _peers.Count)
        {
            foreach (var gone in _peers.Keys.Where(k => !seen.Contains(k)).ToList())
            {
                _peers.Remove(gone);
            }
        }

        for (var i = 0; i < States.Length; i++)
        {
            _peersByState.WithLabels(States[i].ToString()).Set(byState[i]);
        }

        _peersByType.WithLabels("p2p").Set(p2p);
        _peersByType.WithLabels("relayed").Set(relayed);
        foreach (var labels in _relayedByProxy.GetAllLabelValues().ToList())
        {
            if (!byProxy.ContainsKey(labels[0]))
            {
                _relayedByProxy.WithLabels(labels).Set(0);
            }
        }

        foreach (var (proxy, count) in byProxy)
        {
            _relayedByProxy.WithLabels(proxy).Set(count);
        }

        _recentHandshakes.Set(recent);
        _handshakes.Inc(handshakes);
        _rxBytes.Inc(rxDelta);
        _txBytes.Inc(txDelta);
    }

    // A counter the snapshot holds as a running total: add what it grew by since the last scrape; a total that went
    // down was reset (the engine started again), so all of the new value is new.
    private void Advance(Counter counter, string label, long total) => Advance(counter, [label], total);

    private void Advance(Counter counter, string[] labels, long total)
    {
        var delta = Delta(counter.Name + "|" + string.Join('|', labels), total);
        ICounter target = labels.Length == 0 ? counter : counter.WithLabels(labels);
        target.Inc(delta);
    }

    private long Delta(string key, long total)
    {
        var before = (long)_last.GetValueOrDefault(key);
        _last[key] = total;
        return total >= before ? total - before : total;
    }

    private readonly record struct PeerCounters(long Rx, long Tx, DateTimeOffset? Handshake);
}
