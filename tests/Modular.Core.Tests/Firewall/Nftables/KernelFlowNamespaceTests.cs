using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.Flows;
using Modular.Core.Firewall;
using Modular.Core.Firewall.Nftables;
using Modular.Testing;
using Xunit.Abstractions;
using static Modular.Core.Tests.Firewall.TestPackets;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// Kernel mode's flow events on real traffic: the agent's table (through the real enforcer, with flow logging) in a
/// namespace of its own, a veth end standing for the tunnel, and a <see cref="KernelFlowSource"/> reading conntrack
/// and NFLOG there. A TCP session, a UDP exchange and pings each way give Start and End with the rule that let them in
/// and counters matching what was sent; a refused connection gives a Drop with its rule; nf_conntrack_acct is on while
/// collecting and as it was after.
/// </summary>
public sealed class KernelFlowNamespaceTests(ITestOutputHelper output)
{
    private const string ClientIp = "100.64.0.5";
    private const string HostIp = "100.64.0.1";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private static int _links;

    [SkippableFact]
    public async Task Tcp_udp_and_ping_give_start_and_end_with_rules_and_counters_and_a_refused_connection_a_drop()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("nft");
        Prerequisites.RequireTool("ip");
        Prerequisites.RequireTool("conntrack");
        using var client = NetworkNamespace.Create("kflcli");
        using var host = NetworkNamespace.Create("kflhost");
        var device = Veth(client, host);
        using var conntrack = InNamespace.Create(host.Name, () => new NetlinkConntrack());
        var rules = new KernelFlowRules();
        await using var enforcer = new NftablesEnforcer(device, IPAddress.Parse(HostIp), null, new NamespaceNftables(host.Name), NullLogger.Instance,
            conntrack: conntrack, flowLog: new NftablesFlowLog(NftablesFlowLog.DefaultGroup), flowRules: rules);
        Assert.True(await enforcer.ApplyAsync(
            [
                Rule("web", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "8000"),
                Rule("echo", RuleAction.Accept, RuleProtocol.Udp, ClientIp, "7000"),
                Rule("ping", RuleAction.Accept, RuleProtocol.Icmp, ClientIp),
                Rule("no-9999", RuleAction.Drop, RuleProtocol.Tcp, ClientIp, "9999"),
            ],
            CancellationToken.None));
        host.Exec("sysctl -q -w net.netfilter.nf_conntrack_acct=0");

