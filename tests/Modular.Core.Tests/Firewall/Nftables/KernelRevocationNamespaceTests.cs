using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Routing;
using Modular.Core.Tests.Routing;
using Modular.Testing;
using Xunit.Abstractions;
using static Modular.Core.Tests.Firewall.TestPackets;
using FirewallRule = Modular.Core.Firewall.FirewallRule;
using RuleAction = Modular.Core.Firewall.RuleAction;
using RuleProtocol = Modular.Core.Firewall.RuleProtocol;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// Kernel mode's tables on real traffic in namespaces of their own (veth pairs stand in for the WireGuard
/// interface): a connection whose rule was revoked stays dead however many tables follow, on this peer's own
/// traffic and on what a routing peer forwards; and a peer that routes nothing forwards nothing from the mesh.
/// Flows are UDP echoes from a fixed port, so a probe is one datagram of one long-lived conntrack entry.
/// </summary>
public sealed class KernelRevocationNamespaceTests(ITestOutputHelper output)
{
    private const string ClientIp = "100.64.0.5";
    private const string HostIp = "100.64.0.1";
    private const string LanHostIp = "10.77.0.10";
    private const int EchoPort = 7000;
    private static readonly IPNetwork Overlay = IPNetwork.Parse("100.64.0.0/10");

    [SkippableFact]
    public async Task Kernel_revoked_flow_never_comes_back_after_many_applies()
    {
        RequireTools();
        using var client = NetworkNamespace.Create("kfwcli");
        using var host = NetworkNamespace.Create("kfwhost");
        var device = Veth(client, ClientIp, host, HostIp);
        using var conntrack = InNamespace.Create(host.Name, () => new NetlinkConntrack());
        await using var enforcer = new NftablesEnforcer(device, IPAddress.Parse(HostIp), null, new NamespaceNftables(host.Name), NullLogger.Instance, conntrack: conntrack);
        using var echo = UdpEcho.Start(host.Name, HostIp);
        using var flow = UdpFlow(client.Name, ClientIp, HostIp);

        FirewallRule[] allowed = [Rule("echo", RuleAction.Accept, RuleProtocol.Udp, ClientIp, $"{EchoPort}")];
        Assert.True(await enforcer.ApplyAsync(allowed, CancellationToken.None));
        Assert.True(Echoes(flow), "the flow the rule allows echoes");
        Assert.True(Echoes(flow), "and goes on (established, stamped by the table)");
        // The generation was cleared over ctnetlink, so the table trusts its stamp (else every packet would walk the rules and this test prove less).
        Assert.Contains("ct state established ct mark & 0x7f000000 == ", host.Exec("nft list table inet " + enforcer.Table), StringComparison.Ordinal);

        // Revoked: the flow ends. Then the map keeps changing (as a peer renaming itself at every login makes it):
        // the old table's generation comes round again after 127 tables, and must not bring the flow back.
        FirewallRule[] revoked = [Rule("other", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "9000")];
        FirewallRule[] revokedToo = [Rule("other", RuleAction.Accept, RuleProtocol.Tcp, ClientIp, "9001")];
        Assert.True(await enforcer.ApplyAsync(revoked, CancellationToken.None));
        Assert.False(Echoes(flow), "the revoked flow ends at once");
        for (var applies = 1; applies < 2 * NftablesRenderer.MaxGeneration; applies++)
        {
            Assert.True(await enforcer.ApplyAsync(applies % 2 == 0 ? revoked : revokedToo, CancellationToken.None));
            if ((applies + 1) % NftablesRenderer.MaxGeneration == 0)
            {
                Assert.False(Echoes(flow), $"the revoked flow must stay dead after {applies + 1} tables (the old generation's turn came round)");
            }
        }

        // Allowed again, it passes again: the flow was re-checked, not killed.
        Assert.True(await enforcer.ApplyAsync(allowed, CancellationToken.None));
        Assert.True(Echoes(flow), "allowed again, the same flow passes");
        output.WriteLine(host.Exec("nft list table inet " + enforcer.Table));
    }

