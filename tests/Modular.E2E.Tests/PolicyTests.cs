using System.Net;
using System.Net.Sockets;
using System.Text;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Access policies enforced by the agents' userspace firewall: a server and two userspace agents in
/// groups A and B; with only "A -> B tcp/80" allowed, TCP 80 works while TCP 22, UDP and ping are
/// dropped; an allow-all policy brings ping back.
/// </summary>
public sealed class PolicyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan PolicyTimeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Only_the_allowed_tcp_port_passes_until_an_allow_all_policy_returns()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "p");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["pa", "pb"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[proxy]\nkind = \"udp\"");
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["pa"].IsConnected("pb") && rig["pb"].IsConnected("pa"), ConnectTimeout, "pa and pb Connected",
            () => MeshTests.Diagnostics(rig, names));
        var ipA = rig["pa"].OverlayIp ?? throw new InvalidOperationException("pa has no overlay IP");
        var ipB = rig["pb"].OverlayIp ?? throw new InvalidOperationException("pb has no overlay IP");
        rig.WaitUntil(() => rig["pa"].Ping(ipB), MeshTests.FirstPingTimeout, "pa -> pb under the Default policy",
            () => MeshTests.Diagnostics(rig, names));

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var addressB = IPAddress.Parse(ipB);
        using var web = Probes.Listen(rig["pb"].Namespace.Name, addressB, 80, cancel.Token);
        using var ssh = Probes.Listen(rig["pb"].Namespace.Name, addressB, 22, cancel.Token);
        using var udp = NamespaceSocket.Create(rig["pb"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(addressB, 5353));

        // Sanity: everything is reachable while Default (All <-> All) is in force.
        Assert.True(Probes.TryTcp(rig["pa"].Namespace.Name, addressB, 22, out var reply), "TCP 22 under the Default policy");
        Assert.Equal("port 22", reply);

        rig.ServerCli("groups create A");
        rig.ServerCli("groups create B");
        rig.ServerCli($"groups add-peer A {ipA}");
        rig.ServerCli($"groups add-peer B {ipB}");
        rig.ServerCli("policies create web --source A --destination B --protocol tcp --ports 80");
        rig.ServerCli("policies delete Default");
        rig.Log(rig.ServerCli("policies list"));

        rig.WaitUntil(() => !rig["pa"].Ping(ipB, 2), PolicyTimeout, "ping pa -> pb dropped after the Default policy is gone",
            () => MeshTests.Diagnostics(rig, names));

        var dropsBefore = rig["pb"].FirewallCounter("default_drops");
        Assert.True(Probes.TryTcp(rig["pa"].Namespace.Name, addressB, 80, out reply), "TCP 80 A -> B is allowed");
        Assert.Equal("port 80", reply);
        Assert.False(Probes.TryTcp(rig["pa"].Namespace.Name, addressB, 22, out _), "TCP 22 A -> B must be dropped");
        Assert.False(Probes.UdpArrives(rig["pa"].Namespace.Name, udp, addressB), "UDP A -> B must be dropped");
        Assert.False(rig["pa"].Ping(ipB, 2), "ping A -> B must be dropped");
        Assert.False(Probes.TryTcp(rig["pb"].Namespace.Name, IPAddress.Parse(ipA), 22, out _), "TCP B -> A is not allowed (the policy is one-way)");

        // The drops show in status (a snapshot the firewall refreshes every few seconds).
        rig.WaitUntil(() => rig["pb"].FirewallCounter("default_drops") > dropsBefore, PolicyTimeout, "pb's status counts the dropped probes",
            () => MeshTests.Diagnostics(rig, names));
        var firewall = rig["pb"].Firewall()!.Value;
        rig.Log(firewall.ToString());
        Assert.Equal("userspace", firewall.GetProperty("mode").GetString());
        Assert.True(firewall.GetProperty("rules").GetInt32() >= 1, "pb enforces the web rule");
        Assert.Contains("Firewall:", rig["pb"].StatusText(), StringComparison.Ordinal);

        rig.ServerCli("policies create open --source All --destination All --bidirectional");
        rig.WaitUntil(() => rig["pa"].Ping(ipB, 2), PolicyTimeout, "ping pa -> pb back with an allow-all policy",
            () => MeshTests.Diagnostics(rig, names));
        Assert.True(Probes.UdpArrives(rig["pa"].Namespace.Name, udp, addressB), "UDP A -> B passes again");
        Assert.True(Probes.TryTcp(rig["pa"].Namespace.Name, addressB, 22, out reply), "TCP 22 passes again");
        Assert.Equal("port 22", reply);
        cancel.Cancel();
    }
}
