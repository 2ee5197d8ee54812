using System.Net;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Core.Peers;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Routing;
using Modular.Core.Tests.Firewall.Nftables;

namespace Modular.Core.Tests.Routing;

/// <summary>Route plans from network maps, and the route manager's changes to the OS and nftables (in-memory doubles of both).</summary>
public sealed class RouteManagerTests
{
    private static readonly IPNetwork Overlay = IPNetwork.Parse("100.64.0.0/10");
    private static readonly WgKey Self = RouteMaps.Self;
    private static readonly WgKey RouterA = RouteMaps.RouterA;
    private static readonly WgKey RouterB = RouteMaps.RouterB;

    [Fact]
    public void Routes_of_other_peers_become_client_routes_and_the_lowest_metric_then_key_order_wins()
    {
        var map = Map(
            Route("lan-b", "10.1.0.0/24", RouterB, metric: 10),
            Route("lan-a", "10.1.0.0/24", RouterA, metric: 10),
            Route("lan-b2", "10.2.0.0/24", RouterB, metric: 5),
            Route("lan-a2", "10.2.0.0/24", RouterA, metric: 50),
            Route("mine", "192.168.9.0/24", Self));
        var plan = RoutePlan.From(map, Self, Overlay);

        Assert.Equal(["10.1.0.0/24 via 2", "10.2.0.0/24 via 3"], plan.Client.Select(r => $"{r.Network} via {r.Peer.ToArray()[0]}"));
        var served = Assert.Single(plan.Served);
        Assert.Equal("192.168.9.0/24", served.Network.ToString());
        Assert.Null(plan.ExitNode);
    }

    [Fact]
    public void A_network_this_peer_serves_is_never_routed_to_another_peer()
    {
        var plan = RoutePlan.From(Map(Route("lan", "10.1.0.0/24", Self), Route("lan-ha", "10.1.0.0/24", RouterA, metric: 1), Route("exit-me", "0.0.0.0/0", Self), Route("exit-a", "0.0.0.0/0", RouterA)), Self, Overlay);
        Assert.Empty(plan.Client);
        Assert.Equal(2, plan.Served.Count);
    }

    [Fact]
    public void The_plan_names_its_resources_for_flow_events()
    {
        var plan = RoutePlan.From(Map(Route("lan", "10.1.0.0/24", RouterA), Route("exit", "0.0.0.0/0", RouterB), Route("mine", "192.168.9.0/24", Self)), Self, Overlay);
        var resources = plan.ToFirewallResources(Overlay);
        Assert.Equal(3, resources.Count);
        Assert.Equal("lan-id", resources.Find(Modular.Core.Firewall.IpPrefix128.ToUInt128(IPAddress.Parse("10.1.0.7"))));
        Assert.Equal("mine-id", resources.Find(Modular.Core.Firewall.IpPrefix128.ToUInt128(IPAddress.Parse("192.168.9.1"))));
        Assert.Equal("exit-id", resources.Find(Modular.Core.Firewall.IpPrefix128.ToUInt128(IPAddress.Parse("8.8.8.8"))));
        Assert.Null(resources.Find(Modular.Core.Firewall.IpPrefix128.ToUInt128(IPAddress.Parse("100.64.0.3"))));
        Assert.Equal(0, RoutePlan.Empty.ToFirewallResources(Overlay).Count);
    }

    [Fact]
    public void Unusable_routes_are_skipped_not_thrown()
    {
        var map = Map(
            Route("bad", "10.1.0.0/33", RouterA),
            Route("v6", "fd00::/64", RouterA),
            Route("overlay", "100.64.0.0/16", RouterA),
            Route("gone", "10.3.0.0/24", Key(9)),
            Route("ok", "10.4.0.0/24", RouterA));
        map.Routes.Add(new Route { Id = "short", Name = "short-key", Network = "10.5.0.0/24", PeerWgPubKey = ByteString.CopyFrom(1, 2, 3) });
        var plan = RoutePlan.From(map, Self, Overlay);
        Assert.Equal(["10.4.0.0/24"], plan.Client.Select(r => r.Network.ToString()));
    }

