using System.Collections.Immutable;
using System.Net;
using System.Net.Sockets;
using System.Runtime;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using Modular.Abstractions.Peers;
using Modular.Agent.Metrics;
using Modular.Core.Status;

using Modular.Testing;

namespace Modular.Agent.Tests;

/// <summary>
/// The agent's Prometheus endpoint: what <see cref="AgentMetrics"/> makes of a status snapshot (totals that never go
/// down, bounded labels), and a real daemon serving it, or running on with a warning in status when its port is taken.
/// </summary>
public sealed class MetricsTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 12, 1, 12, 0, 0, TimeSpan.Zero);
    private readonly AgentHarness _agent = new();

    [Fact]
    public async Task Scrapes_count_peers_by_state_and_type_and_keep_totals_growing_when_a_peer_leaves()
    {
        var time = new FakeTimeProvider(Start);
        var recorder = NewRecorder();
        recorder.SetPeer(Peer('a', PeerConnectionState.Connected, ConnectionType.P2P, null, rx: 100, tx: 200, handshake: Start.AddSeconds(-10)));
        recorder.SetPeer(Peer('b', PeerConnectionState.Connected, ConnectionType.Relayed, "bind", rx: 50, tx: 5, handshake: Start.AddMinutes(-10)));
        recorder.SetPeer(Peer('c', PeerConnectionState.Idle, null, null, rx: 0, tx: 0, handshake: null));
        recorder.SetFirewall(FirewallStatus.Off with { DropsByRule = ImmutableSortedDictionary<string, long>.Empty.Add("p1", 3), DefaultDrops = 5 });
        var metrics = new AgentMetrics(recorder, time);

        var first = await ScrapeAsync(metrics);
        Assert.Equal(2, Value(first, "modular_peers{state=\"Connected\"}"));
        Assert.Equal(1, Value(first, "modular_peers{state=\"Idle\"}"));
        Assert.Equal(0, Value(first, "modular_peers{state=\"Connecting\"}"));
        Assert.Equal(1, Value(first, "modular_peers_connected{connection_type=\"p2p\"}"));
        Assert.Equal(1, Value(first, "modular_peers_connected{connection_type=\"relayed\"}"));
        Assert.Equal(1, Value(first, "modular_relayed_peers{proxy=\"bind\"}"));
        Assert.Equal(1, Value(first, "modular_peers_recent_handshake"));
        Assert.Equal(2, Value(first, "modular_wireguard_handshakes_total"));
        Assert.Equal(150, Value(first, "modular_wireguard_received_bytes_total"));
        Assert.Equal(205, Value(first, "modular_wireguard_transmitted_bytes_total"));
        Assert.Equal(3, Value(first, "modular_firewall_drops_total{reason=\"rule\"}"));
        Assert.Equal(5, Value(first, "modular_firewall_drops_total{reason=\"default\"}"));
        Assert.Equal(0, Value(first, "modular_engine_restarts_total"));
        Assert.DoesNotContain(Key('a'), first, StringComparison.Ordinal); // no label names a peer

        // a carries more and shakes hands again; b leaves the map (its bytes stay counted); the daemon restarts the engine.
        recorder.UpdatePeer(Key('a'), p => p with { RxBytes = 1100, LastHandshake = Start.AddSeconds(100) });
        recorder.RemovePeer(Key('b'));
        recorder.SetEngineRestarts(1); // as EngineSupervisor does after its first restart
        time.Advance(TimeSpan.FromSeconds(120));
        var second = await ScrapeAsync(metrics);
        Assert.Equal(1150, Value(second, "modular_wireguard_received_bytes_total"));
        Assert.Equal(205, Value(second, "modular_wireguard_transmitted_bytes_total"));
        Assert.Equal(3, Value(second, "modular_wireguard_handshakes_total"));
        Assert.Equal(0, Value(second, "modular_relayed_peers{proxy=\"bind\"}"));
        Assert.Equal(1, Value(second, "modular_engine_restarts_total"));

        // Counters that restart with the engine (a new WireGuard device) count on from where they were.
        recorder.UpdatePeer(Key('a'), p => p with { RxBytes = 10 });
        Assert.Equal(1160, Value(await ScrapeAsync(metrics), "modular_wireguard_received_bytes_total"));
    }

    [Fact]
    public async Task Ten_thousand_peers_make_as_many_series_as_two()
    {
        async Task<string> ScrapeWith(int peers)
        {
            var recorder = NewRecorder();
            for (var i = 0; i < peers; i++)
            {
                var key = Convert.ToBase64String(BitConverter.GetBytes(i).Concat(new byte[28]).ToArray());
                var (state, type, proxy) = (i % 3) switch
                {
                    0 => (PeerConnectionState.Connected, (ConnectionType?)ConnectionType.P2P, (string?)null),
                    1 => (PeerConnectionState.Connected, ConnectionType.Relayed, i % 2 == 0 ? "udp" : "bind"),
                    _ => (PeerConnectionState.Idle, null, null),
                };
                recorder.SetPeer(new PeerStatus($"peer-{i}", "100.64.0.2", key, state, null, type, null, null, null, proxy, Start, Start, i, i, null, false, null));
            }

            return await ScrapeAsync(new AgentMetrics(recorder, new FakeTimeProvider(Start)));
        }

        static string[] Series(string text) => text.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l[..l.LastIndexOf(' ')]).Order(StringComparer.Ordinal).ToArray();

        var two = await ScrapeWith(2);
        var many = await ScrapeWith(10_000);
        Assert.Equal(6667, Value(many, "modular_peers{state=\"Connected\"}"));
        Assert.Equal(Series(two).Except(["modular_relayed_peers{proxy=\"udp\"}"]), Series(many).Except(["modular_relayed_peers{proxy=\"udp\"}"]));
    }

    [Fact]
    public async Task The_process_and_its_garbage_collector_are_exported_beside_the_agents_own_metrics()
    {
        var metrics = new AgentMetrics(NewRecorder(), new FakeTimeProvider(Start));
        GC.Collect(); // the heap "after the last collection" needs one to have happened

        var text = await ScrapeAsync(metrics);
        Assert.True(Value(text, "dotnet_gc_heap_size_bytes") > 0, text);
        Assert.True(Value(text, "dotnet_gc_committed_bytes") > 0, text);
        Assert.True(Value(text, "dotnet_gc_live_bytes") > 0, text); // GC.Collect() is a full blocking collection
        Assert.True(Value(text, "dotnet_gc_fragmented_bytes") >= 0, text);
        Assert.Equal(GCSettings.IsServerGC ? 1 : 0, Value(text, "dotnet_gc_server"));
        Assert.True(Value(text, "dotnet_collection_count_total{generation=\"2\"}") >= 1, text);
        Assert.True(Value(text, "process_working_set_bytes") > 0, text);
        Assert.True(Value(text, "process_open_handles") > 0, text);
        Assert.True(Value(text, "process_num_threads") > 0, text);
    }

    [Fact]
    public async Task A_daemon_serves_metrics_and_status_says_so()
    {
        var listen = $"127.0.0.1:{FreeLoopbackPort()}";
        _agent.StartDaemon(_agent.WriteConfig(interfaceName: "mdtmx0", metrics: listen));
        Assert.True(EndpointState().GetProperty("serving").GetBoolean(), AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output);
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };
        var text = await http.GetStringAsync($"http://{listen}/metrics");
        Assert.Equal(0, Value(text, "modular_peers{state=\"Connected\"}"));
        Assert.Equal(0, Value(text, "modular_management_connected"));
        Assert.Equal(0, Value(text, "modular_engine_restarts_total"));
        Assert.Equal(1, Value(text, "modular_proxy_kind_info{kind=\"auto\"}"));
        Assert.Equal(0, Value(text, "dotnet_gc_server")); // the daemon runs the workstation GC (Modular.Agent.csproj says why)
        Assert.True(Value(text, "process_open_handles") > 0, text);

        using var status = JsonDocument.Parse(AgentHarness.Run($"status --json --socket {_agent.SocketPath}").Output);
        var metrics = status.RootElement.GetProperty("metrics");
        Assert.True(metrics.GetProperty("serving").GetBoolean());
        Assert.Equal(listen, metrics.GetProperty("listen").GetString());
        Assert.Equal(JsonValueKind.Null, metrics.GetProperty("warning").ValueKind);
        Assert.Contains($"Metrics:", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output, StringComparison.Ordinal);
        Assert.Contains($"on, http://{listen}/metrics", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output, StringComparison.Ordinal);
    }

    [Fact]
    public void A_taken_metrics_port_is_a_warning_in_status_and_the_agent_runs_on()
    {
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var listen = $"127.0.0.1:{((IPEndPoint)squatter.LocalEndpoint).Port}";
        var daemon = _agent.StartDaemon(_agent.WriteConfig(interfaceName: "mdtmx1", metrics: listen));
        Assert.Contains("Metrics not served", AgentHarness.WaitForOutput(daemon, "Metrics not served"), StringComparison.Ordinal);

        var reply = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
        Assert.Equal(0, reply.ExitCode);
        using var status = JsonDocument.Parse(reply.Output);
        var metrics = status.RootElement.GetProperty("metrics");
        Assert.False(metrics.GetProperty("serving").GetBoolean());
        Assert.Equal($"{listen} is taken by another program (9090 is also Prometheus's own port): set [metrics] listen to a free address and port, or \"\" to turn metrics off",
            metrics.GetProperty("warning").GetString());
        Assert.Contains($"Metrics:", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output, StringComparison.Ordinal);
        Assert.Contains($"not serving: {listen} is taken", AgentHarness.Run($"status --socket {_agent.SocketPath}").Output, StringComparison.Ordinal);
        Assert.Equal(0, AgentHarness.Run($"down --socket {_agent.SocketPath}").ExitCode);
        Assert.Equal(0, AgentHarness.WaitForExit(daemon));
    }

    // The endpoint starts just after the CLI socket answers: wait until status says it serves or why it does not.
    private JsonElement EndpointState()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var reply = AgentHarness.Run($"status --json --socket {_agent.SocketPath}");
            Assert.True(reply.ExitCode == 0, reply.Error);
            var metrics = JsonDocument.Parse(reply.Output).RootElement.GetProperty("metrics").Clone();
            if (metrics.GetProperty("serving").GetBoolean() || metrics.GetProperty("warning").ValueKind != JsonValueKind.Null || DateTime.UtcNow > deadline)
            {
                return metrics;
            }

            Thread.Sleep(200);
        }
    }

    internal static async Task<string> ScrapeAsync(AgentMetrics metrics)
    {
        using var buffer = new MemoryStream();
        await metrics.Registry.CollectAndExportAsTextAsync(buffer);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    internal static double Value(string exposition, string series) => PrometheusText.Value(exposition, series);

    private static StatusRecorder NewRecorder() => new(
        new InterfaceStatus("mdt0", "userspace", 51820, 1280),
        new FeatureStatus(false, "15m", [], false, "auto", false, false, false),
        Key('s'),
        new ServiceStatus("https://m.example", true, null),
        new ServiceStatus("https://s.example", true, null));

    private static string Key(char c) => new string(c, 43) + "=";

    private static PeerStatus Peer(char c, PeerConnectionState state, ConnectionType? type, string? proxy, long rx, long tx, DateTimeOffset? handshake)
        => new($"peer-{c}", "100.64.0.2", Key(c), state, null, type, null, null, null, proxy, Start, handshake, rx, tx, null, false, null);

    private static int FreeLoopbackPort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    public void Dispose() => _agent.Dispose();
}
