using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Both Prometheus endpoints scraped while two agents talk through the relay: the agent's peers, handshakes and bytes,
/// and the server's streams, map pushes, signal messages and relay traffic move as the traffic does.
/// </summary>
public sealed class MetricsE2ETests(ITestOutputHelper output)
{
    private const string ServerMetrics = $"{MeshRig.ServerIp}:9100";
    private const int Pings = 30;
    private const int PingBytes = 1200;

    [SkippableFact]
    public void Agent_and_server_metrics_follow_relayed_traffic()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("curl");
        using var rig = new MeshRig(output, "mx");
        File.WriteAllText(rig.ServerConfig, $"""
            listen = "{MeshRig.ServerIp}:33073"
            data_dir = "{Path.Combine(rig.Root, "server")}"
            relay = {"{"} listen = "{MeshRig.ServerIp}:33080" {"}"}
            stun = {"{"} listen = "{MeshRig.ServerIp}:3478" {"}"}
            metrics = {"{"} listen = "{ServerMetrics}" {"}"}
            """);
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var a = rig.AddAgent("x1");
        var b = rig.AddAgent("x2");
        b.BlockUdpWith(a.PublicIp); // only the relay joins them, so the server's relay counters see the traffic
        a.WriteConfig(key); // [metrics] listen is the default 127.0.0.1:9090, in each agent's own namespace
        b.WriteConfig(key);
        a.Start();
        b.Start();
        string[] names = ["x1", "x2"];
        rig.WaitUntil(() => a.IsConnected("x2", "Relayed") && b.IsConnected("x1", "Relayed"), TimeSpan.FromSeconds(120),
            "both Connected through the relay", () => MeshTests.Diagnostics(rig, names));
        var bIp = b.OverlayIp!;
        rig.WaitUntil(() => a.Ping(bIp, count: 2), TimeSpan.FromSeconds(30), "x1 -> x2 through the relay", () => MeshTests.Diagnostics(rig, names));

        var agentBefore = Scrape(a.Namespace, "127.0.0.1:9090");
        var serverBefore = Scrape(rig.Server, ServerMetrics);
        Assert.Equal(1, PrometheusText.Value(agentBefore, "modular_peers{state=\"Connected\"}"));
        Assert.Equal(1, PrometheusText.Value(agentBefore, "modular_peers_connected{connection_type=\"relayed\"}"));
        Assert.Equal(0, PrometheusText.Value(agentBefore, "modular_peers_connected{connection_type=\"p2p\"}"));
        Assert.True(PrometheusText.Value(agentBefore, "modular_wireguard_handshakes_total") >= 1, agentBefore);
        Assert.Equal(1, PrometheusText.Value(agentBefore, "modular_signal_connected"));
        Assert.Equal(1, PrometheusText.Value(agentBefore, "modular_relays{state=\"connected\"}"));
        Assert.Equal(2, PrometheusText.Value(serverBefore, "modular_server_peers"));
        Assert.Equal(2, PrometheusText.Value(serverBefore, "modular_server_sync_streams"));
        Assert.Equal(2, PrometheusText.Value(serverBefore, "modular_server_signal_streams"));
        Assert.True(PrometheusText.Value(serverBefore, "modular_server_map_pushes_total") >= 2, serverBefore);
        Assert.True(PrometheusText.Value(serverBefore, "modular_server_signal_messages_total{result=\"delivered\"}") >= 1, serverBefore);

        // Traffic: Pings echo requests of PingBytes each way, all through the relay.
        a.Namespace.Exec($"ping -q -c {Pings} -i 0.05 -s {PingBytes} -W 2 {bIp}", TimeSpan.FromSeconds(60));
        const double AtLeast = Pings * PingBytes;
        var tx0 = PrometheusText.Value(agentBefore, "modular_wireguard_transmitted_bytes_total");
        var rx0 = PrometheusText.Value(agentBefore, "modular_wireguard_received_bytes_total");
        var relayBytes0 = PrometheusText.Value(serverBefore, "modular_server_relay_bytes_total");
        var relayPackets0 = PrometheusText.Value(serverBefore, "modular_server_relay_packets_total");
        string agentAfter = "", serverAfter = "";
        // The agent's status takes WireGuard's counters every second: wait for the next refresh to carry the pings.
        rig.WaitUntil(
            () =>
            {
                agentAfter = Scrape(a.Namespace, "127.0.0.1:9090");
                return PrometheusText.Value(agentAfter, "modular_wireguard_transmitted_bytes_total") - tx0 >= AtLeast
                    && PrometheusText.Value(agentAfter, "modular_wireguard_received_bytes_total") - rx0 >= AtLeast;
            },
            TimeSpan.FromSeconds(15),
            $"x1's byte counters up by {AtLeast} each way",
            () => $"before:\n{agentBefore}\nafter:\n{agentAfter}");
        serverAfter = Scrape(rig.Server, ServerMetrics);
        Assert.True(PrometheusText.Value(serverAfter, "modular_server_relay_bytes_total") - relayBytes0 >= 2 * AtLeast, $"before:\n{serverBefore}\nafter:\n{serverAfter}");
        Assert.True(PrometheusText.Value(serverAfter, "modular_server_relay_packets_total") - relayPackets0 >= 2 * Pings, $"before:\n{serverBefore}\nafter:\n{serverAfter}");
        rig.Log(agentAfter);
        rig.Log(serverAfter);
    }

    private static string Scrape(NetworkNamespace ns, string listen)
        => ns.Exec($"curl -sS --max-time 10 http://{listen}/metrics", TimeSpan.FromSeconds(20));
}
