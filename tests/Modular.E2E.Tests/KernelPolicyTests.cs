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
    private static readonly TimeSpan PolicyTimeout = TimeSpan.FromSeconds(60);

    [SkippableFact]
    public void Nftables_enforces_the_policy_counts_drops_and_leaves_no_table_after_stop()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wireguard-go");
        using var rig = new MeshRig(output, "kp");
        rig.StartServer();
        using var scenario = new WebOnlyPolicy(rig, "ka", "kb", kernelMode: true);

        var table = $"modular_{rig["kb"].Interface}";
        Assert.Contains($"table inet {table}", rig["kb"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
        Assert.Equal("nftables", rig["kb"].Firewall()!.Value.GetProperty("mode").GetString());

        // A connection the Default policy let in, held open across the policy change.
        using var echo = EchoOnce(rig["kb"].Namespace.Name, scenario.AddressB, 2222, scenario.Ending);
        using var held = NamespaceSocket.Create(rig["ka"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using (var connect = new CancellationTokenSource(TimeSpan.FromSeconds(5)))
        {
            held.ConnectAsync(new IPEndPoint(scenario.AddressB, 2222), connect.Token).AsTask().GetAwaiter().GetResult();
        }

        Assert.True(Echoes(held), "the held connection echoes under the Default policy");

        scenario.Apply(() => "\n--- kb nft:\n" + rig["kb"].Namespace.TryExec($"nft list table inet {table}").Output);
        var dropsBefore = rig["kb"].FirewallCounter("default_drops");
        scenario.AssertOnlyTcp80FromAToB();
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

        rig["kb"].Stop();
        Assert.DoesNotContain(table, rig["kb"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
    }

    /// <summary>Accepts one connection in a namespace and echoes what it reads until the test ends.</summary>
    internal static Socket EchoOnce(string namespaceName, IPAddress address, int port, CancellationToken cancellationToken)
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
    internal static bool Echoes(Socket connection)
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
