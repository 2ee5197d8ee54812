using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// NetFlow end to end beyond the basic flows (<see cref="NetflowTests"/>): the <c>collect_dns</c> and
/// <c>collect_exit_node</c> switches in both WireGuard modes, the server killed (SIGKILL) while agents ship and
/// started again (every event at the server exactly once), and a third-party flow sink built outside the solution
/// running beside the built-in one. Absence is never shown by waiting: a flow the same agent records later (a marker)
/// reaching the server first proves the left-out one would have been shipped (the agent ships in order).
/// </summary>
public sealed class NetflowSwitchTests(ITestOutputHelper output)
{
    private const int MarkerPort = 8090;
    private static readonly TimeSpan Shipped = TimeSpan.FromSeconds(90);

    /// <summary>
    /// Each agent asks the other's mesh resolver (dig over the tunnel). nda collects DNS flows, ndb leaves them out:
    /// the query ndb receives is absent at the server while a later marker flow of ndb's is there; nda's is present.
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void Dns_flows_reach_the_server_only_from_the_agent_whose_collect_dns_is_on(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, mode == "kernel" ? "dk" : "du");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        rig.StartServer();
        var key = rig.CreateSetupKey();
        StartAgent(rig, "nda", key, mode, "[netflow]\nenabled = true\ncollect_dns = true");
        StartAgent(rig, "ndb", key, mode, "[netflow]\nenabled = true\ncollect_dns = false");
        string[] names = ["nda", "ndb"];
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\nserver:\n" + rig.ServerOutput;
        rig.WaitUntil(() => rig["nda"].IsConnected("ndb") && rig["ndb"].IsConnected("nda"), TimeSpan.FromSeconds(90), "nda and ndb Connected", Diagnostics);
        var ipA = rig["nda"].OverlayIp!;
        var ipB = rig["ndb"].OverlayIp!;
        rig.WaitUntil(() => rig["nda"].Ping(ipB), MeshTests.FirstPingTimeout, "nda -> ndb", Diagnostics);

        // Each resolver answers the other's query over the tunnel (a name it does not know: the answer does not matter).
        rig.WaitUntil(() => Dig(rig["nda"], ipB), TimeSpan.FromSeconds(60), "dig from nda to ndb's resolver", Diagnostics);
        rig.WaitUntil(() => Dig(rig["ndb"], ipA), TimeSpan.FromSeconds(60), "dig from ndb to nda's resolver", Diagnostics);

        // The marker: a TCP connection ndb records (ingress) after the query it received.
        using var marker = Probes.Listen(rig["ndb"].Namespace.Name, IPAddress.Parse(ipB), MarkerPort, cancel.Token);
        rig.WaitUntil(() => Probes.TryTcp(rig["nda"].Namespace.Name, IPAddress.Parse(ipB), MarkerPort, out _), TimeSpan.FromSeconds(60), "the marker connection to ndb", Diagnostics);

        JsonElement[] events = [];
        bool DnsAt(JsonElement e, string peerIp, string from) => Str(e, "peer_ip") == peerIp && Str(e, "destination") == peerIp && Num(e, "destination_port") == 53 && Str(e, "source") == from;
        rig.WaitUntil(
            () =>
            {
                events = FlowsList(rig);
                return events.Any(e => DnsAt(e, ipA, ipB) && Str(e, "type") == "start")
                    && events.Any(e => Str(e, "peer_ip") == ipB && Str(e, "type") == "start" && Num(e, "destination_port") == MarkerPort);
            },
            Shipped,
            "nda's DNS flow and ndb's marker flow in flows list",
            () => Diagnostics() + "\nflows:\n" + string.Join("\n", events.Select(e => e.ToString())));

