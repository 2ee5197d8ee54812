using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// The mesh resolver with real processes: two userspace agents; in A's namespace `dig` and `getent` (through
/// /etc/netns/&lt;ns&gt;/resolv.conf) find B by its mesh name; a nameserver group sends corp.test to a test
/// nameserver in the server's namespace; a name with no group is REFUSED; and with every policy removed
/// B still reaches A's resolver over the tunnel, over UDP and TCP, while ping is dropped.
/// </summary>
public sealed class DnsTests(ITestOutputHelper output)
{
    private const string Zone = "modular.internal";
    private const string CorpAnswer = "192.0.2.77";
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan ChangeTimeout = TimeSpan.FromSeconds(60);
    private static readonly TimeSpan TunnelTimeout = TimeSpan.FromSeconds(20);

    [SkippableFact]
    public void Peers_resolve_each_other_other_names_are_forwarded_and_the_resolver_is_reachable_whatever_the_policies()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("dig");
        Prerequisites.RequireTool("getent");
        using var rig = new MeshRig(output, "d");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["dna", "dnb"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[proxy]\nkind = \"udp\"");
            rig[name].Start();
        }

        rig.WaitUntil(() => rig["dna"].IsConnected("dnb") && rig["dnb"].IsConnected("dna"), ConnectTimeout, "dna and dnb Connected",
            () => MeshTests.Diagnostics(rig, names));
        var ipA = rig["dna"].OverlayIp ?? throw new InvalidOperationException("dna has no overlay IP");
        var ipB = rig["dnb"].OverlayIp ?? throw new InvalidOperationException("dnb has no overlay IP");
        var a = rig["dna"].Namespace;
        var b = rig["dnb"].Namespace;

        // A asks its own resolver (local delivery) for B, in any letter case, over UDP and TCP.
        rig.WaitUntil(() => Dig(a, ipA, $"dnb.{Zone}") == ipB, ChangeTimeout, "dig @A dnb.<zone> answers B's overlay IP",
            () => MeshTests.Diagnostics(rig, names));
        Assert.Equal(ipB, Dig(a, ipA, $"DNB.Modular.Internal"));
        Assert.Equal(ipA, Dig(a, ipA, $"dna.{Zone}"));
        Assert.Equal(ipB, Dig(a, ipA, $"dnb.{Zone}", "+tcp"));
        var reverse = a.TryExec($"dig +short +time=2 +tries=1 @{ipA} -x {ipB}", TimeSpan.FromSeconds(15)).Output.Trim();
        Assert.Equal($"dnb.{Zone}.", reverse);
        var missing = a.TryExec($"dig +time=2 +tries=1 @{ipA} nobody.{Zone}", TimeSpan.FromSeconds(15)).Output;
        Assert.Contains("status: NXDOMAIN", missing, StringComparison.Ordinal);
        Assert.Contains("flags: qr aa", missing, StringComparison.Ordinal);

        // status --json: where the resolver listens, and counters that have seen the digs above (refreshed every second).
        var dns = rig["dna"].Status()!.Value.GetProperty("dns");
        rig.Log(dns.ToString());
        Assert.True(dns.GetProperty("enabled").GetBoolean());
        Assert.Equal($"{ipA}:53", dns.GetProperty("listening").GetString());
        Assert.Equal(Zone, dns.GetProperty("zone").GetString());
        Assert.True(dns.GetProperty("records").GetInt32() >= 2, dns.ToString());
        rig.WaitUntil(() => DnsCounter(rig["dna"], "nxdomain") >= 1 && DnsCounter(rig["dna"], "queries") >= 6, ChangeTimeout, "dna's dns counters show the digs",
            () => rig["dna"].StatusText());
        var queriesBefore = DnsCounter(rig["dna"], "queries");
        Assert.True(DnsCounter(rig["dna"], "answered_locally") >= 6);

        // getent through the namespace's resolv.conf (ip netns exec bind-mounts /etc/netns/<ns>/resolv.conf).
        var netnsDir = $"/etc/netns/{a.Name}";
        var createdNetnsRoot = !Directory.Exists("/etc/netns");
        Directory.CreateDirectory(netnsDir);
        try
        {
            File.WriteAllText(Path.Combine(netnsDir, "resolv.conf"), $"nameserver {ipA}\noptions timeout:2 attempts:1\n");
            var hosts = a.TryExec($"getent hosts dnb.{Zone}", TimeSpan.FromSeconds(15));
            Assert.True(hosts.ExitCode == 0, $"getent failed: {hosts.Output} {hosts.Error}");
            Assert.StartsWith(ipB + " ", hosts.Output.Trim(), StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(netnsDir, recursive: true);
            if (createdNetnsRoot)
            {
                try
                {
                    Directory.Delete("/etc/netns"); // only when empty: another test may be using it
                }
                catch (IOException)
                {
                }
            }
        }

        // No nameserver group yet: a name outside the zone is refused (documented in core/Modular.Core/Dns/README.md).
        var refused = a.TryExec($"dig +time=2 +tries=1 @{ipA} host.corp.test", TimeSpan.FromSeconds(15)).Output;
        Assert.Contains("status: REFUSED", refused, StringComparison.Ordinal);

        // A test nameserver in the server's namespace (reachable from A's over the underlay) answers corp.test.
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        using var upstream = NamespaceSocket.Create(rig.Server.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        upstream.Bind(new IPEndPoint(IPAddress.Parse(MeshRig.ServerIp), 53));
        var served = 0;
        var nameserver = Task.Run(() => ServeCorpAsync(upstream, () => Interlocked.Increment(ref served), cancel.Token), CancellationToken.None);
        rig.ServerCli($"dns nameservers add --name corp --nameserver {MeshRig.ServerIp} --domain corp.test");
        rig.Log(rig.ServerCli("dns nameservers list"));
        rig.WaitUntil(() => Dig(a, ipA, "host.corp.test") == CorpAnswer, ChangeTimeout, "dig @A host.corp.test answered by the corp nameserver",
            () => MeshTests.Diagnostics(rig, names));
        Assert.True(Volatile.Read(ref served) > 0);
        Assert.Equal(CorpAnswer, Dig(a, ipA, "deep.host.Corp.Test", "+tcp"));
        Assert.Contains("status: REFUSED", a.TryExec($"dig +time=2 +tries=1 @{ipA} www.example.org", TimeSpan.FromSeconds(15)).Output, StringComparison.Ordinal);

        // Every policy gone: B can no longer ping A, but A's resolver still answers B over the tunnel.
        rig.ServerCli("policies delete Default");
        rig.WaitUntil(() => !rig["dnb"].Ping(ipA, 2), ChangeTimeout, "ping dnb -> dna dropped without policies",
            () => MeshTests.Diagnostics(rig, names));
        // Bounded retries (a datagram can be lost on a loaded rig); each dig is one try of 2 s.
        rig.WaitUntil(() => Dig(b, ipA, $"dna.{Zone}") == ipA, TunnelTimeout, "dig from B over the tunnel to A's resolver (UDP)",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => Dig(b, ipA, $"dnb.{Zone}", "+tcp") == ipB, TunnelTimeout, "dig +tcp from B over the tunnel to A's resolver",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => Dig(b, ipA, "other.corp.test") == CorpAnswer, TunnelTimeout, "a forwarded name asked from B through A",
            () => MeshTests.Diagnostics(rig, names));
        Assert.False(rig["dnb"].Ping(ipA, 2), "ping B -> A stays dropped: only the resolver is open");

        // The queries since then (local, refused, forwarded, from A and over the tunnel from B) all counted.
        rig.WaitUntil(() => DnsCounter(rig["dna"], "queries") >= queriesBefore + 7 && DnsCounter(rig["dna"], "forwarded") >= 3, ChangeTimeout, "dna's query counter rising after the digs",
            () => rig["dna"].StatusText());
        Assert.True(DnsCounter(rig["dna"], "refused") >= 2);
        Assert.Equal(1, rig["dna"].Status()!.Value.GetProperty("dns").GetProperty("nameserver_groups").GetInt32());
        Assert.Contains($"DNS:                 listening on {ipA}:53, zone {Zone}", rig["dna"].StatusText(), StringComparison.Ordinal);

        cancel.Cancel();
        upstream.Dispose();
        nameserver.Wait(TimeSpan.FromSeconds(10));
    }

    [SkippableFact]
    public void In_kernel_mode_the_resolver_listens_on_the_wireguard_go_interface_and_stays_off_where_dns_is_disabled_locally()
    {
        MeshRig.RequirePrerequisites();
        Prerequisites.RequireTool("wireguard-go");
        Prerequisites.RequireTool("dig");
        using var rig = new MeshRig(output, "dk");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["dk1", "dk2"];
        foreach (var name in names)
        {
            var agent = rig.AddAgent(name);
            // dk2 turns its resolver off: it must not listen, and dk1's must still answer for it.
            agent.WriteConfig(key, "[proxy]\nkind = \"udp\"" + (name == "dk2" ? "\n[dns]\nenabled = false" : ""));
            File.WriteAllText(agent.ConfigPath, File.ReadAllText(agent.ConfigPath).Replace("mode = \"userspace\"", "mode = \"kernel\"", StringComparison.Ordinal));
            agent.Start();
        }

        rig.WaitUntil(() => rig["dk1"].IsConnected("dk2") && rig["dk2"].IsConnected("dk1"), ConnectTimeout, "dk1 and dk2 Connected",
            () => MeshTests.Diagnostics(rig, names));
        var ip1 = rig["dk1"].OverlayIp!;
        var ip2 = rig["dk2"].OverlayIp!;
        rig.WaitUntil(() => Dig(rig["dk1"].Namespace, ip1, $"dk2.{Zone}") == ip2, ChangeTimeout, "dig @dk1 dk2.<zone> in kernel mode",
            () => MeshTests.Diagnostics(rig, names));
        rig.WaitUntil(() => Dig(rig["dk2"].Namespace, ip1, $"dk1.{Zone}") == ip1, ChangeTimeout, "dig from dk2 over wireguard-go to dk1's resolver",
            () => MeshTests.Diagnostics(rig, names));
        Assert.DoesNotContain($"{ip2}:53", rig["dk2"].Namespace.Exec("ss -lnu"), StringComparison.Ordinal);
        Assert.Contains($"{ip1}:53", rig["dk1"].Namespace.Exec("ss -lnt"), StringComparison.Ordinal);
    }

    /// <summary>A counter of the "dns" status object (0 when absent or the daemon does not answer).</summary>
    private static long DnsCounter(MeshRig.Agent agent, string name)
        => agent.Status() is { } s && s.TryGetProperty("dns", out var dns) && dns.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number ? value.GetInt64() : 0;

    /// <summary>`dig +short` from a namespace; the first line of the answer, "" when none.</summary>
    private static string Dig(NetworkNamespace ns, string server, string name, string extra = "")
    {
        var result = ns.TryExec($"dig +short +time=2 +tries=1 {extra} @{server} {name} A", TimeSpan.FromSeconds(15));
        return result.ExitCode == 0 ? result.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? "" : "";
    }

    /// <summary>
    /// A minimal authoritative nameserver for corp.test: every A question under it gets <see cref="CorpAnswer"/>,
    /// anything else REFUSED. Written from RFC 1035 here so the test does not trust the code under test.
    /// </summary>
    private static async Task ServeCorpAsync(Socket socket, Action onQuery, CancellationToken cancellationToken)
    {
        var buffer = new byte[4096];
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), cancellationToken);
                var query = buffer.AsSpan(0, received.ReceivedBytes);
                if (query.Length < 17)
                {
                    continue;
                }

                // The question: labels until the root byte (queries are never compressed), then type and class.
                var position = 12;
                var labels = new List<string>();
                while (position < query.Length && query[position] != 0 && position + 1 + query[position] <= query.Length)
                {
                    labels.Add(System.Text.Encoding.ASCII.GetString(query.Slice(position + 1, query[position])).ToLowerInvariant());
                    position += 1 + query[position];
                }

                var questionEnd = position + 5;
                if (questionEnd > query.Length)
                {
                    continue;
                }

                onQuery();
                var type = BinaryPrimitives.ReadUInt16BigEndian(query[(position + 1)..]);
                var underCorp = labels.Count >= 2 && labels[^2] == "corp" && labels[^1] == "test";
                var answer = new List<byte>(query[..questionEnd].ToArray());
                answer[2] = (byte)(0x84 | (query[2] & 0x01)); // QR, AA, RD copied
                answer[3] = (byte)(underCorp ? 0 : 5);
                answer[6] = 0;
                answer[7] = (byte)(underCorp && type == 1 ? 1 : 0);
                answer[8] = answer[9] = answer[10] = answer[11] = 0;
                if (underCorp && type == 1)
                {
                    answer.AddRange([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, .. IPAddress.Parse(CorpAnswer).GetAddressBytes()]);
                }

                await socket.SendToAsync(answer.ToArray(), SocketFlags.None, received.RemoteEndPoint, cancellationToken);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // The test is over.
        }
    }
}
