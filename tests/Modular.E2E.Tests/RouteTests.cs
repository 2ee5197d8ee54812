using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Modular.Testing;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>
/// Routes through routing peers, with real agents in namespaces: a subnet behind a routing peer reached
/// by the peers a policy allows (masqueraded, filtered by port), and an exit node carrying a client's
/// default route while the client's control connections stay direct. Everything the agents add to the
/// OS (routes, policy rules, nftables tables) is gone after `modular down`.
/// </summary>
public sealed class RouteTests(ITestOutputHelper output)
{
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(90);
    private static readonly TimeSpan MapTimeout = TimeSpan.FromSeconds(60);

    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void A_subnet_behind_a_routing_peer_is_reachable_only_as_the_policy_allows_and_masqueraded(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, "r");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["ra", "rr", "rc"];
        foreach (var name in names)
        {
            StartAgent(rig, name, key, mode);
        }

        var lan = rig.AddNetworkBehind(rig["rr"], "lan", "10.77.0.1/24", "10.77.0.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        var ipA = rig["ra"].OverlayIp!;

        rig.ServerCli("groups create clients");
        rig.ServerCli($"groups add-peer clients {ipA}");
        rig.ServerCli("resources create lan --address 10.77.0.0/24 --routing-peer rr");
        rig.ServerCli("policies create lan-web --source clients --destination-resource lan --protocol tcp --ports 80");
        rig.ServerCli("policies delete Default");
        rig.Log(rig.ServerCli("routes list"));
        var routes = JsonDocument.Parse(rig.ServerCli("routes list --json")).RootElement;
        var listed = Assert.Single(routes.EnumerateArray());
        Assert.Equal("10.77.0.0/24", listed.GetProperty("network").GetString());
        Assert.Equal("rr", listed.GetProperty("routing_peer").GetString());
        Assert.True(listed.GetProperty("masquerade").GetBoolean());
        Assert.Equal(["clients"], listed.GetProperty("groups").EnumerateArray().Select(g => g.GetString()));

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var lanHost = IPAddress.Parse("10.77.0.10");
        using var web = Probes.ListenAndTellSource(lan.Name, lanHost, 80, cancel.Token);
        using var ssh = Probes.ListenAndTellSource(lan.Name, lanHost, 22, cancel.Token);

        rig.WaitUntil(() => rig["ra"].Namespace.Exec("ip -4 route").Contains($"10.77.0.0/24 dev {rig["ra"].Interface}", StringComparison.Ordinal),
            MapTimeout, "ra routes 10.77.0.0/24 through its interface", () => MeshTests.Diagnostics(rig, names));
        var reply = "";
        rig.WaitUntil(() => Probes.TryTcp(rig["ra"].Namespace.Name, lanHost, 80, out reply), ConnectTimeout, "TCP 80 from ra to the lan host through rr",
            () => MeshTests.Diagnostics(rig, names) + "\n--- rr nft:\n" + rig["rr"].Namespace.TryExec("nft list ruleset").Output);
        Assert.Equal("from 10.77.0.1", reply); // masqueraded: the lan host sees the routing peer's own lan address

        // status --json: the client sends the lan through rr, installed; rr serves it; rc (no policy) has no route at all.
        rig.WaitUntil(() => RouteEntry(rig["ra"], "10.77.0.0/24") is { } r && r.GetProperty("installed").GetBoolean(), MapTimeout, "ra's status shows the lan route installed",
            () => rig["ra"].StatusText());
        var clientEntry = RouteEntry(rig["ra"], "10.77.0.0/24")!.Value;
        rig.Log(clientEntry.ToString());
        Assert.Equal("client", clientEntry.GetProperty("role").GetString());
        Assert.StartsWith("rr", clientEntry.GetProperty("peer").GetString(), StringComparison.Ordinal);
        Assert.Equal("lan", clientEntry.GetProperty("name").GetString());
        Assert.False(clientEntry.GetProperty("exit_node").GetBoolean());
        Assert.True(clientEntry.GetProperty("masquerade").GetBoolean());
        Assert.Equal(JsonValueKind.Null, clientEntry.GetProperty("reason").ValueKind);
        var servingEntry = RouteEntry(rig["rr"], "10.77.0.0/24") ?? throw new Xunit.Sdk.XunitException("rr's status has no 10.77.0.0/24 route:\n" + rig["rr"].StatusText());
        Assert.Equal("serving", servingEntry.GetProperty("role").GetString());
        Assert.Equal("self", servingEntry.GetProperty("peer").GetString());
        Assert.True(servingEntry.GetProperty("installed").GetBoolean(), servingEntry.ToString());
        Assert.Equal(0, rig["rc"].Status()!.Value.GetProperty("routes").GetArrayLength());
        var detail = rig["ra"].StatusText();
        rig.Log(detail + rig["rr"].StatusText());
        Assert.Contains("10.77.0.0/24 → rr", detail, StringComparison.Ordinal);
        Assert.False(Probes.TryTcp(rig["ra"].Namespace.Name, lanHost, 22, out _), "TCP 22 to the lan host must be dropped (only tcp/80 is allowed)");

        // rc is in no source group: no route, and the lan is not reachable from it.
        Assert.DoesNotContain("10.77.0.0/24", rig["rc"].Namespace.Exec("ip -4 route"), StringComparison.Ordinal);
        Assert.False(Probes.TryTcp(rig["rc"].Namespace.Name, lanHost, 80, out _), "rc has no route to the lan");

        // Without masquerade the lan host sees the client's own overlay address (its default route leads back through rr).
        var lan2 = rig.AddNetworkBehind(rig["rr"], "lan2", "10.78.0.1/24", "10.78.0.10/24");
        var lan2Host = IPAddress.Parse("10.78.0.10");
        using var web2 = Probes.ListenAndTellSource(lan2.Name, lan2Host, 80, cancel.Token);
        rig.ServerCli("resources create lan2 --address 10.78.0.0/24 --routing-peer rr --no-masquerade");
        rig.ServerCli("policies create lan2-web --source clients --destination-resource lan2 --protocol tcp --ports 80");
        rig.WaitUntil(() => Probes.TryTcp(rig["ra"].Namespace.Name, lan2Host, 80, out reply), MapTimeout, "TCP 80 from ra to the second lan (no masquerade)",
            () => MeshTests.Diagnostics(rig, names) + "\n--- rr nft:\n" + rig["rr"].Namespace.TryExec("nft list ruleset").Output);
        Assert.Equal($"from {ipA}", reply);

        // Routes follow group membership both ways on a running agent.
        rig.ServerCli($"groups add-peer clients {rig["rc"].OverlayIp}");
        rig.WaitUntil(() => rig["rc"].Namespace.Exec("ip -4 route").Contains("10.77.0.0/24", StringComparison.Ordinal), MapTimeout, "rc gets the route once in the group");
        rig.ServerCli($"groups remove-peer clients {rig["rc"].OverlayIp}");
        rig.WaitUntil(() => !rig["rc"].Namespace.Exec("ip -4 route").Contains("10.77.0.0/24", StringComparison.Ordinal), MapTimeout, "rc's route goes when it leaves the group");

        var table = $"modular_route_{rig["rr"].Interface}";
        Assert.Contains(table, rig["rr"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
        rig["ra"].Stop();
        rig["rr"].Stop();
        Assert.DoesNotContain("10.77.0.0/24", rig["ra"].Namespace.Exec("ip -4 route"), StringComparison.Ordinal);
        Assert.DoesNotContain("modular_route", rig["rr"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
        cancel.Cancel();
    }

    /// <summary>
    /// Issue 13 item 2: a connection forwarded under a route policy ends when the policy goes, in both modes (kernel
    /// mode's forward table used to accept every established connection before any rule). The client keeps its
    /// route (another policy still gives it the network), so it is the routing peer that ends the connection.
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void Kernel_revoked_route_policy_ends_forwarded_connections(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, "v");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["va", "vr"];
        foreach (var name in names)
        {
            StartAgent(rig, name, key, mode);
        }

        var lan = rig.AddNetworkBehind(rig["vr"], "vlan", "10.79.0.1/24", "10.79.0.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        rig.ServerCli("groups create clients");
        rig.ServerCli($"groups add-peer clients {rig["va"].OverlayIp}");
        rig.ServerCli("resources create lan --address 10.79.0.0/24 --routing-peer vr");
        rig.ServerCli("policies create lan-echo --source clients --destination-resource lan --protocol tcp --ports 2222");
        rig.ServerCli("policies create lan-web --source clients --destination-resource lan --protocol tcp --ports 80");
        rig.ServerCli("policies delete Default");

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var lanHost = IPAddress.Parse("10.79.0.10");
        using var echo = KernelPolicyTests.EchoOnce(lan.Name, lanHost, 2222, cancel.Token);
        Socket? held = null;
        try
        {
            rig.WaitUntil(() => (held = TryConnect(rig["va"].Namespace.Name, new IPEndPoint(lanHost, 2222))) is not null, ConnectTimeout,
                "TCP 2222 from va to the lan host through vr", () => MeshTests.Diagnostics(rig, names) + "\n--- vr nft:\n" + rig["vr"].Namespace.TryExec("nft list ruleset").Output);
            Assert.True(KernelPolicyTests.Echoes(held!), "the forwarded connection echoes under the lan-echo policy");

            rig.ServerCli("policies delete lan-echo");
            rig.WaitUntil(() => !KernelPolicyTests.Echoes(held!), MapTimeout, "the forwarded connection the revoked policy let through ends",
                () => MeshTests.Diagnostics(rig, names) + "\n--- vr nft:\n" + rig["vr"].Namespace.TryExec("nft list ruleset").Output);
            Assert.Contains("10.79.0.0/24", rig["va"].Namespace.Exec("ip -4 route"), StringComparison.Ordinal); // still routed: vr ended it
        }
        finally
        {
            held?.Dispose();
            cancel.Cancel();
        }
    }

    /// <summary>One TCP connection from a namespace (5 s at most); null when it did not connect.</summary>
    private static Socket? TryConnect(string namespaceName, IPEndPoint to)
    {
        var socket = NamespaceSocket.Create(namespaceName, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            socket.ConnectAsync(to, timeout.Token).AsTask().GetAwaiter().GetResult();
            return socket;
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            socket.Dispose();
            return null;
        }
    }

    /// <summary>
    /// Issue 13 item 5: a route rule opens the hosts behind a routing peer, never the routing peer itself. The client
    /// may reach the lan on TCP 80 (the route works), but not TCP 80 on the routing peer's own lan address, which lies
    /// inside the routed network: the routing peer's own addresses are reached only by rules for the peer itself.
    /// Userspace used to judge that packet by the route rule (and let it in); kernel mode drops it (input, not forward).
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void A_route_rule_does_not_open_the_routing_peers_own_lan_address(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, "o");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["oc", "or"];
        foreach (var name in names)
        {
            StartAgent(rig, name, key, mode);
        }

        var lan = rig.AddNetworkBehind(rig["or"], "olan", "10.77.0.1/24", "10.77.0.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        // Default (everyone to everyone) goes first: any map that carries the route then lacks it.
        rig.ServerCli("policies delete Default");
        rig.ServerCli("resources create lan --address 10.77.0.0/24 --routing-peer or");
        rig.ServerCli("policies create lan-web --source All --destination-resource lan --protocol tcp --ports 80");

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var lanHost = IPAddress.Parse("10.77.0.10");
        var ownLan = IPAddress.Parse("10.77.0.1");
        using var web = Probes.ListenAndTellSource(lan.Name, lanHost, 80, cancel.Token);
        using var own = Probes.Listen(rig["or"].Namespace.Name, ownLan, 80, _ => "the routing peer itself", cancel.Token);
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\n--- or nft:\n" + rig["or"].Namespace.TryExec("nft list ruleset").Output;

        var reply = "";
        rig.WaitUntil(() => Probes.TryTcp(rig["oc"].Namespace.Name, lanHost, 80, out reply), ConnectTimeout, "TCP 80 from oc to the lan host through or", Diagnostics);
        Assert.StartsWith("from ", reply, StringComparison.Ordinal);

        Assert.False(Probes.TryTcp(rig["oc"].Namespace.Name, ownLan, 80, out reply), $"the route rule opened the routing peer's own lan address ({mode}); it answered \"{reply}\"");

        // The route still works after the refused attempt (it was a drop, not a broken path).
        Assert.True(Probes.TryTcp(rig["oc"].Namespace.Name, lanHost, 80, out _), "TCP 80 to the lan host after the probe");
        cancel.Cancel();
    }

    /// <summary>The "routes" entry of <paramref name="agent"/>'s status for <paramref name="network"/>; null when absent or the daemon does not answer.</summary>
    [SkippableFact]
    public void Two_routing_peers_of_one_network_fail_over_to_the_connected_one_and_back()
    {
        RequirePrerequisites("userspace");
        using var rig = new MeshRig(output, "h");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["hc", "h1", "h2"];
        foreach (var name in names)
        {
            StartAgent(rig, name, key, "userspace");
        }

        // The same lan (host 10.77.0.10) behind both routing peers; each masquerades with its own lan address,
        // so the host's answer names the routing peer that carried the connection.
        var lan1 = rig.AddNetworkBehind(rig["h1"], "lan1", "10.77.0.1/24", "10.77.0.10/24");
        var lan2 = rig.AddNetworkBehind(rig["h2"], "lan2", "10.77.0.2/24", "10.77.0.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        rig.ServerCli("resources create lan-1 --address 10.77.0.0/24 --routing-peer h1 --metric 10");
        rig.ServerCli("resources create lan-2 --address 10.77.0.0/24 --routing-peer h2 --metric 20");
        rig.ServerCli("policies create lan-1-web --source All --destination-resource lan-1 --protocol tcp --ports 80");
        rig.ServerCli("policies create lan-2-web --source All --destination-resource lan-2 --protocol tcp --ports 80");

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        var lanHost = IPAddress.Parse("10.77.0.10");
        using var web1 = Probes.ListenAndTellSource(lan1.Name, lanHost, 80, cancel.Token);
        using var web2 = Probes.ListenAndTellSource(lan2.Name, lanHost, 80, cancel.Token);
        string Through() => Probes.TryTcp(rig["hc"].Namespace.Name, lanHost, 80, out var reply) ? reply : "";
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\n--- hc routes:\n" + rig["hc"].StatusText();

        // Both routing peers connected: the lower metric carries the lan; the other is reported as lost to it.
        rig.WaitUntil(() => Through() == "from 10.77.0.1", ConnectTimeout, "hc reaches the lan through h1 (metric 10)", Diagnostics);
        rig.WaitUntil(() => RouteEntry(rig["hc"], "lan-2") is { } e && e.GetProperty("reason").GetString() == "lost to route lan-1 (metric 10)",
            MapTimeout, "hc's status: lan-2 lost to lan-1", Diagnostics);

        // h1 stops cleanly: it says goodbye over signal, and the lan fails over to h2 at once.
        var stopped = System.Diagnostics.Stopwatch.StartNew();
        rig["h1"].Stop();
        rig.WaitUntil(() => Through() == "from 10.77.0.2", TimeSpan.FromSeconds(60), "hc fails over to h2 after h1's goodbye", Diagnostics);
        rig.Log(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"failover on goodbye: h1 stopped -> lan reached through h2 after {stopped.Elapsed.TotalSeconds:F1} s"));
        var standby = RouteEntry(rig["hc"], "lan-1") ?? throw new Xunit.Sdk.XunitException("no lan-1 entry:\n" + Diagnostics());
        Assert.StartsWith("standby: its routing peer is not connected", standby.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Contains("Route lan-2 (10.77.0.0/24) fails over to routing peer h2", rig["hc"].Log, StringComparison.Ordinal);
        Assert.Contains("the peer said goodbye", rig["hc"].Log, StringComparison.Ordinal);

        // h1 comes back: once connected it carries the lan again (the better metric).
        var restarted = System.Diagnostics.Stopwatch.StartNew();
        rig["h1"].Start();
        rig.WaitUntil(() => Through() == "from 10.77.0.1", TimeSpan.FromSeconds(150), "hc returns to h1", Diagnostics);
        rig.Log(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"failback: h1 started -> lan reached through h1 after {restarted.Elapsed.TotalSeconds:F1} s"));
        rig.WaitUntil(() => RouteEntry(rig["hc"], "lan-2") is { } e && e.GetProperty("reason").GetString() == "lost to route lan-1 (metric 10)",
            MapTimeout, "hc's status: lan-2 lost to lan-1 again", Diagnostics);

        // h1 dies without a word: nothing more arrives from it (not even its keepalive); after 90 s of silence hc
        // reconnects it and the lan fails over, long before h1's handshake would count as stale (3 min).
        var killed = System.Diagnostics.Stopwatch.StartNew();
        rig["h1"].Kill();
        rig.WaitUntil(() => Through() == "from 10.77.0.2", TimeSpan.FromSeconds(210), "hc fails over to h2 after h1 went silent", Diagnostics);
        rig.Log(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"failover on silence: h1 killed -> lan reached through h2 after {killed.Elapsed.TotalSeconds:F0} s"));
        Assert.Contains("nothing received for", rig["hc"].Log, StringComparison.Ordinal);
    }

    /// <summary>
    /// Issue 17: with lazy connections on, a peer serving a route this client installed is never parked. Before the
    /// route exists both of the client's peers are Idle; once it is installed the routing peer connects with no traffic
    /// for it, the routed subnet answers the very first TCP connection, and it stays Connected past the inactivity
    /// timeout that parks the other peer again after a ping woke it.
    /// </summary>
    [SkippableFact]
    public void With_lazy_connections_a_routing_peer_is_never_parked_and_its_subnet_answers_the_first_connection()
    {
        RequirePrerequisites("userspace");
        using var rig = new MeshRig(output, "lz");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["lc", "lr", "lp"];
        foreach (var name in names)
        {
            rig.AddAgent(name).WriteConfig(key, "[features]\nlazy_connections = true\ninactivity_timeout = \"5s\"");
            rig[name].Start();
        }

        var lan = rig.AddNetworkBehind(rig["lr"], "lan", "10.77.0.1/24", "10.77.0.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        string State(string peer) => rig["lc"].Peer(peer) is { } p ? p.GetProperty("state").GetString() ?? "" : "";
        string Diagnostics() => MeshTests.Diagnostics(rig, names) + "\n--- lc:\n" + rig["lc"].StatusText();
        rig.WaitUntil(() => State("lr") == "Idle" && State("lp") == "Idle", MapTimeout, "lc parks both peers before any route", Diagnostics);

        rig.ServerCli("resources create lan --address 10.77.0.0/24 --routing-peer lr");
        rig.ServerCli("policies create lan-web --source All --destination-resource lan --protocol tcp --ports 80");
        rig.WaitUntil(() => RouteEntry(rig["lc"], "10.77.0.0/24") is { } r && r.GetProperty("installed").GetBoolean() && State("lr") == "Connected",
            ConnectTimeout, "lc installs the lan route and connects its routing peer with no traffic for it", Diagnostics);
        Assert.Equal("Idle", State("lp")); // lazy connections are still in effect for the peer that serves nothing

        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var lanHost = IPAddress.Parse("10.77.0.10");
        using var web = Probes.ListenAndTellSource(lan.Name, lanHost, 80, cancel.Token);
        // One connection, no retry by the test. Both ends start a WireGuard handshake as they connect; crossing
        // initiations used to cost a 5 s retry (first connection 4 s in 4 of 10 runs; bench/README "Lazy connections")
        // and now resolve at once (0.17 s). The connection still gets 15 s, not a drop probe's 3 s, so that a lost
        // handshake packet is retried by WireGuard and the SYN by the kernel, as any application's would be.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Assert.True(Probes.TryTcp(rig["lc"].Namespace.Name, lanHost, 80, out var reply, TimeSpan.FromSeconds(15)), "the first TCP connection to the routed subnet was not answered\n" + Diagnostics());
        rig.Log(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"first connection through the routing peer answered in {clock.Elapsed.TotalSeconds:F2} s"));
        Assert.Equal("from 10.77.0.1", reply);

        // A ping wakes lp; the inactivity timeout parks it again. lr carried nothing all that time and is still Connected.
        var ping = rig["lc"].Namespace.TryExec($"ping -c 1 -W 15 {rig["lp"].OverlayIp}", TimeSpan.FromSeconds(30));
        Assert.True(ping.ExitCode == 0, "the ping that wakes lp was not answered\n" + ping.Output);
        rig.WaitUntil(() => State("lp") == "Idle", TimeSpan.FromSeconds(60), "lp parked again after 5 s without traffic", Diagnostics);
        Assert.Equal("Connected", State("lr"));
        Assert.True(Probes.TryTcp(rig["lc"].Namespace.Name, lanHost, 80, out reply), "the routed subnet after lp was parked\n" + Diagnostics());
        cancel.Cancel();
    }

    /// <summary>The status entry of a route, by its network (the first such) or its name.</summary>
    private static JsonElement? RouteEntry(MeshRig.Agent agent, string networkOrName)
        => agent.Status() is { } status && status.TryGetProperty("routes", out var routes)
            ? routes.EnumerateArray().Cast<JsonElement?>().FirstOrDefault(r => r!.Value.GetProperty("network").GetString() == networkOrName || r!.Value.GetProperty("name").GetString() == networkOrName)
            : null;

    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void An_exit_node_carries_the_default_route_while_the_control_plane_stays_direct(string mode)
    {
        RequirePrerequisites(mode);
        using var rig = new MeshRig(output, "x");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        string[] names = ["xc", "xe"];
        // The client sits behind a NAT router, so management, signal, relay and STUN are reached through its
        // default route, exactly the route an exit node replaces: only the control rules keep them direct.
        StartAgent(rig, "xc", key, mode, behindNat: true);
        StartAgent(rig, "xe", key, mode);

        // The "internet" (TEST-NET-3) exists only behind xe; xc has no route to it but through the exit node.
        var internet = rig.AddNetworkBehind(rig["xe"], "inet", "203.0.113.1/24", "203.0.113.10/24");
        rig.WaitUntil(() => names.All(n => rig[n].OverlayIp is not null), ConnectTimeout, "every agent logged in", () => MeshTests.Diagnostics(rig, names));
        using var cancel = new CancellationTokenSource(TimeSpan.FromMinutes(4));
        var target = IPAddress.Parse("203.0.113.10");
        using var web = Probes.ListenAndTellSource(internet.Name, target, 80, cancel.Token);
        Assert.False(Probes.TryTcp(rig["xc"].Namespace.Name, target, 80, out _), "before the exit node the target is unreachable from xc");

        rig.ServerCli("groups create travellers");
        rig.ServerCli($"groups add-peer travellers {rig["xc"].OverlayIp}");
        rig.ServerCli("routes exit-node xe");
        rig.ServerCli("policies create via-exit --source travellers --destination-resource exit-xe");
        rig.Log(rig.ServerCli("routes list"));

        var client = rig["xc"].Namespace;
        rig.WaitUntil(() => client.Exec("ip -4 rule").Contains("not from all fwmark", StringComparison.Ordinal), MapTimeout, "xc's exit-node rules",
            () => MeshTests.Diagnostics(rig, names) + "\n--- xc rules:\n" + client.TryExec("ip -4 rule").Output);
        var rules = client.Exec("ip -4 rule");
        rig.Log(rules);
        Assert.Contains($"from all to {MeshRig.ServerIp} lookup main", rules, StringComparison.Ordinal);
        Assert.Contains("suppress_prefixlength 0", rules, StringComparison.Ordinal);
        Assert.Contains("default dev", client.Exec("ip -4 route show table all"), StringComparison.Ordinal);
        var toManagement = client.Exec($"ip -4 route get {MeshRig.ServerIp}");
        var toInternet = client.Exec("ip -4 route get 203.0.113.10");
        rig.Log(toManagement + toInternet);
        Assert.DoesNotContain(rig["xc"].Interface, toManagement, StringComparison.Ordinal); // via the NAT router, not the tunnel
        Assert.Contains(" via ", toManagement, StringComparison.Ordinal);
        Assert.Contains($"dev {rig["xc"].Interface} table", toInternet, StringComparison.Ordinal);

        var reply = "";
        rig.WaitUntil(() => Probes.TryTcp(client.Name, target, 80, out reply), ConnectTimeout, "TCP 80 from xc to 203.0.113.10 through the exit node",
            () => MeshTests.Diagnostics(rig, names) + "\n--- xe nft:\n" + rig["xe"].Namespace.TryExec("nft list ruleset").Output);
        Assert.Equal("from 203.0.113.1", reply); // the target sees the exit node's address: the traffic went through xe

        // status --json: xc uses the exit node (installed: route, mark and rules in place); xe serves it.
        rig.WaitUntil(() => RouteEntry(rig["xc"], "0.0.0.0/0") is { } r && r.GetProperty("installed").GetBoolean(), MapTimeout, "xc's status shows the exit node installed",
            () => rig["xc"].StatusText());
        var exitEntry = RouteEntry(rig["xc"], "0.0.0.0/0")!.Value;
        Assert.True(exitEntry.GetProperty("exit_node").GetBoolean(), exitEntry.ToString());
        Assert.Equal("client", exitEntry.GetProperty("role").GetString());
        Assert.StartsWith("xe", exitEntry.GetProperty("peer").GetString(), StringComparison.Ordinal);
        var exitServed = RouteEntry(rig["xe"], "0.0.0.0/0") ?? throw new Xunit.Sdk.XunitException("xe's status has no 0.0.0.0/0 route:\n" + rig["xe"].StatusText());
        Assert.Equal(("serving", "self", true, true), (exitServed.GetProperty("role").GetString(), exitServed.GetProperty("peer").GetString(),
            exitServed.GetProperty("exit_node").GetBoolean(), exitServed.GetProperty("installed").GetBoolean()));

        // Management still reaches xc through its direct path: a later change arrives and status says connected.
        var mapsBefore = CountMaps(rig["xc"].Log);
        rig.ServerCli("groups create later");
        rig.ServerCli($"groups add-peer later {rig["xc"].OverlayIp}");
        rig.WaitUntil(() => CountMaps(rig["xc"].Log) > mapsBefore, MapTimeout, "a later network map reaches xc over its direct management connection",
            () => MeshTests.Diagnostics(rig, names));
        var management = rig["xc"].Status()!.Value.GetProperty("management");
        Assert.True(management.GetProperty("connected").GetBoolean(), management.ToString());
        Assert.True(Probes.TryTcp(client.Name, target, 80, out _), "the exit node still carries traffic after the change");

        rig["xc"].Stop();
        rig["xe"].Stop();
        var after = client.Exec("ip -4 rule");
        Assert.DoesNotContain("fwmark", after, StringComparison.Ordinal);
        Assert.DoesNotContain("suppress_prefixlength", after, StringComparison.Ordinal);
        Assert.DoesNotContain(MeshRig.ServerIp, after, StringComparison.Ordinal);
        Assert.DoesNotContain($"dev {rig["xc"].Interface}", client.Exec("ip -4 route show table all"), StringComparison.Ordinal);
        Assert.DoesNotContain("table 51820", client.Exec("ip -4 route show table all"), StringComparison.Ordinal);
        Assert.DoesNotContain("modular_route", rig["xe"].Namespace.Exec("nft list tables"), StringComparison.Ordinal);
        cancel.Cancel();
    }

    /// <summary>
    /// Benchmark (MODULAR_BENCH=1): iperf3 TCP from a client to a host behind a routing peer (forwarded,
    /// filtered, masqueraded) against the same client to the routing peer's own overlay address. Prints both;
    /// asserts only that traffic flowed.
    /// </summary>
    [SkippableTheory]
    [InlineData("userspace")]
    [InlineData("kernel")]
    public void Routed_throughput(string mode)
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("MODULAR_BENCH") == "1", "benchmark: set MODULAR_BENCH=1");
        RequirePrerequisites(mode);
        Prerequisites.RequireTool("iperf3");
        using var rig = new MeshRig(output, "rb");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        StartAgent(rig, "ba", key, mode);
        StartAgent(rig, "br", key, mode);
        var lan = rig.AddNetworkBehind(rig["br"], "blan", "10.77.0.1/24", "10.77.0.10/24");
        rig.WaitUntil(() => rig["ba"].IsConnected("br") && rig["br"].IsConnected("ba"), ConnectTimeout, "ba and br Connected", () => MeshTests.Diagnostics(rig, ["ba", "br"]));
        rig.ServerCli("resources create lan --address 10.77.0.0/24 --routing-peer br");
        rig.ServerCli("policies create lan --source All --destination-resource lan --protocol tcp");
        rig.WaitUntil(() => rig["ba"].Namespace.Exec("ip -4 route").Contains("10.77.0.0/24", StringComparison.Ordinal), MapTimeout, "ba's route");

        double Measure(NetworkNamespace server, string address)
        {
            using var iperf = server.Start("iperf3 -s -1");
            server.WaitForTcpListener(5201, TimeSpan.FromSeconds(30));
            using var document = JsonDocument.Parse(rig["ba"].Namespace.Exec($"iperf3 -c {address} -t 10 -J", TimeSpan.FromSeconds(40)));
            return document.RootElement.GetProperty("end").GetProperty("sum_received").GetProperty("bits_per_second").GetDouble();
        }

        var direct = Measure(rig["br"].Namespace, rig["br"].OverlayIp!);
        var routed = Measure(lan, "10.77.0.10");
        Assert.True(direct > 0 && routed > 0);
        output.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{mode}: iperf3 to the routing peer itself {direct / 1e9:F2} Gbit/s; through it to its lan (forwarded, filtered, masqueraded) {routed / 1e9:F2} Gbit/s ({routed / direct:P0})"));
    }

    private static void RequirePrerequisites(string mode)
    {
        MeshRig.RequirePrerequisites();
        if (mode == "kernel")
        {
            // Kernel mode drives wireguard-go where there is no WireGuard module, and marks its socket with wg.
            Prerequisites.RequireTool("wireguard-go");
            Prerequisites.RequireTool("wg");
        }
    }

    private static void StartAgent(MeshRig rig, string name, string setupKey, string mode, bool behindNat = false)
    {
        var agent = behindNat ? rig.AddAgentBehindNat(name) : rig.AddAgent(name);
        agent.WriteConfig(setupKey, mode == "kernel" ? "[proxy]\nkind = \"udp\"" : "");
        if (mode == "kernel")
        {
            File.WriteAllText(agent.ConfigPath, File.ReadAllText(agent.ConfigPath).Replace("mode = \"userspace\"", "mode = \"kernel\"", StringComparison.Ordinal));
        }

        agent.Start();
    }

    private static int CountMaps(string log) => log.Split('\n').Count(l => l.Contains("Network map", StringComparison.Ordinal) && l.Contains(" applied in ", StringComparison.Ordinal));
}