    [Fact]
    public void Client_routes_are_merged_into_their_routing_peers_allowed_ips()
    {
        var plan = RoutePlan.From(Map(Route("lan", "10.1.0.0/24", RouterA), Route("exit", "0.0.0.0/0", RouterB)), Self, Overlay);
        var peers = plan.MergeAllowedIps([Peer(RouterA, "100.64.0.2/32"), Peer(RouterB, "100.64.0.3/32"), Peer(Key(7), "100.64.0.7/32")]);
        Assert.Equal(["100.64.0.2/32", "10.1.0.0/24"], peers[0].AllowedIps.Select(n => n.ToString()));
        Assert.Equal(["100.64.0.3/32", "0.0.0.0/0"], peers[1].AllowedIps.Select(n => n.ToString()));
        Assert.Equal(["100.64.0.7/32"], peers[2].AllowedIps.Select(n => n.ToString()));
        Assert.Equal("exit", plan.ExitNode?.Name);
    }

    [Fact]
    public async Task Client_routes_are_added_removed_with_the_map_and_all_removed_on_cleanup()
    {
        var os = new RecordingRouteOs();
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance);
        await manager.ApplyAsync(RoutePlan.From(Map(Route("a", "10.1.0.0/24", RouterA), Route("b", "10.2.0.0/24", RouterA)), Self, Overlay), [], default);
        Assert.Equal(["10.1.0.0/24 dev mdl0", "10.2.0.0/24 dev mdl0"], os.Routes.Order());

        await manager.ApplyAsync(RoutePlan.From(Map(Route("b", "10.2.0.0/24", RouterA), Route("c", "10.3.0.0/24", RouterB)), Self, Overlay), [], default);
        Assert.Equal(["10.2.0.0/24 dev mdl0", "10.3.0.0/24 dev mdl0"], os.Routes.Order());
        Assert.Empty(os.Rules);
        Assert.Equal(0u, os.Mark);

