using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// The NetFlow pipeline end to end, through real processes: two userspace agents with the firewall on and
/// <c>[netflow] enabled = true</c>, a ping, a TCP session and a UDP exchange across the tunnel, and a TCP
/// connection a drop policy refuses. The agents' netflow sink ships the events over the Flow API and
/// <c>modular-server flows list --json</c> must show each with its protocol, addresses, ports, counters and rule.
/// End events come from a policy change: deleting Default ends the flows it allowed (no waiting for timeouts).
/// </summary>
public sealed class NetflowTests(ITestOutputHelper output)
{
    private const int TcpPort = 8080;
    private const int RefusedPort = 2323;
    private const int UdpPort = 5353;
    private const int TcpPayload = 20_000;
    private const int UdpPayload = 200;
    private const int UdpDatagrams = 3;
    private const int UdpReply = 50;
    private const int PingSize = 200;
    private const int Pings = 4;
    private const int IpHeader = 20;
    private const int UdpHeader = 8;
    private const int IcmpHeader = 8;
    private static readonly TimeSpan Shipped = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Userspace_ping_tcp_udp_and_a_refused_connection_reach_flows_list_with_their_counters_and_rules()
        => PingTcpUdpAndADrop(kernelMode: false);

    /// <summary>
    /// The same in kernel mode (wireguard-go, nftables): conntrack reports the flows. A policy change does not end
    /// kernel connections, so flushing nfb's conntrack table ends them (ctnetlink's Destroy events carry the totals).
    /// </summary>
    [SkippableFact]
    public void Kernel_ping_tcp_udp_and_a_refused_connection_reach_flows_list_with_their_counters_and_rules()
    {
        Prerequisites.RequireTool("wireguard-go");
        Prerequisites.RequireTool("conntrack");
        PingTcpUdpAndADrop(kernelMode: true);
    }

