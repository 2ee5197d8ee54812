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
    private static readonly TimeSpan DropProbe = TimeSpan.FromSeconds(3);

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
        using var web = Listen(rig["pb"].Namespace.Name, addressB, 80, cancel.Token);
        using var ssh = Listen(rig["pb"].Namespace.Name, addressB, 22, cancel.Token);
        using var udp = NamespaceSocket.Create(rig["pb"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(addressB, 5353));

        // Sanity: everything is reachable while Default (All <-> All) is in force.
        Assert.True(TryTcp(rig["pa"].Namespace.Name, addressB, 22, out var reply), "TCP 22 under the Default policy");
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
        Assert.True(TryTcp(rig["pa"].Namespace.Name, addressB, 80, out reply), "TCP 80 A -> B is allowed");
        Assert.Equal("port 80", reply);
        Assert.False(TryTcp(rig["pa"].Namespace.Name, addressB, 22, out _), "TCP 22 A -> B must be dropped");
        Assert.False(UdpArrives(rig["pa"].Namespace.Name, udp, addressB), "UDP A -> B must be dropped");
        Assert.False(rig["pa"].Ping(ipB, 2), "ping A -> B must be dropped");
        Assert.False(TryTcp(rig["pb"].Namespace.Name, IPAddress.Parse(ipA), 22, out _), "TCP B -> A is not allowed (the policy is one-way)");

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
        Assert.True(UdpArrives(rig["pa"].Namespace.Name, udp, addressB), "UDP A -> B passes again");
        Assert.True(TryTcp(rig["pa"].Namespace.Name, addressB, 22, out reply), "TCP 22 passes again");
        Assert.Equal("port 22", reply);
        cancel.Cancel();
    }

    /// <summary>A TCP listener in a namespace answering each connection with "port N".</summary>
    internal static Socket Listen(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
    {
        var listener = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(address, port));
        listener.Listen(8);
        _ = Task.Run(async () =>
        {
            var answer = Encoding.ASCII.GetBytes($"port {port}");
            try
            {
                while (!cancellationToken.IsCancellationRequested)
                {
                    using var client = await listener.AcceptAsync(cancellationToken);
                    await client.SendAsync(answer, SocketFlags.None, cancellationToken);
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

    /// <summary>Connects from a namespace (bounded by <see cref="DropProbe"/>) and reads the listener's answer.</summary>
    internal static bool TryTcp(string namespaceName, IPAddress address, int port, out string reply)
    {
        reply = "";
        using var socket = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(DropProbe);
        try
        {
            socket.ConnectAsync(new IPEndPoint(address, port), timeout.Token).AsTask().GetAwaiter().GetResult();
            var buffer = new byte[64];
            var total = 0;
            while (total < buffer.Length)
            {
                var read = socket.ReceiveAsync(buffer.AsMemory(total), SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
                if (read == 0)
                {
                    break;
                }

                total += read;
            }

            reply = Encoding.ASCII.GetString(buffer, 0, total);
            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return false;
        }
    }

    /// <summary>Sends a few datagrams from a namespace; true when one reaches <paramref name="receiver"/> within <see cref="DropProbe"/>.</summary>
    internal static bool UdpArrives(string namespaceName, Socket receiver, IPAddress address)
    {
        using var sender = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        var payload = Encoding.ASCII.GetBytes("udp probe");
        for (var i = 0; i < 3; i++)
        {
            sender.SendTo(payload, new IPEndPoint(address, 5353));
        }

        var buffer = new byte[64];
        using var timeout = new CancellationTokenSource(DropProbe);
        try
        {
            var read = receiver.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult();
            // Drain the rest of this probe so the next one starts from an empty queue.
            while (receiver.Available > 0)
            {
                receiver.Receive(buffer);
            }

            return read > 0;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