        var sink = new CollectingSink();
        var source = InNamespace.Create(host.Name, () => new KernelFlowSource(new FlowEventEmitter(sink, TimeProvider.System, int.MaxValue), rules, NftablesFlowLog.DefaultGroup, NullLogger.Instance));
        try
        {
            source.Start();
            Assert.Equal("1", host.Exec("sysctl -n net.netfilter.nf_conntrack_acct").Trim());

            host.Exec("ping -c 1 -W 2 127.0.0.1"); // not through the tunnel: never reported
            var (tcpPort, tcpSent, tcpReceived) = await TcpSessionAsync(client.Name, host.Name);
            await UdpExchangeAsync(client.Name, host.Name);
            client.Exec($"ping -c 2 -i 0.2 -W 2 {HostIp}");
            host.Exec($"ping -c 1 -W 2 {ClientIp}");
            Assert.False(await ConnectsAsync(client.Name, 9999), "the drop rule refuses port 9999");
            host.Exec("conntrack -F"); // ends every connection now (each gives its destroy event with final counters)

            var tcpEnd = await sink.WaitForAsync(e => e.Type == FlowEventType.End && e.Protocol == IpProtocol.Tcp && e.SourcePort == tcpPort);
            var udpEnd = await sink.WaitForAsync(e => e.Type == FlowEventType.End && e.Protocol == IpProtocol.Udp);
            var pingEnd = await sink.WaitForAsync(e => e.Type == FlowEventType.End && e.Protocol == IpProtocol.Icmp && e.Direction == FlowDirection.Ingress);
            var pingOutEnd = await sink.WaitForAsync(e => e.Type == FlowEventType.End && e.Protocol == IpProtocol.Icmp && e.Direction == FlowDirection.Egress);
            var drop = await sink.WaitForAsync(e => e.Type == FlowEventType.Drop);
            foreach (var e in sink.Events)
            {
                output.WriteLine(e.ToString());
            }

            // TCP: every byte of the session, plus 40-60 bytes of IP and TCP header per packet.
            var tcpStart = sink.Single(FlowEventType.Start, tcpEnd.FlowId);
            Assert.Equal(("web", FlowDirection.Ingress, (ushort)8000), (tcpStart.RuleId, tcpStart.Direction, tcpStart.DestinationPort));
            Assert.Equal(IPAddress.Parse(ClientIp), tcpEnd.SourceAddress);
            Assert.Equal("web", tcpEnd.RuleId);
            Assert.InRange(tcpEnd.RxBytes, (ulong)tcpSent + (40 * tcpEnd.RxPackets), (ulong)tcpSent + (60 * tcpEnd.RxPackets));
            Assert.InRange(tcpEnd.TxBytes, (ulong)tcpReceived + (40 * tcpEnd.TxPackets), (ulong)tcpReceived + (60 * tcpEnd.TxPackets));

            // UDP: three 10-byte datagrams in (38 bytes each on the wire), three 20-byte answers out (48 each).
            Assert.Equal(("echo", (ushort)40000, (ushort)7000), (udpEnd.RuleId, udpEnd.SourcePort, udpEnd.DestinationPort));
            Assert.Equal((3UL, 114UL, 3UL, 144UL), (udpEnd.RxPackets, udpEnd.RxBytes, udpEnd.TxPackets, udpEnd.TxBytes));
            Assert.Equal(udpEnd.FlowId, sink.Single(FlowEventType.Start, udpEnd.FlowId).FlowId);

            // Pings: 84 bytes each (20 IP, 8 ICMP, 56 data), echo request type 8; the outbound one under the default accept (no rule).
            Assert.Equal(("ping", (byte)8, (byte)0), (pingEnd.RuleId, pingEnd.IcmpType, pingEnd.IcmpCode));
            Assert.Equal((2UL, 168UL, 2UL, 168UL), (pingEnd.RxPackets, pingEnd.RxBytes, pingEnd.TxPackets, pingEnd.TxBytes));
            Assert.Equal((null, IPAddress.Parse(HostIp), 1UL, 84UL), (pingOutEnd.RuleId, pingOutEnd.SourceAddress, pingOutEnd.TxPackets, pingOutEnd.TxBytes));

            // The refused SYN (60 bytes), with the rule that dropped it.
            Assert.Equal(("no-9999", FlowDirection.Ingress, IpProtocol.Tcp, (ushort)9999), (drop.RuleId, drop.Direction, drop.Protocol, drop.DestinationPort));
            Assert.Equal(IPAddress.Parse(ClientIp), drop.SourceAddress);
            Assert.Equal(1UL, drop.RxPackets);

            Assert.DoesNotContain(sink.Events, e => IPAddress.IsLoopback(e.SourceAddress) || IPAddress.IsLoopback(e.DestinationAddress));
            Assert.Equal(0, source.UnmarkedEvents); // the loopback ping's events stayed in the kernel (socket filter on the mark)
            Assert.Equal(0, source.LostEvents);
        }
        finally
        {
            await source.DisposeAsync();
        }