    private void PingTcpUdpAndADrop(bool kernelMode)
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, kernelMode ? "nk" : "nf");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        rig.StartServer();
        var key = rig.CreateSetupKey();
        foreach (var name in new[] { "nfa", "nfb" })
        {
            rig.AddAgent(name).WriteConfig(key, "[proxy]\nkind = \"udp\"\n[netflow]\nenabled = true");
            if (kernelMode)
            {
                rig[name].UseKernelMode();
            }

            rig[name].Start();
        }

        string Diagnostics() => MeshTests.Diagnostics(rig, ["nfa", "nfb"]) + "\nserver:\n" + rig.ServerOutput;
        rig.WaitUntil(() => rig["nfa"].IsConnected("nfb") && rig["nfb"].IsConnected("nfa"), TimeSpan.FromSeconds(90), "nfa and nfb Connected", Diagnostics);
        var ipA = rig["nfa"].OverlayIp!;
        var ipB = rig["nfb"].OverlayIp!;
        rig.WaitUntil(() => rig["nfa"].Ping(ipB), MeshTests.FirstPingTimeout, "nfa -> nfb under the Default policy", Diagnostics);
        Assert.True(rig["nfb"].Status()!.Value.GetProperty("features").GetProperty("netflow").GetBoolean(), "flow logging is on at nfb");

        var defaultId = PolicyId(rig, "Default");
        rig.ServerCli($"policies create no-telnet --source All --destination All --protocol tcp --ports {RefusedPort} --action drop");
        var dropId = PolicyId(rig, "no-telnet");
        var addressB = IPAddress.Parse(ipB);
        using var telnet = Probes.Listen(rig["nfb"].Namespace.Name, addressB, RefusedPort, cancel.Token);
        rig.WaitUntil(() => !Probes.TryTcp(rig["nfa"].Namespace.Name, addressB, RefusedPort, out _), TimeSpan.FromSeconds(60), "TCP 2323 refused by the drop policy", Diagnostics);

        // A ping of a size nothing else in the test sends, so its flow is told apart from the rig's pings.
        var ping = rig["nfa"].Namespace.TryExec($"ping -c {Pings} -i 0.2 -s {PingSize} -W 2 {ipB}", TimeSpan.FromSeconds(30));
        Assert.True(ping.ExitCode == 0, ping.Output);

        using var tcpListener = ListenCounting(rig["nfb"].Namespace.Name, addressB, TcpPort, cancel.Token);
        var (tcpClientPort, tcpReply) = SendTcp(rig["nfa"].Namespace.Name, addressB, TcpPort, TcpPayload, cancel.Token);
        Assert.Equal($"got {TcpPayload}", tcpReply);

        var udpClientPort = ExchangeUdp(rig["nfa"].Namespace.Name, rig["nfb"].Namespace.Name, addressB, cancel.Token);

        if (kernelMode)
        {
            // Destroying nfb's connections gives their End events with conntrack's totals.
            rig["nfb"].Namespace.Exec("conntrack -F");
        }
        else
        {
            // Deleting Default ends every flow it allowed at nfb (the inbound side): End events with their totals.
            rig.ServerCli("policies delete Default");
        }

        JsonElement[] events = [];
        bool Has(Func<JsonElement, bool> match) => events.Any(match);
        bool At(JsonElement e, string peerIp, string type, string protocol) => Str(e, "peer_ip") == peerIp && Str(e, "type") == type && Str(e, "protocol") == protocol;
        bool TcpFlow(JsonElement e) => Str(e, "source") == ipA && Num(e, "source_port") == tcpClientPort && Str(e, "destination") == ipB && Num(e, "destination_port") == TcpPort;
        bool UdpFlow(JsonElement e) => Str(e, "source") == ipA && Num(e, "source_port") == udpClientPort && Str(e, "destination") == ipB && Num(e, "destination_port") == UdpPort;
        bool PingFlow(JsonElement e) => Str(e, "source") == ipA && Str(e, "destination") == ipB && Num(e, "icmp_type") == 8 && Num(e, "rx_bytes") == Pings * (IpHeader + IcmpHeader + PingSize);
        // Wait for every event the assertions below read, each agent's on its own: nfa ships independently of nfb, and
        // its Drop (recorded first) can be acknowledged before its TCP Start is; a batch can also be acknowledged in
        // part, so nfb's End events being stored does not imply its Start events are.
        rig.WaitUntil(
            () =>
            {
                events = FlowsList(rig);
                return Has(e => At(e, ipB, "start", "tcp") && TcpFlow(e))
                    && Has(e => At(e, ipB, "end", "tcp") && TcpFlow(e))
                    && Has(e => At(e, ipB, "start", "udp") && UdpFlow(e))
                    && Has(e => At(e, ipB, "end", "udp") && UdpFlow(e))
                    && Has(e => At(e, ipB, "end", "icmp") && PingFlow(e))
                    && Has(e => At(e, ipA, "start", "tcp") && TcpFlow(e))
                    && Has(e => At(e, ipA, "drop", "tcp") && Num(e, "destination_port") == RefusedPort);
            },
            Shipped,
            "nfb's Start and End events of the TCP and UDP flows, its End of the ping, nfa's Start of the TCP session and its Drop of TCP 2323 in flows list",
            () => Diagnostics() + "\nflows:\n" + string.Join("\n", events.Select(e => e.ToString())));
        rig.Log(rig.ServerCli("flows list"));

        // TCP at nfb (ingress): the payload and its headers in, the reply out, allowed by Default.
        var tcpStart = events.Single(e => At(e, ipB, "start", "tcp") && TcpFlow(e));
        var tcpEnd = events.Single(e => At(e, ipB, "end", "tcp") && TcpFlow(e));
        Assert.Equal(Str(tcpStart, "flow_id"), Str(tcpEnd, "flow_id"));
        Assert.Equal("ingress", Str(tcpEnd, "direction"));
        Assert.Equal(defaultId, Str(tcpEnd, "rule_id"));
        Assert.True(Num(tcpEnd, "rx_bytes") >= TcpPayload + (3 * (IpHeader + 20)), $"TCP rx bytes {Num(tcpEnd, "rx_bytes")} cover the {TcpPayload}-byte payload");
        Assert.True(Num(tcpEnd, "rx_packets") >= 3, "SYN, ACK, data and FIN in");
        Assert.True(Num(tcpEnd, "tx_bytes") >= tcpReply.Length + IpHeader + 20, $"TCP tx bytes {Num(tcpEnd, "tx_bytes")} cover the reply");
        Assert.Equal(Str(tcpEnd, "peer"), Str(tcpStart, "peer"));

        // The same session at nfa (egress) started too, with nfa's own flow ID.
        Assert.True(Has(e => At(e, ipA, "start", "tcp") && TcpFlow(e) && Str(e, "direction") == "egress"), "nfa's egress Start of the TCP session");

        // UDP at nfb: exactly the datagrams sent each way.
        var udpEnd = events.Single(e => At(e, ipB, "end", "udp") && UdpFlow(e));
        Assert.Equal((long)UdpDatagrams, Num(udpEnd, "rx_packets"));
        Assert.Equal((long)UdpDatagrams * (IpHeader + UdpHeader + UdpPayload), Num(udpEnd, "rx_bytes"));
        Assert.Equal(1L, Num(udpEnd, "tx_packets"));
        Assert.Equal((long)(IpHeader + UdpHeader + UdpReply), Num(udpEnd, "tx_bytes"));
        Assert.Equal(defaultId, Str(udpEnd, "rule_id"));
        Assert.True(Has(e => At(e, ipB, "start", "udp") && UdpFlow(e)), "nfb's Start of the UDP exchange");

        // Ping at nfb: echo requests in, replies out, type 8 code 0 read from the packet.
        var pingEnd = events.Single(e => At(e, ipB, "end", "icmp") && PingFlow(e));
        Assert.Equal((long)Pings, Num(pingEnd, "rx_packets"));
        Assert.Equal((long)Pings, Num(pingEnd, "tx_packets"));
        Assert.Equal((long)Pings * (IpHeader + IcmpHeader + PingSize), Num(pingEnd, "tx_bytes"));
        Assert.Equal(0L, Num(pingEnd, "icmp_code"));
        Assert.Equal(defaultId, Str(pingEnd, "rule_id"));

        // The refused connection: All -> All gives nfa the drop rule outbound too, so its SYN is dropped before it
        // leaves nfa: a Drop at nfa (egress) naming the drop policy.
        var drop = events.First(e => At(e, ipA, "drop", "tcp") && Num(e, "destination_port") == RefusedPort);
        Assert.Equal(ipA, Str(drop, "source"));
        Assert.Equal(ipB, Str(drop, "destination"));
        Assert.Equal("egress", Str(drop, "direction"));
        Assert.Equal(dropId, Str(drop, "rule_id"));
        Assert.Equal(1L, Num(drop, "tx_packets"));
        Assert.True(Num(drop, "tx_bytes") >= IpHeader + 20, "the dropped SYN's bytes");

        // Each agent names the remote end of its flows, in either mode (kernel events go through the same emitter);
        // its own end is the reporting peer itself (peer_ip), which the server knows already. So nfb names nfa as
        // the TCP flow's source, nfa names nfb as its destination, and the two IDs differ.
        var nfaTcpStart = events.Single(e => At(e, ipA, "start", "tcp") && TcpFlow(e));
        var nfaId = Str(tcpEnd, "source_resource_id");
        var nfbId = Str(nfaTcpStart, "destination_resource_id");
        Assert.False(string.IsNullOrEmpty(nfaId), "nfb's TCP flow names nfa as its source");
        Assert.False(string.IsNullOrEmpty(nfbId), "nfa's TCP flow names nfb as its destination");
        Assert.NotEqual(nfaId, nfbId);
        Assert.Equal(nfaId, Str(tcpStart, "source_resource_id"));
        Assert.Equal(nfbId, Str(drop, "destination_resource_id"));
    }

    private static string PolicyId(MeshRig rig, string name)
    {
        using var policies = JsonDocument.Parse(rig.ServerCli("policies list --json"));
        return policies.RootElement.EnumerateArray().Single(p => p.GetProperty("name").GetString() == name).GetProperty("id").GetString()!;
    }

    private static JsonElement[] FlowsList(MeshRig rig)
    {
        using var document = JsonDocument.Parse(rig.ServerCli("flows list --json"));
        return [.. document.RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    private static string? Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long Num(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : -1;

    /// <summary>A TCP listener that reads each connection to its end and answers "got N" (the bytes it read).</summary>
    private static Socket ListenCounting(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
    {
        var listener = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(address, port));
        listener.Listen(4);
        _ = Task.Run(async () =>
        {
            try
            {
                var buffer = new byte[4096];
                while (!cancellationToken.IsCancellationRequested)
                {
                    using var client = await listener.AcceptAsync(cancellationToken);
                    var total = 0;
                    int read;
                    while ((read = await client.ReceiveAsync(buffer, SocketFlags.None, cancellationToken)) > 0)
                    {
                        total += read;
                    }

                    await client.SendAsync(Encoding.ASCII.GetBytes($"got {total}"), SocketFlags.None, cancellationToken);
                    client.Shutdown(SocketShutdown.Both);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // The test is over: the listener was closed.
            }
        }, CancellationToken.None);
        return listener;
    }

    /// <summary>Sends <paramref name="bytes"/> bytes, closes its side and reads the answer; returns the client's port and the answer.</summary>
    private static (int Port, string Reply) SendTcp(string namespaceName, IPAddress address, int port, int bytes, CancellationToken cancellationToken)
    {
        using var socket = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token).AsTask().GetAwaiter().GetResult();
        var clientPort = ((IPEndPoint)socket.LocalEndPoint!).Port;
        var payload = new byte[bytes];
        Random.Shared.NextBytes(payload);
        var sent = 0;
        while (sent < payload.Length)
        {
            sent += socket.SendAsync(payload.AsMemory(sent), SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
        }

        socket.Shutdown(SocketShutdown.Send);
        var answer = new byte[64];
        var total = 0;
        int read;
        while ((read = socket.ReceiveAsync(answer.AsMemory(total), SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult()) > 0)
        {
            total += read;
        }

        return (clientPort, Encoding.ASCII.GetString(answer, 0, total));
    }

    /// <summary>
    /// Three datagrams from the client namespace to <paramref name="address"/>:5353, one reply back once all three
    /// arrived; returns the client's port.
    /// </summary>
    private static int ExchangeUdp(string clientNamespace, string serverNamespace, IPAddress address, CancellationToken cancellationToken)
    {
        using var server = NamespaceSocket.Create(serverNamespace, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        server.Bind(new IPEndPoint(address, UdpPort));
        using var client = NamespaceSocket.Create(clientNamespace, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        client.Bind(new IPEndPoint(IPAddress.Any, 0));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        var buffer = new byte[1500];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        for (var i = 0; i < UdpDatagrams; i++)
        {
            client.SendTo(new byte[UdpPayload], new IPEndPoint(address, UdpPort));
            var received = server.ReceiveFromAsync(buffer, SocketFlags.None, from, timeout.Token).AsTask().GetAwaiter().GetResult();
            Assert.Equal(UdpPayload, received.ReceivedBytes);
            from = received.RemoteEndPoint;
        }

        server.SendTo(new byte[UdpReply], from);
        var reply = client.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
        Assert.Equal(UdpReply, reply);
        return ((IPEndPoint)client.LocalEndPoint!).Port;
    }
}
