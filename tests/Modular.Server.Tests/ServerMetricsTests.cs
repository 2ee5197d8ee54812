using System.Net;
using System.Net.Sockets;
using Modular.Control.Crypto;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>
/// modular-server's Prometheus endpoint (<c>metrics = { listen }</c>): off unless configured, and when configured its
/// numbers follow what happens — a Sync stream opens and a map is pushed, the relay forwards packets.
/// </summary>
public sealed class ServerMetricsTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Scrapes_follow_sync_streams_map_pushes_and_relay_traffic()
    {
        var listen = $"127.0.0.1:{FreeLoopbackPort()}";
        await using var server = await TestServer.StartAsync(tweak: c => c with { MetricsListen = listen });
        using var http = new HttpClient { Timeout = Wait };
        var before = await http.GetStringAsync($"http://{listen}/metrics");
        Assert.Equal(0, Value(before, "modular_server_sync_streams"));
        Assert.Equal(0, Value(before, "modular_server_map_pushes_total"));
        Assert.Equal(0, Value(before, "modular_server_relay_packets_total"));

        var (keyA, a) = server.NewAgent();
        var (keyB, b) = server.NewAgent();
        using var _ = keyA;
        using var __ = keyB;
        var tokenA = (await a.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("a"), CancellationToken.None)).Services.RelayToken.ToByteArray();
        var tokenB = (await b.RegisterAsync(await server.CreateSetupKeyAsync(), TestServer.Meta("b"), CancellationToken.None)).Services.RelayToken.ToByteArray();
        using var cts = new CancellationTokenSource(Wait);
        await using (var stream = a.SyncAsync(TestServer.Meta("a"), cts.Token).GetAsyncEnumerator(cts.Token))
        {
            Assert.True(await stream.MoveNextAsync());
            var during = await http.GetStringAsync($"http://{listen}/metrics", cts.Token);
            Assert.Equal(1, Value(during, "modular_server_sync_streams"));
            Assert.True(Value(during, "modular_server_map_pushes_total") >= 1, during);
            Assert.Equal(2, Value(during, "modular_server_peers"));
        }

        var relay = server.Relay.LocalEndPoint!;
        await using var connA = await Modular.Control.Relay.RelayClient.ConnectAsync(relay, keyA.PublicKey, keyB.PublicKey, tokenA, cts.Token);
        await using var connB = await Modular.Control.Relay.RelayClient.ConnectAsync(relay, keyB.PublicKey, keyA.PublicKey, tokenB, cts.Token);
        await connA.SendAsync(new byte[1000], cts.Token);
        var buffer = new byte[2048];
        Assert.Equal(1000, await connB.ReceiveAsync(buffer, cts.Token));

        var after = await http.GetStringAsync($"http://{listen}/metrics", cts.Token);
        Assert.Equal(1, Value(after, "modular_server_relay_packets_total"));
        Assert.Equal(1000, Value(after, "modular_server_relay_bytes_total"));
        Assert.Equal(2, Value(after, "modular_server_relay_sessions"));
    }

    [Fact]
    public async Task Metrics_answer_on_their_own_listener_only()
    {
        var listen = $"127.0.0.1:{FreeLoopbackPort()}";
        await using var server = await TestServer.StartAsync(tweak: c => c with { MetricsListen = listen });
        using var http = new HttpClient { Timeout = Wait };
        using var grpcPort = new HttpRequestMessage(HttpMethod.Get, new Uri(server.Address, "/metrics")) { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        using var reply = await http.SendAsync(grpcPort);
        Assert.Equal(HttpStatusCode.NotFound, reply.StatusCode);
        Assert.Contains("modular_server_peers", await http.GetStringAsync($"http://{listen}/metrics"), StringComparison.Ordinal);
    }

    internal static double Value(string exposition, string series) => PrometheusText.Value(exposition, series);

    private static int FreeLoopbackPort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }
}