        Assert.Equal("0", host.Exec("sysctl -n net.netfilter.nf_conntrack_acct").Trim());
    }

    /// <summary>1000 bytes up, 500 down, then both sides close; returns the client's port and the payload each way.</summary>
    private static async Task<(ushort Port, int Sent, int Received)> TcpSessionAsync(string clientNamespace, string hostNamespace)
    {
        using var listener = InNamespace.Create(hostNamespace, () =>
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Parse(HostIp), 8000));
            socket.Listen();
            return socket;
        });
        using var socket = InNamespace.Create(clientNamespace, () => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        using var timeout = new CancellationTokenSource(Patience);
        var accepting = listener.AcceptAsync(timeout.Token).AsTask();
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(HostIp), 8000), timeout.Token);
        using var served = await accepting;
        await socket.SendAsync(new byte[1000], timeout.Token);
        var buffer = new byte[2000];
        var received = 0;
        while (received < 1000)
        {
            received += await served.ReceiveAsync(buffer, timeout.Token);
        }

        await served.SendAsync(new byte[500], timeout.Token);
        served.Shutdown(SocketShutdown.Both);
        var back = 0;
        int n;
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            back += n;
        }

        socket.Shutdown(SocketShutdown.Both);
        return ((ushort)((IPEndPoint)socket.LocalEndPoint!).Port, 1000, back);
    }

    /// <summary>Three 10-byte datagrams from port 40000, each answered with 20 bytes.</summary>
    private static async Task UdpExchangeAsync(string clientNamespace, string hostNamespace)
    {
        using var server = InNamespace.Create(hostNamespace, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        server.Bind(new IPEndPoint(IPAddress.Parse(HostIp), 7000));
        using var socket = InNamespace.Create(clientNamespace, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        socket.Bind(new IPEndPoint(IPAddress.Parse(ClientIp), 40000));
        socket.Connect(new IPEndPoint(IPAddress.Parse(HostIp), 7000));
        using var timeout = new CancellationTokenSource(Patience);
        var buffer = new byte[64];
        for (var i = 0; i < 3; i++)
        {
            await socket.SendAsync(new byte[10], timeout.Token);
            var request = await server.ReceiveFromAsync(buffer, new IPEndPoint(IPAddress.Any, 0), timeout.Token);
            Assert.Equal(10, request.ReceivedBytes);
            await server.SendToAsync(new byte[20], request.RemoteEndPoint, timeout.Token);
            Assert.Equal(20, await socket.ReceiveAsync(buffer, timeout.Token));
        }
    }

    /// <summary>Whether a TCP connection to <paramref name="port"/> is set up within 2 s (a dropped SYN never is).</summary>
    private static async Task<bool> ConnectsAsync(string clientNamespace, int port)
    {
        using var socket = InNamespace.Create(clientNamespace, () => new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(HostIp), port), timeout.Token);
            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return false;
        }
    }

    /// <summary>A veth pair, client 100.64.0.5/24 and host 100.64.0.1/24; returns the host's end (the "tunnel").</summary>
    private static string Veth(NetworkNamespace client, NetworkNamespace host)
    {
        var n = Interlocked.Increment(ref _links);
        var clientEnd = $"kla{Environment.ProcessId % 10000}x{n}";
        var hostEnd = $"klb{Environment.ProcessId % 10000}x{n}";
        Shell.Run("ip", $"link add {clientEnd} netns {client.Name} type veth peer name {hostEnd} netns {host.Name}");
        client.Exec($"ip addr add {ClientIp}/24 dev {clientEnd}");
        client.Exec($"ip link set {clientEnd} up");
        host.Exec($"ip addr add {HostIp}/24 dev {hostEnd}");
        host.Exec($"ip link set {hostEnd} up");
        return hostEnd;
    }

    /// <summary>Keeps every event; a test waits (bounded) for the one it expects.</summary>
    private sealed class CollectingSink : IFlowSink
    {
        private readonly ConcurrentQueue<FlowEvent> _events = new();

        public IReadOnlyList<FlowEvent> Events => [.. _events];

        public void Emit(FlowEvent flowEvent) => _events.Enqueue(flowEvent);

        public FlowEvent Single(FlowEventType type, Guid flowId) => Assert.Single(_events, e => e.Type == type && e.FlowId == flowId);

        public async Task<FlowEvent> WaitForAsync(Func<FlowEvent, bool> match)
        {
            var waited = Stopwatch.StartNew();
            while (true)
            {
                if (_events.FirstOrDefault(match) is { } found)
                {
                    return found;
                }

                Assert.True(waited.Elapsed < Patience, $"no such flow event within {Patience.TotalSeconds} s; got: {string.Join("; ", _events)}");
                await Task.Delay(50);
            }
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