        await manager.CleanupAsync(default);
        Assert.Empty(os.Routes);
        Assert.Empty(manager.InstalledRoutes);
    }

    [Fact]
    public async Task A_prefix_the_system_already_routes_is_left_alone_and_never_removed()
    {
        var os = new RecordingRouteOs();
        os.Foreign.Add("10.1.0.0/24 dev mdl0");
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance);
        await manager.ApplyAsync(RoutePlan.From(Map(Route("a", "10.1.0.0/24", RouterA)), Self, Overlay), [], default);
        Assert.Empty(manager.InstalledRoutes);
        await manager.CleanupAsync(default);
        Assert.Empty(os.Deleted);
    }

    [Fact]
    public async Task An_exit_node_marks_wireguard_keeps_the_control_plane_direct_and_is_undone_in_reverse()
    {
        var os = new RecordingRouteOs();
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance, new RouteManagerOptions(51820));
        var plan = RoutePlan.From(Map(Route("exit", "0.0.0.0/0", RouterA)), Self, Overlay);
        await manager.ApplyAsync(plan, ["mgmt.example", "198.51.100.7", "198.51.100.7", ""], default);

        Assert.Equal(51820u, os.Mark);
        Assert.Equal(["default dev mdl0 table 51820"], os.Routes);
        Assert.Equal(
            [
                "to 192.0.2.1/32 table main priority 5170",
                "to 198.51.100.7/32 table main priority 5170",
                "table main suppress_prefixlength 0 priority 5180",
                "not fwmark 51820 table 51820 priority 5190",
            ],
            os.Rules);
        // The mark is set before any rule sends unmarked traffic into the tunnel, and the tunnel rule comes last.
        Assert.True(os.Log.IndexOf("mark 51820") < os.Log.FindIndex(l => l.StartsWith("rule add not fwmark", StringComparison.Ordinal)));
        Assert.Equal("1", os.Sysctls["net.ipv4.conf.all.src_valid_mark"]);

        // Applying the same map again changes nothing.
        var before = os.Log.Count;
        await manager.ApplyAsync(plan, ["mgmt.example", "198.51.100.7"], default);
        Assert.Equal(before, os.Log.Count);

        // A control address that moves gets its rule moved.
        await manager.ApplyAsync(plan, ["203.0.113.5"], default);
        Assert.Contains("to 203.0.113.5/32 table main priority 5170", os.Rules);
        Assert.DoesNotContain("to 198.51.100.7/32 table main priority 5170", os.Rules);

        os.Log.Clear();
        await manager.CleanupAsync(default);
        Assert.Empty(os.Rules);
        Assert.Empty(os.Routes);
        Assert.Equal(0u, os.Mark);
        Assert.StartsWith("rule del not fwmark", os.Log[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Rules_left_by_a_crashed_agent_are_replaced_not_duplicated()
    {
        var os = new RecordingRouteOs();
        os.Rules.Add("not fwmark 51820 table 51820 priority 5190");
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance, new RouteManagerOptions(51820));
        await manager.ApplyAsync(RoutePlan.From(Map(Route("exit", "0.0.0.0/0", RouterA)), Self, Overlay), [], default);
        Assert.Single(os.Rules, r => r.StartsWith("not fwmark", StringComparison.Ordinal));
    }

    [Fact]
    public async Task The_fixed_exit_rules_a_killed_agent_left_are_removed_on_the_first_map_even_without_an_exit_node()
    {
        var os = new RecordingRouteOs();
        os.Rules.AddRange(["table main suppress_prefixlength 0 priority 5180", "not fwmark 51820 table 51820 priority 5190", "not fwmark 51820 table 51820 priority 5190", "to 10.9.9.9/32 table main priority 100"]);
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance, new RouteManagerOptions(51820));
        await manager.ApplyAsync(RoutePlan.Empty, [], default);
        Assert.Equal(["to 10.9.9.9/32 table main priority 100"], os.Rules); // someone else's rule stays
    }

    [Fact]
    public async Task A_routing_peer_enables_forwarding_installs_its_table_and_removes_it_when_it_serves_nothing()
    {
        var os = new RecordingRouteOs();
        var nft = new FakeNftables();
        var manager = new RouteManager(new RouteIface(), os, nft, NullLogger.Instance);
        var map = Map(Route("lan", "10.77.0.0/24", Self));
        map.FirewallRules.Add(new FirewallRule { RuleId = "p1", PeerIp = "100.64.0.5/32", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24", PortRanges = { new PortRange { Start = 80, End = 80 } } });
        map.FirewallRules.Add(new FirewallRule { RuleId = "own", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "all" });
        await manager.ApplyAsync(RoutePlan.From(map, Self, Overlay), [], default);

        Assert.Equal("1", os.Sysctls["net.ipv4.ip_forward"]);
        var script = Assert.Single(nft.Applied);
        Assert.Contains("table inet modular_route_mdl0", script, StringComparison.Ordinal);
        Assert.Contains("iifname \"mdl0\" ip saddr 100.64.0.5/32 ip daddr 10.77.0.0/24 tcp dport { 80 } counter ct mark set ct mark & 0x00ffffff | 0x81000000 accept comment \"p1\"", script, StringComparison.Ordinal);
        Assert.Contains("ip saddr 100.64.0.0/10 ip daddr 10.77.0.0/24 oifname != \"mdl0\" counter masquerade", script, StringComparison.Ordinal);
        Assert.DoesNotContain("\"own\"", script, StringComparison.Ordinal); // rules about the peer's own address are not forwarding rules
        Assert.Empty(os.Routes); // a routing peer does not route its own network into the tunnel
        Assert.True(manager.ForwardingInstalled);

        await manager.ApplyAsync(RoutePlan.From(map, Self, Overlay), [], default);
        Assert.Single(nft.Applied); // unchanged: not applied again

        await manager.CleanupAsync(default);
        Assert.Equal(["inet modular_route_mdl0"], nft.Deleted);
        Assert.False(manager.ForwardingInstalled);
    }

    [Fact]
    public async Task Kernel_forwarding_the_agent_turned_on_is_turned_off_and_filtered_when_it_no_longer_routes()
    {
        var os = new RecordingRouteOs(); // ip_forward was 0
        var nft = new FakeNftables();
        var conntrack = new FakeConntrack();
        var manager = new RouteManager(new RouteIface(), os, nft, NullLogger.Instance, conntrack: conntrack);
        var map = Map(Route("lan", "10.77.0.0/24", Self));
        map.FirewallRules.Add(new FirewallRule { RuleId = "p1", PeerIp = "100.64.0.5/32", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24" });
        await manager.ApplyAsync(RoutePlan.From(map, Self, Overlay), [], default);
        Assert.Equal("1", os.Sysctls["net.ipv4.ip_forward"]);

        await manager.ApplyAsync(RoutePlan.From(Map(), Self, Overlay), [], default);
        Assert.Equal("0", os.Sysctls["net.ipv4.ip_forward"]); // set back: the agent turned it on
        Assert.True(manager.ForwardingInstalled, "the filter stays: forwarding may be turned on by others");
        var filterOnly = nft.Applied[^1];
        Assert.Contains("iifname \"mdl0\" counter drop comment \"no route rule\"", filterOnly, StringComparison.Ordinal);
        Assert.DoesNotContain("\"p1\"", filterOnly, StringComparison.Ordinal);
        Assert.DoesNotContain("masquerade", filterOnly, StringComparison.Ordinal);

        // Each changed table cleared its forward generation from conntrack first.
        Assert.Equal([0x8100_0000u, 0x8200_0000u], conntrack.Cleared.Select(c => c.Value));
        Assert.All(conntrack.Cleared, c => Assert.Equal(0xFF00_0000u, c.Mask));

        await manager.ApplyAsync(RoutePlan.From(Map(), Self, Overlay), [], default);
        Assert.Equal(2, nft.Applied.Count); // unchanged: not applied again
        await manager.CleanupAsync(default);
        Assert.Equal(["inet modular_route_mdl0"], nft.Deleted);
        Assert.Equal(["sysctl net.ipv4.ip_forward=1", "sysctl net.ipv4.ip_forward=0"], os.Log.Where(l => l.Contains("ip_forward", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Forwarding_on_before_the_agent_is_left_on()
    {
        var os = new RecordingRouteOs();
        os.Sysctls["net.ipv4.ip_forward"] = "1";
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance);
        await manager.ApplyAsync(RoutePlan.From(Map(Route("lan", "10.77.0.0/24", Self)), Self, Overlay), [], default);
        await manager.CleanupAsync(default);
        Assert.Equal("1", os.Sysctls["net.ipv4.ip_forward"]);
        Assert.Equal(["sysctl net.ipv4.ip_forward=1"], os.Log.Where(l => l.Contains("ip_forward", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Status_has_one_entry_per_map_route_saying_whether_it_is_installed_and_why_not()
    {
        var os = new RecordingRouteOs();
        os.Foreign.Add("10.9.0.0/24 dev mdl0");
        var manager = new RouteManager(new RouteIface(), os, new FakeNftables(), NullLogger.Instance);
        var map = Map(
            Route("lan-b", "10.1.0.0/24", RouterB, metric: 10),
            Route("lan-a", "10.1.0.0/24", RouterA, metric: 5, masquerade: false),
            Route("taken", "10.9.0.0/24", RouterA),
            Route("v6", "fd00::/64", RouterA),
            Route("overlay", "100.64.0.0/16", RouterA),
            Route("gone", "10.3.0.0/24", Key(9)),
            Route("mine", "192.168.9.0/24", Self, metric: 7),
            Route("mine-again", "192.168.9.0/24", Self));
        var plan = RoutePlan.From(map, Self, Overlay);
        await manager.ApplyAsync(plan, [], default);

        var status = manager.Describe(plan, key => key == RouterA ? "router-a" : key == RouterB ? "router-b" : null).ToDictionary(r => r.Name);

        Assert.Equal(map.Routes.Count, status.Count);
        var won = status["lan-a"];
        Assert.Equal(("10.1.0.0/24", "router-a", "client", true, null, false, 5, "lan-a-id"), (won.Network, won.Peer, won.Role, won.Installed, won.Reason, won.Masquerade, won.Metric, won.Id));
        Assert.False(status["lan-b"].Installed);
        Assert.Equal("lost to route lan-a (metric 5)", status["lan-b"].Reason);
        Assert.Equal("router-b", status["lan-b"].Peer);
        Assert.Equal("the system already routes that prefix", status["taken"].Reason);
        Assert.Equal("not an IPv4 prefix", status["v6"].Reason);
        Assert.Contains("overlaps the overlay", status["overlay"].Reason, StringComparison.Ordinal);
        Assert.Equal("the routing peer is not in this peer's map", status["gone"].Reason);
        Assert.Equal(Key(9).ToString(), status["gone"].Peer); // no name known: the key
        var mine = status["mine"];
        Assert.Equal(("self", "serving", true, true, 7), (mine.Peer, mine.Role, mine.Installed, mine.Masquerade, mine.Metric));
        Assert.Equal(("self", "serving", false), (status["mine-again"].Peer, status["mine-again"].Role, status["mine-again"].Installed));
        Assert.All(status.Values, r => Assert.Equal(r.Installed, r.Reason is null));
        Assert.All(status.Values, r => Assert.False(r.ExitNode));
    }

    [Fact]
    public async Task Status_reports_an_exit_node_and_a_forwarding_table_nft_refused()
    {
        var os = new RecordingRouteOs();
        var nft = new FakeNftables { RefuseWith = "Operation not supported" }; // as when the nf_tables module is missing
        var manager = new RouteManager(new RouteIface(), os, nft, NullLogger.Instance, new RouteManagerOptions(51820));
        var plan = RoutePlan.From(Map(Route("exit", "0.0.0.0/0", RouterA), Route("mine", "192.168.9.0/24", Self)), Self, Overlay);
        await manager.ApplyAsync(plan, ["198.51.100.7"], default);

        var status = manager.Describe(plan, _ => "router-a").ToDictionary(r => r.Name);

        Assert.True(status["exit"].ExitNode);
        Assert.True(status["exit"].Installed);
        Assert.Equal("0.0.0.0/0", status["exit"].Network);
        Assert.False(status["mine"].Installed);
        Assert.Contains("Operation not supported", status["mine"].Reason, StringComparison.Ordinal);

        nft.RefuseWith = null;
        await manager.ApplyAsync(plan, ["198.51.100.7"], default);
        Assert.True(manager.Describe(plan, _ => null).Single(r => r.Name == "mine").Installed);

        await manager.CleanupAsync(default);
        Assert.Empty(manager.Describe(RoutePlan.Empty, _ => null));
    }

    [Fact]
    public void The_forwarding_table_orders_rules_most_specific_first_and_ends_with_a_drop()
    {
        var map = Map(Route("lan", "10.77.0.0/24", Self, masquerade: false));
        map.FirewallRules.Add(new FirewallRule { RuleId = "all-web", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24", PortRanges = { new PortRange { Start = 80, End = 80 } } });
        map.FirewallRules.Add(new FirewallRule { RuleId = "one-drop", PeerIp = "100.64.0.9/32", Direction = "in", Action = "drop", Protocol = "all", Destination = "10.77.0.0/24" });
        map.FirewallRules.Add(new FirewallRule { RuleId = "host-ssh", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.5/32", PortRanges = { new PortRange { Start = 22, End = 22 } } });
        var plan = RoutePlan.From(map, Self, Overlay);
        var lines = ForwardingTable.Render("mdl0", Overlay, plan.Served, plan.ForwardRules).Split('\n').Select(l => l.Trim()).ToList();
        var ruleLines = lines.Where(l => l.Contains("comment", StringComparison.Ordinal) && l.StartsWith("iifname", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, ruleLines.Count);
        Assert.Contains("\"host-ssh\"", ruleLines[0], StringComparison.Ordinal);
        Assert.Contains("\"one-drop\"", ruleLines[1], StringComparison.Ordinal);
        Assert.Contains("\"all-web\"", ruleLines[2], StringComparison.Ordinal);
        Assert.Equal("iifname \"mdl0\" counter drop comment \"no route rule\"", ruleLines[3]);
        Assert.DoesNotContain(lines, l => l.Contains("masquerade", StringComparison.Ordinal));
        // Replies and related packets pass; an established connection from the mesh passes on this table's stamp only (issue 13 item 2: it used to pass before any rule).
        var chainStart = lines.FindIndex(l => l.StartsWith("type filter", StringComparison.Ordinal));
        Assert.Equal(["ct state established ct direction reply accept", "ct state related accept", "ct state established ct mark & 0xff000000 == 0x81000000 accept"], lines.Skip(chainStart + 1).Take(3));
    }

    [Fact]
    public void With_kernel_flow_logging_the_forwarding_table_marks_new_mesh_connections_before_any_accept()
    {
        var map = Map(Route("lan", "10.77.0.0/24", Self, masquerade: false));
        map.FirewallRules.Add(new FirewallRule { RuleId = "all-web", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24", PortRanges = { new PortRange { Start = 80, End = 80 } } });
        var plan = RoutePlan.From(map, Self, Overlay);
        const string Mark = "iifname \"mdl0\" ct state new ct mark set ct mark & 0xffbfffff | 0x00800000";

        var lines = ForwardingTable.Render("mdl0", Overlay, plan.Served, plan.ForwardRules, markFlows: true).Split('\n').Select(l => l.Trim()).ToList();
        var chainStart = lines.FindIndex(l => l.StartsWith("type filter", StringComparison.Ordinal));
        // First in the chain: every new forwarded connection from the mesh, ingress (bit 22 cleared), flow bit 23 set;
        // the accept below keeps those free bits when it stamps.
        Assert.Equal(Mark, lines[chainStart + 1]);
        // The accept keeps the flow and direction bits and stamps its rule's index (1: the first accept rule ID), so
        // the routed flow's events name the rule, as the policy table's do.
        Assert.Contains(lines, l => l.Contains("\"all-web\"", StringComparison.Ordinal) && l.Contains("ct mark set ct mark & 0x00c00000 | 0x81000001 accept", StringComparison.Ordinal));
        Assert.Equal(["all-web"], ForwardingTable.AcceptRuleIds(plan.ForwardRules));

        // Flow logging off (the default): the free bits are left alone.
        var plain = ForwardingTable.Render("mdl0", Overlay, plan.Served, plan.ForwardRules);
        Assert.DoesNotContain(Mark, plain, StringComparison.Ordinal);
        Assert.Contains("ct mark set ct mark & 0x00ffffff | 0x81000000 accept", plain, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_kernel_flow_logging_the_route_manager_records_the_forward_tables_accept_rules_for_routed_flows()
    {
        var map = Map(Route("lan", "10.77.0.0/24", Self, masquerade: false));
        map.FirewallRules.Add(new FirewallRule { RuleId = "lan-drop", PeerIp = "100.64.0.9/32", Direction = "in", Action = "drop", Protocol = "tcp", Destination = "10.77.0.0/24" });
        map.FirewallRules.Add(new FirewallRule { RuleId = "lan-web", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24", PortRanges = { new PortRange { Start = 80, End = 80 } } });
        map.FirewallRules.Add(new FirewallRule { RuleId = "lan-all", PeerIp = "100.64.0.0/10", Direction = "in", Action = "accept", Protocol = "all", Destination = "10.77.0.0/24" });
        var rules = new KernelFlowRules();
        var nft = new FakeNftables();
        var manager = new RouteManager(new RouteIface(), new RecordingRouteOs(), nft, NullLogger.Instance, new RouteManagerOptions(51820) { MarkFlows = true, FlowRules = rules });

        await manager.ApplyAsync(RoutePlan.From(map, Self, Overlay), [], default);

        // Each accept's stamp, as conntrack reports it (flow bit set by the chain's first rule), names that accept's rule.
        var script = Assert.Single(nft.Applied);
        foreach (var id in new[] { "lan-web", "lan-all" })
        {
            var line = script.Split('\n').Single(l => l.Contains($"\"{id}\"", StringComparison.Ordinal));
            var stamp = System.Text.RegularExpressions.Regex.Match(line, @"\| 0x([0-9a-f]{8}) accept").Groups[1].Value;
            var mark = uint.Parse(stamp, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) | ConntrackMarks.FlowBit;
            Assert.NotEqual(0u, mark & ConntrackMarks.ForwardedBit);
            Assert.Equal(id, rules.AcceptRuleId(mark));
        }

        // The policy table's stamp of the same generation and index is not the forward table's.
        Assert.Null(rules.AcceptRuleId(0x0180_0001));
    }

    [Fact]
    public void With_the_firewall_disabled_the_forwarding_table_only_masquerades()
    {
        var map = Map(Route("lan", "10.77.0.0/24", Self));
        map.FirewallRules.Add(new FirewallRule { RuleId = "p1", PeerIp = "100.64.0.5/32", Direction = "in", Action = "accept", Protocol = "tcp", Destination = "10.77.0.0/24" });
        var plan = RoutePlan.From(map, Self, Overlay);
        var script = ForwardingTable.Render("mdl0", Overlay, plan.Served, plan.ForwardRules, filter: false);
        Assert.DoesNotContain("drop", script, StringComparison.Ordinal);
        Assert.DoesNotContain("\"p1\"", script, StringComparison.Ordinal);
        Assert.Contains("masquerade", script, StringComparison.Ordinal);
    }

    [Fact]
    public void Names_from_the_map_cannot_break_out_of_the_nft_script()
    {
        var map = Map(Route("x\" ; flush ruleset ; \"", "10.77.0.0/24", Self));
        var plan = RoutePlan.From(map, Self, Overlay);
        var script = ForwardingTable.Render("mdl0", Overlay, plan.Served, plan.ForwardRules);
        Assert.DoesNotContain("flush ruleset ;", script, StringComparison.Ordinal);
        Assert.Contains("comment \"x_ _ flush ruleset _ _\"", script, StringComparison.Ordinal);
    }

    private static WgKey Key(byte first) => RouteMaps.Key(first);

    private static NetworkMap Map(params Route[] routes) => RouteMaps.Map(routes);

    private static Route Route(string name, string network, WgKey peer, int metric = 9999, bool masquerade = true) => RouteMaps.Route(name, network, peer, metric, masquerade);

    private static RemotePeerInfo Peer(WgKey key, string allowed) => new(key, "p", allowed.Split('/')[0], [IPNetwork.Parse(allowed)], null);
}
