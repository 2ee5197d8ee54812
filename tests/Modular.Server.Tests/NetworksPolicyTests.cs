using System.Text.Json;
using Modular.Control.Management;
using Modular.Server.Management;
using Modular.Server.Networks;
using Modular.Server.Store;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>Groups, access policies, network resources: validation, storage, and the firewall rules each peer's map carries.</summary>
public sealed class NetworksPolicyTests : StoreTestBase
{
    [Fact]
    public async Task A_new_account_has_the_All_group_and_a_default_policy_letting_everyone_reach_everyone()
    {
        var a = await Register("alpha");
        var b = await Register("bravo");
        var all = Assert.Single(await Store.ListGroupsAsync(default));
        Assert.Equal(GroupRecord.AllGroupName, all.Name);
        Assert.True(all.IsBuiltIn);
        Assert.Equal([a.Id, b.Id], all.PeerIds);
        var policy = Assert.Single(await Store.ListPoliciesAsync(default));
        Assert.Equal(PolicyRecord.DefaultPolicyId, policy.Id);
        Assert.True(policy.Bidirectional);

        var rules = await RulesFor(a);
        Assert.Equal(["default accept all in 100.64.0.0/10 any", "default accept all out 100.64.0.0/10 any"], rules);
    }

    [Fact]
    public async Task Removing_the_default_policy_isolates_every_peer()
    {
        var a = await Register("alpha");
        await Register("bravo");
        Assert.True(await Store.DeletePolicyAsync("Default", default));
        Assert.Empty(await RulesFor(a));
    }

    [Fact]
    public async Task A_group_policy_gives_the_destination_inbound_and_the_source_outbound_rules_with_peer_ips()
    {
        var client = await Register("client");
        var web = await Register("web");
        var other = await Register("other");
        await Store.DeletePolicyAsync("Default", default);
        await Store.CreateGroupAsync("clients", default);
        await Store.CreateGroupAsync("servers", default);
        Assert.True(await Store.AddPeerToGroupAsync("clients", "client", default));
        Assert.True(await Store.AddPeerToGroupAsync("servers", web.OverlayAddress.ToString(), default));
        Assert.False(await Store.AddPeerToGroupAsync("servers", "web", default));
        var policy = await Store.CreatePolicyAsync(new NewPolicy("web-in", "clients", "servers", null, "tcp", "443,80,8000-8100", "accept", false), default);

        Assert.Equal([$"{policy.Id} accept tcp in {client.OverlayAddress}/32 80,443,8000-8100"], await RulesFor(web));
        Assert.Equal([$"{policy.Id} accept tcp out {web.OverlayAddress}/32 80,443,8000-8100"], await RulesFor(client));
        Assert.Empty(await RulesFor(other));

        // Bidirectional also lets the destination side open connections to the source side.
        var both = await Store.CreatePolicyAsync(new NewPolicy("ping-both", "clients", "servers", null, "icmp", null, "accept", true), default);
        Assert.Contains($"{both.Id} accept icmp in {web.OverlayAddress}/32 any", await RulesFor(client));
        Assert.Contains($"{both.Id} accept icmp out {client.OverlayAddress}/32 any", await RulesFor(web));

        // Leaving the group takes the rules away.
        Assert.True(await Store.RemovePeerFromGroupAsync("servers", "web", default));
        Assert.Empty(await RulesFor(web));
    }