    [SkippableFact]
    public async Task Kernel_revoked_forwarded_flow_ends()
    {
        RequireTools();
        using var peer = NetworkNamespace.Create("kfwpeer");
        using var router = NetworkNamespace.Create("kfwrtr");
        using var lan = NetworkNamespace.Create("kfwlan");
        var (mesh, _) = RoutedTopology(peer, router, lan);
        var nft = new NamespaceNftables(router.Name);
        using var conntrack = InNamespace.Create(router.Name, () => new NetlinkConntrack());
        var manager = new RouteManager(new RouteIface(mesh), new NamespaceRouteOs(router.Name), nft, NullLogger.Instance, conntrack: conntrack);
        using var echo = UdpEcho.Start(lan.Name, LanHostIp);
        using var flow = UdpFlow(peer.Name, ClientIp, LanHostIp);
        try
        {
            await manager.ApplyAsync(ServingLan(("echo", "udp", EchoPort)), [], CancellationToken.None);
            Assert.True(Echoes(flow), "the forwarded flow the route rule allows echoes");
            // (nft lists "ct mark & 0xff000000 == 0x81000000" as a prefix match.)
            Assert.Contains("ct state established ct mark 0x81000000/8 accept", router.Exec("nft list table inet " + ForwardingTable.TableName(mesh)), StringComparison.Ordinal);

            await manager.ApplyAsync(ServingLan(("other", "tcp", 9000)), [], CancellationToken.None);
            Assert.False(Echoes(flow), "revoking the route rule ends the forwarded flow, as in userspace");
            for (var applies = 1; applies < 2 * NftablesRenderer.MaxGeneration; applies++)
            {
                await manager.ApplyAsync(ServingLan(("other", "tcp", 9000 + (applies % 2))), [], CancellationToken.None);
            }

            Assert.False(Echoes(flow), "and it stays dead however many tables follow");
            await manager.ApplyAsync(ServingLan(("echo", "udp", EchoPort)), [], CancellationToken.None);
            Assert.True(Echoes(flow), "allowed again, the same flow passes");
            output.WriteLine(router.Exec("nft list ruleset"));
        }
        finally
        {
            await manager.CleanupAsync(CancellationToken.None);
        }

        Assert.DoesNotContain("modular_route", router.Exec("nft list tables"), StringComparison.Ordinal);
    }

    [SkippableFact]
    public async Task Kernel_forwarding_without_routes_is_filtered()
    {
        RequireTools();
        using var peer = NetworkNamespace.Create("kfwpeer");
        using var router = NetworkNamespace.Create("kfwrtr");
        using var lan = NetworkNamespace.Create("kfwlan");
        var (mesh, _) = RoutedTopology(peer, router, lan); // forwarding on, as another program (or an earlier run) left it
        var manager = new RouteManager(new RouteIface(mesh), new NamespaceRouteOs(router.Name), new NamespaceNftables(router.Name), NullLogger.Instance);
        using var echo = UdpEcho.Start(lan.Name, LanHostIp);
        using var flow = UdpFlow(peer.Name, ClientIp, LanHostIp);
        Assert.True(Echoes(flow), "without the agent the router forwards (the test's own check of the topology)");
        using var fresh = UdpFlow(peer.Name, ClientIp, LanHostIp, sourcePort: 40001);
        try
        {
            // A map in which this peer routes nothing: what the mesh sends through it must not be forwarded.
            await manager.ApplyAsync(RoutePlan.From(RouteMaps.Map(), RouteMaps.Self, Overlay), [], CancellationToken.None);
            Assert.False(Echoes(fresh), "a peer that routes nothing forwards nothing from the mesh");
            Assert.False(Echoes(flow), "not even a flow forwarded before the agent started");
            Assert.Equal("1", router.Exec("sysctl -n net.ipv4.ip_forward").Trim()); // not the agent's to turn off

            // The agent turns forwarding on to route, and back off when it routes nothing any more.
            router.Exec("sysctl -q -w net.ipv4.ip_forward=0");
            var restarted = new RouteManager(new RouteIface(mesh), new NamespaceRouteOs(router.Name), new NamespaceNftables(router.Name), NullLogger.Instance);
            await restarted.ApplyAsync(ServingLan(("echo", "udp", EchoPort)), [], CancellationToken.None);
            Assert.Equal("1", router.Exec("sysctl -n net.ipv4.ip_forward").Trim());
            Assert.True(Echoes(fresh), "routing the lan, the allowed flow is forwarded");
            await restarted.ApplyAsync(RoutePlan.From(RouteMaps.Map(), RouteMaps.Self, Overlay), [], CancellationToken.None);
            Assert.Equal("0", router.Exec("sysctl -n net.ipv4.ip_forward").Trim());
            output.WriteLine(router.Exec("nft list ruleset"));
            await restarted.CleanupAsync(CancellationToken.None);
        }
        finally
        {
            await manager.CleanupAsync(CancellationToken.None);
        }

        Assert.DoesNotContain("modular_route", router.Exec("nft list tables"), StringComparison.Ordinal);
    }

    /// <summary>A plan in which this peer serves 10.77.0.0/24 (no masquerade) and one route rule from the client lets <paramref name="rule"/> through.</summary>
    private static RoutePlan ServingLan((string Id, string Protocol, int Port) rule)
    {
        var map = RouteMaps.Map(RouteMaps.Route("lan", "10.77.0.0/24", RouteMaps.Self, masquerade: false));
        map.FirewallRules.Add(new Modular.Control.Management.FirewallRule
        {
            RuleId = rule.Id, PeerIp = $"{ClientIp}/32", Direction = "in", Action = "accept", Protocol = rule.Protocol, Destination = "10.77.0.0/24",
            PortRanges = { new PortRange { Start = (uint)rule.Port, End = (uint)rule.Port } },
        });
        return RoutePlan.From(map, RouteMaps.Self, Overlay);
    }