        Assert.DoesNotContain(events, e => DnsAt(e, ipB, ipA));
        var dns = events.First(e => DnsAt(e, ipA, ipB));
        Assert.Equal("ingress", Str(dns, "direction"));
        Assert.False(string.IsNullOrEmpty(Str(dns, "source_resource_id")), "the DNS flow names the asking peer");
    }

    /// <summary>
    /// Two clients use the exit node nxe to reach a host behind it: nxa collects exit-node flows, nxb leaves them
    /// out. nxa's egress flow to the host reaches the server, nxb's does not (its later marker flow does). The exit
    /// node records both forwarded flows (routed: marked in kernel mode too) naming the exit-node resource and the
    /// policy that let them through.
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void Exit_node_flows_reach_the_server_only_from_the_client_whose_collect_exit_node_is_on(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, mode == "kernel" ? "ek" : "eu");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        rig.StartServer();
        var key = rig.CreateSetupKey();
        StartAgent(rig, "nxa", key, mode, "[netflow]\nenabled = true\ncollect_exit_node = true");
        StartAgent(rig, "nxb", key, mode, "[netflow]\nenabled = true\ncollect_exit_node = false");
        StartAgent(rig, "nxe", key, mode, "[netflow]\nenabled = true");
        string[] names = ["nxa", "nxb", "nxe"];
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\nserver:\n" + rig.ServerOutput;
        var internet = rig.AddNetworkBehind(rig["nxe"], "ninet", "203.0.113.1/24", "203.0.113.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), TimeSpan.FromSeconds(90), "every agent logged in", Diagnostics);
        var target = IPAddress.Parse("203.0.113.10");
        using var web = Probes.ListenAndTellSource(internet.Name, target, 80, cancel.Token);

        rig.ServerCli("groups create travellers");
        rig.ServerCli($"groups add-peer travellers {rig["nxa"].OverlayIp}");
        rig.ServerCli($"groups add-peer travellers {rig["nxb"].OverlayIp}");
        rig.ServerCli("routes exit-node nxe");
        rig.ServerCli("policies create via-exit --source travellers --destination-resource exit-nxe");
        var resourceId = RouteId(rig, "exit-nxe");
        var viaExitId = PolicyId(rig, "via-exit");

        foreach (var client in new[] { "nxa", "nxb" })
        {
            rig.WaitUntil(() => Probes.TryTcp(rig[client].Namespace.Name, target, 80, out _), TimeSpan.FromSeconds(120), $"TCP 80 from {client} through the exit node", Diagnostics);
        }

        // The marker: nxb's connection to nxe's overlay address (Default allows it), after its exit-node flow.
        var ipE = rig["nxe"].OverlayIp!;
        using var marker = Probes.Listen(rig["nxe"].Namespace.Name, IPAddress.Parse(ipE), MarkerPort, cancel.Token);
        rig.WaitUntil(() => Probes.TryTcp(rig["nxb"].Namespace.Name, IPAddress.Parse(ipE), MarkerPort, out _), TimeSpan.FromSeconds(60), "the marker connection from nxb", Diagnostics);

        var ipA = rig["nxa"].OverlayIp!;
        var ipB = rig["nxb"].OverlayIp!;
        JsonElement[] events = [];
        bool ToTarget(JsonElement e, string peerIp, string from) => Str(e, "peer_ip") == peerIp && Str(e, "source") == from && Str(e, "destination") == "203.0.113.10" && Num(e, "destination_port") == 80;
        rig.WaitUntil(
            () =>
            {
                events = FlowsList(rig);
                return events.Any(e => ToTarget(e, ipA, ipA))
                    && events.Any(e => ToTarget(e, ipE, ipA)) && events.Any(e => ToTarget(e, ipE, ipB))
                    && events.Any(e => Str(e, "peer_ip") == ipB && Num(e, "destination_port") == MarkerPort);
            },
            Shipped,
            "nxa's exit-node flow, nxe's forwarded flows and nxb's marker in flows list",
            () => Diagnostics() + "\nflows:\n" + string.Join("\n", events.Select(e => e.ToString())));

        Assert.DoesNotContain(events, e => ToTarget(e, ipB, ipB));
        Assert.Equal("egress", Str(events.First(e => ToTarget(e, ipA, ipA)), "direction"));

        // At the exit node: routed flows, ingress, the resource named (kernel mode: the forward table marked them).
        foreach (var from in new[] { ipA, ipB })
        {
            var routed = events.First(e => ToTarget(e, ipE, from));
            Assert.Equal("ingress", Str(routed, "direction"));
            Assert.Equal(resourceId, Str(routed, "destination_resource_id"));
            Assert.False(string.IsNullOrEmpty(Str(routed, "source_resource_id")), "the routed flow names the client peer");
            // ... and the policy that let it through (kernel mode: the forward table's accept stamps its rule's index).
            Assert.Equal(viaExitId, Str(routed, "rule_id"));
        }
    }

    /// <summary>
    /// Flows are recorded without pause while the server is killed (SIGKILL, mid-upload: batches in flight lose their
    /// acknowledgement) and started again on the same data. Once the agent has every event acknowledged, the server
    /// holds exactly as many of its events as the agent recorded, each ID once.
    /// </summary>
    [SkippableFact]
    public void The_server_killed_mid_upload_and_restarted_keeps_every_event_exactly_once()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "sk");
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        rig.StartServer();
        var key = rig.CreateSetupKey();
        StartAgent(rig, "ska", key, "userspace", "[netflow]\nenabled = true");
        StartAgent(rig, "skb", key, "userspace", "[netflow]\nenabled = true");
        string[] names = ["ska", "skb"];
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\nserver:\n" + rig.ServerOutput;
        rig.WaitUntil(() => rig["ska"].IsConnected("skb") && rig["skb"].IsConnected("ska"), TimeSpan.FromSeconds(90), "ska and skb Connected", Diagnostics);
        var ipB = IPAddress.Parse(rig["skb"].OverlayIp!);
        rig.WaitUntil(() => rig["ska"].Ping(ipB.ToString()), MeshTests.FirstPingTimeout, "ska -> skb", Diagnostics);

        // A new UDP flow (a fresh source port) every few milliseconds, at both ends, until told to stop.
        using var stopFlows = CancellationTokenSource.CreateLinkedTokenSource(cancel.Token);
        var flows = Task.Run(() =>
        {
            var sent = 0;
            while (!stopFlows.IsCancellationRequested)
            {
                using var socket = NamespaceSocket.Create(rig["ska"].Namespace.Name, AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
                socket.Bind(new IPEndPoint(IPAddress.Any, 0));
                socket.SendTo(new byte[64], new IPEndPoint(ipB, 9999));
                sent++;
                stopFlows.Token.WaitHandle.WaitOne(TimeSpan.FromMilliseconds(20));
            }

            return sent;
        }, CancellationToken.None);

        // Let shipping run, kill the server in the middle of it, keep recording while it is down, start it again.
        rig.WaitUntil(() => Acknowledged(rig["ska"]) > 20, Shipped, "ska's first events acknowledged", Diagnostics);
        rig.KillServer();
        var atKill = Recorded(rig["ska"]);
        rig.WaitUntil(() => Recorded(rig["ska"]) > atKill + 50, TimeSpan.FromSeconds(60), "ska records while the server is down", Diagnostics);
        rig.StartServer();
        rig.WaitUntil(() => Recorded(rig["ska"]) > atKill + 150, TimeSpan.FromSeconds(60), "ska records after the restart", Diagnostics);
        stopFlows.Cancel();
        var datagrams = flows.GetAwaiter().GetResult();
        rig.Log($"{datagrams} UDP flows opened; {atKill} events recorded at the kill");

        // Every event acknowledged (later End events of expiring flows keep coming: compare one consistent reading).
        var (recorded, acknowledged, dropped, stored, distinct) = (0L, 0L, 0L, 0, 0);
        rig.WaitUntil(
            () =>
            {
                var before = Counters(rig["ska"]);
                var events = FlowsList(rig, $"--peer {rig["ska"].OverlayIp} --limit 100000");
                var after = Counters(rig["ska"]);
                (recorded, acknowledged, dropped) = after;
                stored = events.Length;
                distinct = events.Select(e => Str(e, "id")).Distinct().Count();
                return before == after && after.Recorded == after.Acknowledged && stored == after.Acknowledged;
            },
            Shipped,
            "every event ska recorded acknowledged and stored once",
            () => Diagnostics() + $"\nska: recorded {recorded}, acknowledged {acknowledged}, dropped {dropped}; server: {stored} events, {distinct} distinct IDs");
        Assert.Equal(0L, dropped);
        Assert.Equal(stored, distinct);
        Assert.True(recorded > atKill + 150, $"{recorded} events recorded across the kill");
    }

    /// <summary>
    /// A third-party flow sink (tests/fixtures/ThirdPartyFlowSink, built outside the solution and dropped into
    /// plugins_dir) named in <c>[netflow] sinks</c> beside the built-in one: both receive the same TCP flow.
    /// </summary>
    [SkippableFact]
    public void A_third_party_flow_sink_plugin_receives_the_events_beside_the_built_in_sink()
    {
        MeshRig.RequirePrerequisites();
        var pluginsDir = PluginFixtures.CreatePluginsDir("ThirdPartyFlowSink");
        try
        {
            PluginFixtures.CopyBuiltInPlugins(pluginsDir);
            using var rig = new MeshRig(output, "ts");
            using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(5));
            rig.StartServer();
            var key = rig.CreateSetupKey();
            var file = Path.Combine(rig.Root, "tsb-flows.txt");
            foreach (var name in new[] { "tsa", "tsb" })
            {
                var agent = rig.AddAgent(name);
                agent.WriteConfig(key, $"[netflow]\nenabled = true\nsinks = [\"netflow\", \"thirdpartysink\"]\n[plugins.thirdpartysink]\npath = \"{Path.Combine(rig.Root, name + "-flows.txt")}\"", pluginsDir);
                agent.Start();
            }

            string[] names = ["tsa", "tsb"];
            string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\nserver:\n" + rig.ServerOutput;
            rig.WaitUntil(() => rig["tsa"].IsConnected("tsb") && rig["tsb"].IsConnected("tsa"), TimeSpan.FromSeconds(90), "tsa and tsb Connected", Diagnostics);
            var ipA = rig["tsa"].OverlayIp!;
            var ipB = rig["tsb"].OverlayIp!;
            using var listener = Probes.Listen(rig["tsb"].Namespace.Name, IPAddress.Parse(ipB), MarkerPort, cancel.Token);
            rig.WaitUntil(() => Probes.TryTcp(rig["tsa"].Namespace.Name, IPAddress.Parse(ipB), MarkerPort, out _), TimeSpan.FromSeconds(60), "TCP from tsa to tsb", Diagnostics);

            // The fixture's line: type, protocol, source, source port, destination, destination port.
            string Lines() => File.Exists(file) ? ReadShared(file) : "";
            var line = $" 6 {ipA} ";
            rig.WaitUntil(() => Lines().Split('\n').Any(l => l.StartsWith("start", StringComparison.Ordinal) && l.Contains(line, StringComparison.Ordinal) && l.Contains($" {ipB} {MarkerPort} ", StringComparison.Ordinal)),
                Shipped, "tsb's third-party sink wrote the TCP flow's start", () => Diagnostics() + "\nfile:\n" + Lines());

            // The built-in sink shipped the same flow, and status lists both sinks.
            rig.WaitUntil(() => FlowsList(rig).Any(e => Str(e, "peer_ip") == ipB && Str(e, "type") == "start" && Str(e, "source") == ipA && Num(e, "destination_port") == MarkerPort),
                Shipped, "tsb's netflow sink shipped the TCP flow's start", Diagnostics);
            var sinks = rig["tsb"].Status()!.Value.GetProperty("flows").GetProperty("sinks").EnumerateArray().Select(s => s.GetProperty("name").GetString() ?? "").ToArray();
            Assert.Equal(["netflow", "thirdpartysink"], sinks);
        }
        finally
        {
            Directory.Delete(pluginsDir, recursive: true);
        }
    }

    private static void RequirePrerequisites(string mode)
    {
        MeshRig.RequirePrerequisites();
        if (mode == "kernel")
        {
            Prerequisites.RequireTool("wireguard-go");
            Prerequisites.RequireTool("conntrack");
        }
    }

    private static void StartAgent(MeshRig rig, string name, string setupKey, string mode, string extra)
    {
        var agent = rig.AddAgent(name);
        agent.WriteConfig(setupKey, (mode == "kernel" ? "[proxy]\nkind = \"udp\"\n" : "") + extra);
        if (mode == "kernel")
        {
            agent.UseKernelMode();
        }

        agent.Start();
    }

    private static bool Dig(MeshRig.Agent agent, string resolver)
    {
        var result = agent.Namespace.TryExec($"dig +time=2 +tries=1 @{resolver} nobody.flows.test", TimeSpan.FromSeconds(15));
        return result.Output.Contains("status:", StringComparison.Ordinal);
    }

    private static string PolicyId(MeshRig rig, string name)
    {
        using var policies = JsonDocument.Parse(rig.ServerCli("policies list --json"));
        return policies.RootElement.EnumerateArray().Single(p => p.GetProperty("name").GetString() == name).GetProperty("id").GetString()!;
    }

    private static string RouteId(MeshRig rig, string name)
    {
        using var routes = JsonDocument.Parse(rig.ServerCli("routes list --json"));
        return routes.RootElement.EnumerateArray().Single(r => r.GetProperty("resource").GetString() == name).GetProperty("id").GetString()!;
    }

    /// <summary>The file while the agent's sink still appends to it.</summary>
    private static string ReadShared(string path)
    {
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        return reader.ReadToEnd();
    }

    private static (long Recorded, long Acknowledged, long Dropped) Counters(MeshRig.Agent agent)
    {
        var status = agent.Status();
        if (status is not { } s || !s.TryGetProperty("flows", out var flows) || !flows.TryGetProperty("sinks", out var sinks))
        {
            return (-1, -2, -1);
        }

        var netflow = sinks.EnumerateArray().FirstOrDefault(x => x.GetProperty("name").GetString() == "netflow");
        return netflow.ValueKind == JsonValueKind.Object && netflow.TryGetProperty("counters", out var c) && c.ValueKind == JsonValueKind.Object
            ? (Num(c, "recorded"), Num(c, "acknowledged"), Num(c, "dropped"))
            : (-1, -2, -1);
    }

    private static long Recorded(MeshRig.Agent agent) => Counters(agent).Recorded;

    private static long Acknowledged(MeshRig.Agent agent) => Counters(agent).Acknowledged;

    private static JsonElement[] FlowsList(MeshRig rig, string arguments = "")
    {
        using var document = JsonDocument.Parse(rig.ServerCli($"flows list --json {arguments}"));
        return [.. document.RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    private static string? Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long Num(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : -1;
}
