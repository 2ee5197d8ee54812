using System.Net;
using System.Net.Sockets;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Access policies enforced by nftables in kernel mode (wireguard-go here, the kernel routing its interface):
/// a server and two kernel-mode agents; with only "A -> B tcp/80" allowed, TCP 80 connects and gets its reply
/// while TCP 22, UDP and ping are dropped and counted in B's status; B's table exists while it runs and is gone
/// once it stopped.
/// </summary>
public sealed class KernelPolicyTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan PolicyTimeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Nftables_enforces_the_policy_counts_drops_and_leaves_no_table_after_stop()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wireguard-go");
        using var rig = new MeshRig(output, "kp");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["ka", "kb"];
        foreach (var name in names)
        {
            var agent = rig.AddAgent(name);
            agent.WriteConfig(key, "[proxy]\nkind = \"udp\"");
            agent.UseKernelMode();
            agent.Start();
        }

        rig.WaitUntil(() => rig["ka"].IsConnected("kb") && rig["kb"].IsConnected("ka"), ConnectTimeout, "ka and kb Connected",
            () => MeshTests.Diagnostics(rig, names));
        var ipA = rig["ka"].OverlayIp ?? throw new InvalidOperationException("ka has no overlay IP");
        var ipB = rig["kb"].OverlayIp ?? throw new InvalidOperationException("kb has no overlay IP");
        rig.WaitUntil(() => rig["ka"].Ping(ipB), MeshTests.FirstPingTimeout, "ka -> kb under the Default policy",
            () => MeshTests.Diagnostics(rig, names));

        var table = $"modular_{rig["kb"].Interface}";
        Assert.Contains($"table inet {table}", rig["kb"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
        Assert.Equal("nftables", rig["kb"].Firewall()!.Value.GetProperty("mode").GetString());

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var addressB = IPAddress.Parse(ipB);
        using var web = Probes.Listen(rig["kb"].Namespace.Name, addressB, 80, cancel.Token);
        using var ssh = Probes.Listen(rig["kb"].Namespace.Name, addressB, 22, cancel.Token);
        using var udp = NamespaceSocket.Create(rig["kb"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(addressB, 5353));
        Assert.True(Probes.TryTcp(rig["ka"].Namespace.Name, addressB, 22, out var reply), "TCP 22 under the Default policy");
        Assert.Equal("port 22", reply);

        // A connection the Default policy let in, held open across the policy change.
        using var echo = EchoOnce(rig["kb"].Namespace.Name, addressB, 2222, cancel.Token);
        using var held = NamespaceSocket.Create(rig["ka"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using (var connect = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            held.ConnectAsync(new IPEndPoint(addressB, 2222), connect.Token).AsTask().GetAwaiter().GetResult();
        }

        Assert.True(Echoes(held), "the held connection echoes under the Default policy");

        rig.ServerCli("groups create A");
        rig.ServerCli("groups create B");
        rig.ServerCli($"groups add-peer A {ipA}");
        rig.ServerCli($"groups add-peer B {ipB}");
        rig.ServerCli("policies create web --source A --destination B --protocol tcp --ports 80");
        rig.ServerCli("policies delete Default");

        rig.WaitUntil(() => !rig["ka"].Ping(ipB, 2), PolicyTimeout, "ping ka -> kb dropped after the Default policy is gone",
            () => MeshTests.Diagnostics(rig, names) + "\n--- kb nft:\n" + rig["kb"].Namespace.TryExec($"nft list table inet {table}").Output);
        var dropsBefore = rig["kb"].FirewallCounter("default_drops");

        Assert.True(Probes.TryTcp(rig["ka"].Namespace.Name, addressB, 80, out reply), "TCP 80 A -> B is allowed");
        Assert.Equal("port 80", reply);
        Assert.False(Probes.TryTcp(rig["ka"].Namespace.Name, addressB, 22, out _), "TCP 22 A -> B must be dropped");
        Assert.False(Probes.UdpArrives(rig["ka"].Namespace.Name, udp, addressB), "UDP A -> B must be dropped");
        Assert.False(rig["ka"].Ping(ipB, 2), "ping A -> B must be dropped");
        Assert.False(Probes.TryTcp(rig["kb"].Namespace.Name, IPAddress.Parse(ipA), 22, out _), "TCP B -> A is not allowed (the policy is one-way)");
        Assert.False(Echoes(held), "a connection the deleted Default policy let in must end with it, as in userspace");

        rig.WaitUntil(() => rig["kb"].FirewallCounter("default_drops") > dropsBefore, PolicyTimeout, "kb's status counts the dropped probes",
            () => MeshTests.Diagnostics(rig, ["kb"]));
        var firewall = rig["kb"].Firewall()!.Value;
        rig.Log(firewall.ToString());
        rig.Log(rig["kb"].Namespace.Exec($"nft list table inet {table}"));
        Assert.Equal("nftables", firewall.GetProperty("mode").GetString());
        Assert.True(firewall.GetProperty("rules").GetInt32() >= 1, "kb enforces the web rule");
        Assert.Equal(System.Text.Json.JsonValueKind.Null, firewall.GetProperty("error").ValueKind);
        Assert.Contains("Firewall:", rig["kb"].StatusText(), StringComparison.Ordinal);
        cancel.Cancel();

        rig["kb"].Stop();
        Assert.DoesNotContain(table, rig["kb"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
    }

    /// <summary>Accepts one connection in a namespace and echoes what it reads until the test ends.</summary>
    private static Socket EchoOnce(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
    {
        var listener = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        listener.Bind(new IPEndPoint(address, port));
        listener.Listen(1);
        _ = Task.Run(async () =>
        {
            try
            {
                using var client = await listener.AcceptAsync(cancellationToken);
                var buffer = new byte[64];
                int read;
                while ((read = await client.ReceiveAsync(buffer, SocketFlags.None, cancellationToken)) > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, read), SocketFlags.None, cancellationToken);
                }
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // The test is over: the listener was closed.
            }
        }, CancellationToken.None);
        return listener;
    }

    /// <summary>Sends one byte on <paramref name="connection"/>; true when it comes back within 3 s.</summary>
    private static bool Echoes(Socket connection)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(3));
        try
        {
            connection.Send("e"u8);
            var buffer = new byte[1];
            return connection.ReceiveAsync(buffer, SocketFlags.None, timeout.Token).AsTask().GetAwaiter().GetResult() == 1;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            return false;
        }
    }
}