    [Theory]
    [InlineData("tcp", "0", "ports")]
    [InlineData("tcp", "65536", "ports")]
    [InlineData("tcp", "100-90", "ports")]
    [InlineData("tcp", "1-10001", "ports")]
    [InlineData("tcp", "1-5000,6000-11001", "ports")]
    [InlineData("tcp", "80,,81", "ports")]
    [InlineData("tcp", "http", "ports")]
    [InlineData("tcp", "-5", "ports")]
    [InlineData("gre", "", "protocol")]
    [InlineData("icmp", "80", "ports")]
    public async Task Hostile_policy_input_is_refused_naming_the_field_and_nothing_is_stored(string protocol, string ports, string field)
    {
        var serial = await Store.GetNetworkSerialAsync(default);
        var e = await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreatePolicyAsync(new NewPolicy("bad", "All", "All", null, protocol, ports, "accept", false), default));
        Assert.Equal(field, e.Field);
        Assert.StartsWith(field + ":", e.Message, StringComparison.Ordinal);
        Assert.Single(await Store.ListPoliciesAsync(default));
        Assert.Equal(serial, await Store.GetNetworkSerialAsync(default));
    }

    [Fact]
    public async Task Unknown_groups_actions_and_names_are_refused_naming_the_field()
    {
        await Register("alpha");
        async Task<string> Field(NewPolicy p) => (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreatePolicyAsync(p, default))).Field;
        Assert.Equal("source", await Field(new NewPolicy("x", "nope", "All", null, "all", null, "accept", false)));
        Assert.Equal("destination", await Field(new NewPolicy("x", "All", "nope", null, "all", null, "accept", false)));
        Assert.Equal("destination", await Field(new NewPolicy("x", "All", null, null, "all", null, "accept", false)));
        Assert.Equal("destination-resource", await Field(new NewPolicy("x", "All", null, "nope", "all", null, "accept", false)));
        Assert.Equal("action", await Field(new NewPolicy("x", "All", "All", null, "all", null, "reject", false)));
        Assert.Equal("name", await Field(new NewPolicy("", "All", "All", null, "all", null, "accept", false)));
        Assert.Equal("name", await Field(new NewPolicy("Default", "All", "All", null, "all", null, "accept", false)));
        Assert.Single(await Store.ListPoliciesAsync(default));

        Assert.Equal("group", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.AddPeerToGroupAsync("nope", "alpha", default))).Field);
        Assert.Equal("group", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.AddPeerToGroupAsync("All", "alpha", default))).Field);
        await Store.CreateGroupAsync("g", default);
        Assert.Equal("peer", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.AddPeerToGroupAsync("g", "nobody", default))).Field);
        Assert.Equal("name", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateGroupAsync("g", default))).Field);
        Assert.Equal("group", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.DeleteGroupAsync("All", default))).Field);
        Assert.Equal("address", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateResourceAsync("r", "10.0.0.0/33", "alpha", default))).Field);
        Assert.Equal("routing-peer", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateResourceAsync("r", "10.0.0.0/24", "nobody", default))).Field);
        Assert.Empty(await Store.ListResourcesAsync(default));
    }

    [Fact]
    public async Task Groups_and_resources_in_use_cannot_be_deleted_and_resources_normalise_their_address()
    {
        await Register("router");
        await Store.CreateGroupAsync("ops", default);
        var resource = await Store.CreateResourceAsync("lan", "10.1.2.3/24", "router", default);
        Assert.Equal("10.1.2.0/24", resource.Address);
        await Store.CreatePolicyAsync(new NewPolicy("ops-lan", "ops", null, "lan", "tcp", "22", "accept", false), default);
        Assert.Equal("group", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.DeleteGroupAsync("ops", default))).Field);
        Assert.Equal("resource", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.DeleteResourceAsync("lan", default))).Field);
        Assert.True(await Store.DeletePolicyAsync("ops-lan", default));
        Assert.True(await Store.DeleteResourceAsync("lan", default));
        Assert.True(await Store.DeleteGroupAsync("ops", default));
        Assert.False(await Store.DeleteGroupAsync("ops", default));
    }

    [Fact]
    public async Task Groups_and_policies_survive_reopening_and_the_default_is_not_recreated_once_deleted()
    {
        var peer = await Register("alpha");
        await Store.CreateGroupAsync("ops", default);
        await Store.AddPeerToGroupAsync("ops", "alpha", default);
        await Store.CreatePolicyAsync(new NewPolicy("ops-ssh", "All", "ops", null, "tcp", "22", "accept", false), default);
        await Store.DeletePolicyAsync(PolicyRecord.DefaultPolicyId, default);
        await ReopenStoreAsync();
        var policy = Assert.Single(await Store.ListPoliciesAsync(default));
        Assert.Equal("ops-ssh", policy.Name);
        Assert.Equal([new PortSpan(22, 22)], policy.Ports);
        Assert.Equal([peer.Id], (await Store.ListGroupsAsync(default)).Single(g => g.Name == "ops").PeerIds);

        // Removing the peer removes it from its groups.
        await Store.RemovePeersAsync("alpha", default);
        Assert.Empty((await Store.ListGroupsAsync(default)).Single(g => g.Name == "ops").PeerIds);
    }

    [Fact]
    public void Port_lists_are_sorted_and_merged()
    {
        Assert.Equal("22,80-90,443", PortSpan.Format(PolicyValidator.ParsePorts(" 443, 85-90,80-86 ,22")));
        Assert.Empty(PolicyValidator.ParsePorts(""));
        Assert.Equal(10_000, PolicyValidator.ParsePorts("1-10000").Sum(p => p.Count));
    }

    [Fact]
    public void In_a_large_group_each_member_gets_one_rule_per_other_member_and_outsiders_none()
    {
        var peers = Enumerable.Range(0, 600).Select(i => new PeerRecord(
            $"p{i}", default, $"h{i}", $"h{i}", OverlayNetwork.FirstHost + (uint)i, DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch, "1", "linux", [], [], "", null, "k")).ToList();
        var members = peers.Take(500).Select(p => p.Id).ToList();
        var set = new PolicySet(
            [new GroupRecord(GroupRecord.AllGroupId, GroupRecord.AllGroupName, true, [.. peers.Select(p => p.Id)], DateTimeOffset.UnixEpoch), new GroupRecord("g", "team", false, members, DateTimeOffset.UnixEpoch)],
            [new PolicyRecord("team-ssh", "team-ssh", "g", "g", null, PolicyProtocol.Tcp, [new PortSpan(22, 22)], PolicyAction.Accept, false, DateTimeOffset.UnixEpoch)],
            []);
        var snapshot = new NetworkSnapshot(1, peers, set);
        var first = set.RulesFor(peers[0], snapshot.Peers);
        Assert.Equal(499, first.Count(r => r.Direction == "in"));
        Assert.Equal(499, first.Count(r => r.Direction == "out"));
        Assert.DoesNotContain(first, r => r.PeerIp == $"{peers[0].OverlayAddress}/32");
        Assert.Contains(set.RulesFor(peers[499], snapshot.Peers), r => r.PeerIp == $"{peers[0].OverlayAddress}/32" && r.Direction == "in");
        Assert.Empty(set.RulesFor(peers[550], snapshot.Peers));
    }

    [Fact]
    public async Task Sync_carries_the_rules_and_pushes_new_ones_when_a_policy_changes()
    {
        var dataDir = Path.Combine(Dir, "server");
        await using var server = await TestServer.StartAsync(dataDir);
        var setupKey = await server.CreateSetupKeyAsync();
        await server.RegisterAgentAsync(setupKey, "alpha");
        var b = await server.RegisterAgentAsync(setupKey, "bravo");

        using var cts = new CancellationTokenSource(Wait);
        await using var stream = b.SyncAsync(TestServer.Meta("bravo"), cts.Token).GetAsyncEnumerator(cts.Token);
        // Maps after the first arrive as deltas; rule changes travel in their sections.
        var map = new NetworkMapState();
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.Equal(2, map.ToMap().FirewallRules.Count);

        // Changes through a second store on the same file, as the admin CLI makes them.
        await using var admin = await OpenAdminStoreAsync(dataDir);
        await admin.DeletePolicyAsync("Default", CancellationToken.None);
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.NotNull(stream.Current.NetworkMapDelta.Sections);
        Assert.Empty(map.ToMap().FirewallRules);

        await admin.CreateGroupAsync("web", CancellationToken.None);
        await admin.AddPeerToGroupAsync("web", "bravo", CancellationToken.None);
        var policy = await admin.CreatePolicyAsync(new NewPolicy("to-web", "All", "web", null, "tcp", "80", "accept", false), CancellationToken.None);
        FirewallRule? rule = null;
        while (rule is null && await stream.MoveNextAsync())
        {
            Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
            rule = map.ToMap().FirewallRules.SingleOrDefault(r => r.RuleId == policy.Id);
        }

        Assert.NotNull(rule);
        Assert.Equal("in", rule.Direction);
        Assert.Equal("100.64.0.0/10", rule.PeerIp);
        Assert.Equal("tcp", rule.Protocol);
        Assert.Equal("accept", rule.Action);
        var range = Assert.Single(rule.PortRanges);
        Assert.Equal((80u, 80u), (range.Start, range.End));
    }

    [Fact]
    public async Task Cli_manages_groups_and_policies_and_refuses_hostile_ports_with_the_field_named()
    {
        var configPath = Path.Combine(Dir, "server.toml");
        File.WriteAllText(configPath, $"""
            listen = "127.0.0.1:0"
            data_dir = "{Dir}/cli"
            """);
        Shell.Result Cli(string arguments) => Shell.TryRun(Path.Combine(AppContext.BaseDirectory, "modular-server"), $"{arguments} --config {configPath}", TimeSpan.FromSeconds(60));

        Assert.Equal(0, Cli("groups create web").ExitCode);
        var badPorts = Cli("policies create bad --source All --destination web --protocol tcp --ports 80,0");
        Assert.Equal(2, badPorts.ExitCode);
        Assert.Contains("ports: port 0", badPorts.Error, StringComparison.Ordinal);
        var badGroup = Cli("policies create bad --source nope --destination web");
        Assert.Equal(2, badGroup.ExitCode);
        Assert.Contains("source: no group 'nope'", badGroup.Error, StringComparison.Ordinal);

        var created = Cli("policies create web-in --source All --destination web --protocol tcp --ports 80,443,8000-8100 --action accept --bidirectional");
        Assert.True(created.ExitCode == 0, created.Error);
        var list = Cli("policies list --json");
        Assert.True(list.ExitCode == 0, list.Error);
        var policies = JsonDocument.Parse(list.Output).RootElement;
        Assert.Equal(2, policies.GetArrayLength());
        var webIn = policies.EnumerateArray().Single(p => p.GetProperty("name").GetString() == "web-in");
        Assert.Equal(created.Output.Trim(), webIn.GetProperty("id").GetString());
        Assert.Equal("80,443,8000-8100", webIn.GetProperty("ports").GetString());
        Assert.Equal("web", webIn.GetProperty("destination").GetString());
        Assert.True(webIn.GetProperty("bidirectional").GetBoolean());

        var groups = JsonDocument.Parse(Cli("groups list --json").Output).RootElement;
        Assert.Equal(["All", "web"], groups.EnumerateArray().Select(g => g.GetProperty("name").GetString()));
        Assert.Equal(2, Cli("groups delete web").ExitCode);
        Assert.Equal(0, Cli("policies delete web-in").ExitCode);
        Assert.Equal(0, Cli("groups delete web").ExitCode);
        Assert.Equal(2, Cli("groups add-peer web nobody").ExitCode);
    }

    private async Task<IReadOnlyList<string>> RulesFor(PeerRecord self)
        => [.. (await MapFor(self)).FirewallRules.Select(Describe).Order(StringComparer.Ordinal)];
}
