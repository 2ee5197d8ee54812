using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Issue 13 item 3 with real agents (userspace mode): a peer every policy isolates can still reach the mesh resolver,
/// the one port every peer may reach. Flooding it with UDP queries and SYNs from thousands of source ports must not
/// take more than its per-source share of the flooded agent's connection table, and a third peer must still open
/// new connections to and from the flooded agent. The flood is bounded: <see cref="FloodPorts"/> source ports, one
/// query and one SYN each, paced, a few seconds at most.
/// </summary>
public sealed class DnsFloodTests(ITestOutputHelper output)
{
    /// <summary>Source ports the flood uses (one UDP query and one SYN from each): twice over the per-source bound of 4,096.</summary>
    private const int FloodPorts = 5_000;

    /// <summary>The per-source bound of the userspace connection table (FirewallOptions.MaxFlowsPerSource's default).</summary>
    private const int PerSourceBound = 4_096;

    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan PolicyTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan StatusTimeout = TimeSpan.FromSeconds(30);

    [SkippableFact]
    public void One_peer_flooding_the_dns_port_cannot_starve_other_peers_flows()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "f");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["ffa", "ffb", "ffc"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key);
            rig[name].Start();
        }

        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        var ipA = IPAddress.Parse(rig["ffa"].OverlayIp!);
        var ipB = IPAddress.Parse(rig["ffb"].OverlayIp!);
        var ipC = IPAddress.Parse(rig["ffc"].OverlayIp!);

        // ffb and ffc may open TCP 8080 to each other; ffa is in no group: every policy isolates it.
        rig.ServerCli("groups create pair");
        rig.ServerCli($"groups add-peer pair {ipB}");
        rig.ServerCli($"groups add-peer pair {ipC}");
        rig.ServerCli("policies create pair-web --source pair --destination pair --protocol tcp --ports 8080 --bidirectional");
        rig.ServerCli("policies delete Default");

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        using var onB = Probes.Listen(rig["ffb"].Namespace.Name, ipB, 8080, cancel.Token);
        using var onC = Probes.Listen(rig["ffc"].Namespace.Name, ipC, 8080, cancel.Token);
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\n--- ffb:\n" + rig["ffb"].StatusText();
        rig.WaitUntil(() => Probes.TryTcp(rig["ffc"].Namespace.Name, ipB, 8080, out _) && Probes.TryTcp(rig["ffb"].Namespace.Name, ipC, 8080, out _),
            ConnectTimeout, "ffc and ffb open TCP 8080 to each other", Diagnostics);
        rig.WaitUntil(() => rig["ffa"].IsConnected("ffb"), ConnectTimeout, "ffa Connected to ffb (its tunnel is up; only the policies isolate it)", Diagnostics);
        // The pair could already talk under Default: wait until ffb's map without Default is in force, so that ffa is
        // really isolated (the flood would prove nothing otherwise).
        rig.WaitUntil(() => !Probes.TryTcp(rig["ffa"].Namespace.Name, ipB, 8080, out _), PolicyTimeout, "ffa isolated by the policies (Default deleted)", Diagnostics);

        var sent = Flood(rig["ffa"].Namespace.Name, ipB);
        rig.Log($"flood: {sent} packets sent from {FloodPorts} source ports of ffa to {ipB}:53 (UDP queries and SYNs)");
        Assert.True(sent >= FloodPorts, $"only {sent} flood packets could be sent");

        // ffb refused what went past ffa's share of its table (status refreshes every 3 s)...
        rig.WaitUntil(() => rig["ffb"].FirewallCounter("table_full_drops") > 0, StatusTimeout, "ffb's status counts flood flows refused past ffa's per-source bound", Diagnostics);
        var firewall = rig["ffb"].Firewall()!.Value;
        rig.Log(firewall.ToString());
        var active = rig["ffb"].FirewallCounter("active_flows");
        Assert.True(active <= PerSourceBound + 64, $"ffb tracks {active} flows after the flood: more than ffa's share ({PerSourceBound}) and a few of the others'");

        // ...and the third peer still opens new connections both ways, while ffa's flows are still tracked.
        Assert.True(Probes.TryTcp(rig["ffc"].Namespace.Name, ipB, 8080, out var reply), "ffc could not open a new connection to the flooded ffb");
        Assert.Equal("port 8080", reply);
        Assert.True(Probes.TryTcp(rig["ffb"].Namespace.Name, ipC, 8080, out reply), "the flooded ffb could not open a new connection to ffc");
        Assert.Equal("port 8080", reply);
        cancel.Cancel();
    }

    /// <summary>
    /// From <paramref name="namespaceName"/>: a DNS query (UDP) and a SYN (TCP) to <paramref name="target"/> port 53 from each of
    /// <see cref="FloodPorts"/> source ports, through raw sockets (no socket per port), paced in batches so the
    /// tunnel carries them rather than the sender's queue dropping them. Returns how many were sent.
    /// </summary>
    private static int Flood(string namespaceName, IPAddress target)
    {
        using var udp = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Udp);
        using var tcp = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.Tcp);
        var destination = new IPEndPoint(target, 0);
        byte[] query = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, (byte)'f', (byte)'l', (byte)'o', (byte)'o', (byte)'d', 7, (byte)'m', (byte)'o', (byte)'d', (byte)'u', (byte)'l', (byte)'a', (byte)'r', 8, (byte)'i', (byte)'n', (byte)'t', (byte)'e', (byte)'r', (byte)'n', (byte)'a', (byte)'l', 0, 0, 1, 0, 1];
        var datagram = new byte[8 + query.Length];
        query.CopyTo(datagram, 8);
        var syn = new byte[20];
        var sent = 0;
        for (var i = 0; i < FloodPorts; i++)
        {
            var port = (ushort)(20_000 + i);

            // UDP header (the kernel adds the IP header); checksum 0: none, valid for IPv4.
            BinaryPrimitives.WriteUInt16BigEndian(datagram, port);
            BinaryPrimitives.WriteUInt16BigEndian(datagram.AsSpan(2), 53);
            BinaryPrimitives.WriteUInt16BigEndian(datagram.AsSpan(4), (ushort)datagram.Length);

            // TCP SYN (the receiving stack may refuse its zero checksum; the firewall tracks it before that).
            BinaryPrimitives.WriteUInt16BigEndian(syn, port);
            BinaryPrimitives.WriteUInt16BigEndian(syn.AsSpan(2), 53);
            BinaryPrimitives.WriteUInt32BigEndian(syn.AsSpan(4), (uint)i);
            syn[12] = 5 << 4;
            syn[13] = 0x02;
            BinaryPrimitives.WriteUInt16BigEndian(syn.AsSpan(14), 1024);

            sent += TrySend(udp, datagram, destination) + TrySend(tcp, syn, destination);
            if (i % 100 == 99)
            {
                // Pacing, not waiting for an outcome: the sender's queue (txqueuelen) must not overflow.
                Thread.Sleep(5);
            }
        }

        return sent;
    }

    private static int TrySend(Socket socket, byte[] packet, IPEndPoint destination)
    {
        try
        {
            return socket.SendTo(packet, destination) > 0 ? 1 : 0;
        }
        catch (SocketException)
        {
            return 0; // A full queue (ENOBUFS): counted as not sent.
        }
    }
}