    /// <summary>peer (100.64.0.5) — router (100.64.0.1 on the "mesh" veth, 10.77.0.1) — lan host (10.77.0.10); the router forwards.</summary>
    private static (string Mesh, string Lan) RoutedTopology(NetworkNamespace peer, NetworkNamespace router, NetworkNamespace lan)
    {
        var mesh = Veth(peer, ClientIp, router, HostIp);
        var lanSide = Veth(lan, LanHostIp, router, "10.77.0.1");
        peer.Exec($"ip route add 10.77.0.0/24 via {HostIp}");
        lan.Exec("ip route add 100.64.0.0/24 via 10.77.0.1");
        router.Exec("sysctl -q -w net.ipv4.ip_forward=1");
        return (mesh, lanSide);
    }

    private static int _links;

    /// <summary>A veth pair, /24 addresses; returns the name of <paramref name="b"/>'s end.</summary>
    private static string Veth(NetworkNamespace a, string aIp, NetworkNamespace b, string bIp)
    {
        var n = Interlocked.Increment(ref _links);
        var aName = $"kfa{Environment.ProcessId % 10000}x{n}";
        var bName = $"kfb{Environment.ProcessId % 10000}x{n}";
        Shell.Run("ip", $"link add {aName} netns {a.Name} type veth peer name {bName} netns {b.Name}");
        a.Exec($"ip addr add {aIp}/24 dev {aName}");
        a.Exec($"ip link set {aName} up");
        b.Exec($"ip addr add {bIp}/24 dev {bName}");
        b.Exec($"ip link set {bName} up");
        return bName;
    }

    /// <summary>A UDP socket in <paramref name="namespaceName"/> from a fixed port to the echo port: every probe is the same conntrack flow.</summary>
    private static Socket UdpFlow(string namespaceName, string from, string to, int sourcePort = 40000)
    {
        var socket = InNamespace.Create(namespaceName, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
        socket.Bind(new IPEndPoint(IPAddress.Parse(from), sourcePort));
        socket.Connect(new IPEndPoint(IPAddress.Parse(to), EchoPort));
        return socket;
    }

    /// <summary>Sends one datagram on the flow; true when the echo comes back within 2 s.</summary>
    private static bool Echoes(Socket flow)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        try
        {
            flow.Send("e"u8);
            var buffer = new byte[16];
            return flow.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult() > 0;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return false;
        }
    }

    private static void RequireTools()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("nft");
        Prerequisites.RequireTool("ip");
        Prerequisites.RequireTool("sysctl");
    }

    /// <summary>Echoes every datagram to the echo port back to its sender, until disposed.</summary>
    private sealed class UdpEcho : IDisposable
    {
        private readonly Socket _socket;
        private readonly CancellationTokenSource _stop = new();

        private UdpEcho(Socket socket)
        {
            _socket = socket;
            _ = Task.Run(async () =>
            {
                var buffer = new byte[64];
                EndPoint any = new IPEndPoint(IPAddress.Any, 0);
                try
                {
                    while (true)
                    {
                        var received = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, any, _stop.Token);
                        await _socket.SendToAsync(buffer.AsMemory(0, received.ReceivedBytes), SocketFlags.None, received.RemoteEndPoint, _stop.Token);
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    // Disposed: the test is over.
                }
            });
        }

        public static UdpEcho Start(string namespaceName, string address)
        {
            var socket = InNamespace.Create(namespaceName, () => new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp));
            socket.Bind(new IPEndPoint(IPAddress.Parse(address), EchoPort));
            return new UdpEcho(socket);
        }

        public void Dispose()
        {
            _stop.Cancel();
            _socket.Dispose();
            _stop.Dispose();
        }
    }

    /// <summary>sysctls of one namespace; routes and rules are not used by these tests (a routing peer adds none).</summary>
    private sealed class NamespaceRouteOs(string namespaceName) : IRouteOs
    {
        public async Task<string> WriteSysctlAsync(string key, string value, CancellationToken cancellationToken)
        {
            var previous = (await Os.HostCommand.RunCheckedAsync("ip", ["netns", "exec", namespaceName, "sysctl", "-n", key], cancellationToken: cancellationToken)).Trim();
            await Os.HostCommand.RunCheckedAsync("ip", ["netns", "exec", namespaceName, "sysctl", "-q", "-w", $"{key}={value}"], cancellationToken: cancellationToken);
            return previous;
        }

        public Task<bool> AddRouteAsync(OsRoute route, CancellationToken cancellationToken) => throw new NotSupportedException(route.ToString());

        public Task DeleteRouteAsync(OsRoute route, CancellationToken cancellationToken) => throw new NotSupportedException(route.ToString());

        public Task AddRuleAsync(OsRule rule, CancellationToken cancellationToken) => throw new NotSupportedException(rule.ToString());

        public Task<bool> DeleteRuleAsync(OsRule rule, CancellationToken cancellationToken) => Task.FromResult(false);

        public Task SetFwmarkAsync(IWgIface iface, uint mark, CancellationToken cancellationToken) => Task.CompletedTask;

        public Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<IPAddress>>([]);
    }
}
