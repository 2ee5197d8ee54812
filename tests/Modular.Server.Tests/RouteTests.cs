using System.Text.Json;
using Dapper;
using Microsoft.Data.Sqlite;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Server.Networks;
using Modular.Server.Store;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>Network resources as routes: validation, storage and migration, which maps carry which routes and route rules, the CLI, and Sync.</summary>
public sealed class RouteTests : StoreTestBase
{
    [Fact]
    public async Task Only_clients_an_accept_policy_lets_reach_a_resource_get_its_route_and_the_routing_peer_gets_route_rules()
    {
        var router = await Register("router");
        var client = await Register("client");
        var other = await Register("other");
        await Store.CreateGroupAsync("clients", default);
        await Store.AddPeerToGroupAsync("clients", "client", default);
        var lan = await Store.CreateResourceAsync(new NewResource("lan", "10.77.0.0/24", "router", Masquerade: false, Metric: 10), default);
        var web = await Store.CreatePolicyAsync(new NewPolicy("lan-web", "clients", null, "lan", "tcp", "80,443", "accept", false), default);
        var no = await Store.CreatePolicyAsync(new NewPolicy("lan-no", "All", null, "lan", "all", null, "drop", false), default);

        var routerMap = await MapFor(router);
        var served = Assert.Single(routerMap.Routes);
        Assert.Equal((lan.Id, "lan", "10.77.0.0/24", 10, false), (served.Id, served.Name, served.Network, served.Metric, served.Masquerade));
        Assert.Equal(router.PublicKey.ToArray(), served.PeerWgPubKey.ToByteArray());
        var routeRules = routerMap.FirewallRules.Where(r => r.Destination.Length > 0).Select(Describe).ToList();
        Assert.Equal(
            new[]
            {
                $"{web.Id} accept tcp in {client.OverlayAddress}/32 -> 10.77.0.0/24 80,443",
                $"{no.Id} drop all in 100.64.0.0/10 -> 10.77.0.0/24 any",
            }.Order(StringComparer.Ordinal),
            routeRules.Order(StringComparer.Ordinal));

        var clientMap = await MapFor(client);
        var route = Assert.Single(clientMap.Routes);
        Assert.Equal(lan.Id, route.Id);
        Assert.Equal(router.PublicKey.ToArray(), route.PeerWgPubKey.ToByteArray());
        Assert.DoesNotContain(clientMap.FirewallRules, r => r.Destination.Length > 0); // route rules live on the routing peer only

        // A drop policy from All does not hand out the route; no accept policy covers "other".
        Assert.Empty((await MapFor(other)).Routes);
    }

    [Fact]
    public async Task An_exit_node_is_a_default_route_for_the_groups_allowed_to_use_it()
    {
        var exit = await Register("exit");
        var laptop = await Register("laptop");
        await Store.CreateGroupAsync("travel", default);
        await Store.AddPeerToGroupAsync("travel", "laptop", default);
        var resource = await Store.CreateResourceAsync(new NewResource("", NetworkResourceRecord.ExitNodeAddress, "exit", ExitNode: true), default);
        Assert.Equal("exit-exit", resource.Name);
        Assert.True(resource.IsExitNode);
        await Store.CreatePolicyAsync(new NewPolicy("out", "travel", null, resource.Name, "all", null, "accept", false), default);

        Assert.Equal("0.0.0.0/0", Assert.Single((await MapFor(laptop)).Routes).Network);
        var exitMap = await MapFor(exit);
        Assert.True(Assert.Single(exitMap.Routes).Masquerade);
        Assert.Contains(exitMap.FirewallRules, r => r.Destination == "0.0.0.0/0" && r.PeerIp == $"{laptop.OverlayAddress}/32" && r.Direction == "in");
    }

    [Fact]
    public async Task A_removed_routing_peer_serves_nothing()
    {
        var router = await Register("router");
        var client = await Register("client");
        await Store.CreateResourceAsync("lan", "10.77.0.0/24", "router", default);
        await Store.CreatePolicyAsync(new NewPolicy("lan", "All", null, "lan", "all", null, "accept", false), default);
        Assert.Single((await MapFor(client)).Routes);
        Assert.Single(await Store.RemovePeersAsync(router.Id, default));
        Assert.Empty((await MapFor(client)).Routes);
    }

    [Fact]
    public async Task Invalid_resources_are_refused_with_the_field_named_and_nothing_stored()
    {
        await Register("router");
        async Task<string> Field(NewResource resource) => (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateResourceAsync(resource, default))).Field;

        Assert.Equal("address", await Field(new NewResource("r", "10.0.0.0/33", "router")));
        Assert.Equal("address", await Field(new NewResource("r", "not-an-ip", "router")));
        Assert.Equal("address", await Field(new NewResource("r", "0.0.0.0/0", "router"))); // only as an exit node
        Assert.Equal("address", await Field(new NewResource("r", "10.0.0.0/24", "router", ExitNode: true)));
        Assert.Equal("address", await Field(new NewResource("r", "fd00::/64", "router"))); // agents route IPv4 only
        Assert.Equal("address", await Field(new NewResource("r", "100.64.0.0/16", "router"))); // inside the overlay
        Assert.Equal("address", await Field(new NewResource("r", "64.0.0.0/2", "router"))); // around the overlay
        Assert.Equal("routing-peer", await Field(new NewResource("r", "10.0.0.0/24", "nobody")));
        Assert.Equal("peer", await Field(new NewResource("", "0.0.0.0/0", "nobody", ExitNode: true)));
        Assert.Equal("metric", await Field(new NewResource("r", "10.0.0.0/24", "router", Metric: 0)));
        Assert.Equal("metric", await Field(new NewResource("r", "10.0.0.0/24", "router", Metric: 10_000)));
        Assert.Equal("name", await Field(new NewResource(" ", "10.0.0.0/24", "router")));
        Assert.Empty(await Store.ListResourcesAsync(default));

        await Store.CreateResourceAsync(new NewResource("r", "10.0.0.0/24", "router"), default);
        Assert.Equal("name", await Field(new NewResource("r", "10.9.0.0/24", "router")));
        Assert.Equal("address", await Field(new NewResource("r2", "10.0.0.7/24", "router"))); // the same prefix from the same peer
        Assert.Single(await Store.ListResourcesAsync(default));
    }

    [Fact]
    public async Task A_version_2_database_migrates_keeping_its_resources_as_masquerading_routes()
    {
        var path = Path.Combine(Dir, "old.db");
        await using (var db = new SqliteConnection($"Data Source={path}"))
        {
            await db.OpenAsync();
            await db.ExecuteAsync(
                """
                CREATE TABLE accounts (id TEXT PRIMARY KEY, network_serial INTEGER NOT NULL, created_at INTEGER NOT NULL);
                INSERT INTO accounts VALUES ('default', 7, 0);
                CREATE TABLE resources (id TEXT PRIMARY KEY, account_id TEXT NOT NULL, name TEXT NOT NULL UNIQUE, address TEXT NOT NULL, routing_peer_id TEXT NOT NULL, created_at INTEGER NOT NULL);
                INSERT INTO resources VALUES ('r1', 'default', 'old-lan', '10.5.0.0/16', 'p1', 0);
                PRAGMA user_version = 2;
                """);
        }

        SqliteConnection.ClearAllPools();
        await using var store = new SqliteStore(path, Time);
        await store.InitializeAsync(default);
        var resource = Assert.Single(await store.ListResourcesAsync(default));
        Assert.Equal(("old-lan", "10.5.0.0/16", true, NetworkResourceRecord.DefaultMetric), (resource.Name, resource.Address, resource.Masquerade, resource.Metric));
        Assert.Equal(7UL, await store.GetNetworkSerialAsync(default));
    }

    [Fact]
    public async Task Cli_creates_routes_and_exit_nodes_lists_them_and_refuses_bad_input_naming_the_field()
    {
        var configPath = Path.Combine(Dir, "server.toml");
        var dataDir = Path.Combine(Dir, "cli");
        File.WriteAllText(configPath, $"""
            listen = "127.0.0.1:0"
            data_dir = "{dataDir}"
            """);
        Shell.Result Cli(string arguments) => Shell.TryRun(Path.Combine(AppContext.BaseDirectory, "modular-server"), $"{arguments} --config {configPath}", TimeSpan.FromSeconds(60));
        Assert.Equal(0, Cli("groups list").ExitCode); // creates the database
        await using (var store = await OpenAdminStoreAsync(dataDir))
        {
            var key = (await store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default)).PlainKey;
            using var identity = X25519KeyPair.Generate();
            await store.RegisterPeerAsync(key, identity.PublicKey, new PeerMetadata("gw", "1.0", "linux", [], [], ""), null, default);
        }

        var created = Cli("resources create office --address 10.20.0.0/24 --routing-peer gw --no-masquerade --metric 20");
        Assert.True(created.ExitCode == 0, created.Error);
        var exit = Cli("routes exit-node gw");
        Assert.True(exit.ExitCode == 0, exit.Error);
        Assert.Contains("exit-gw", exit.Error, StringComparison.Ordinal);
        Assert.Equal(0, Cli("groups create staff").ExitCode);
        Assert.Equal(0, Cli("policies create office-web --source staff --destination-resource office --protocol tcp --ports 443").ExitCode);

        var bad = Cli("resources create everything --address 0.0.0.0/0 --routing-peer gw");
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("address:", bad.Error, StringComparison.Ordinal);
        Assert.Contains("routes exit-node", bad.Error, StringComparison.Ordinal);
        Assert.Contains("routing-peer: no peer 'ghost'", Cli("resources create x --address 10.1.0.0/24 --routing-peer ghost").Error, StringComparison.Ordinal);
        Assert.Contains("metric:", Cli("resources create x --address 10.1.0.0/24 --routing-peer gw --metric 0").Error, StringComparison.Ordinal);
        Assert.Contains("peer: no peer 'ghost'", Cli("routes exit-node ghost").Error, StringComparison.Ordinal);
        Assert.Contains("name: a network resource named 'exit-gw' exists", Cli("routes exit-node gw").Error, StringComparison.Ordinal);

        var list = Cli("routes list --json");
        Assert.True(list.ExitCode == 0, list.Error);
        var routes = JsonDocument.Parse(list.Output).RootElement.EnumerateArray().ToDictionary(r => r.GetProperty("resource").GetString()!);
        Assert.Equal(["exit-gw", "office"], routes.Keys.Order(StringComparer.Ordinal));
        var office = routes["office"];
        Assert.Equal(("10.20.0.0/24", "gw", false, 20, false), (office.GetProperty("network").GetString(), office.GetProperty("routing_peer").GetString(), office.GetProperty("masquerade").GetBoolean(), office.GetProperty("metric").GetInt32(), office.GetProperty("exit_node").GetBoolean()));
        Assert.Equal(["staff"], office.GetProperty("groups").EnumerateArray().Select(g => g.GetString()));
        Assert.True(routes["exit-gw"].GetProperty("exit_node").GetBoolean());
        Assert.Empty(routes["exit-gw"].GetProperty("groups").EnumerateArray());

        var text = Cli("routes list");
        Assert.Contains("0.0.0.0/0 exit", text.Output, StringComparison.Ordinal);
        Assert.Contains("(no accept policy: unused)", text.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Sync_pushes_a_new_route_to_the_client_and_its_rule_to_the_routing_peer_as_deltas()
    {
        var dataDir = Path.Combine(Dir, "server");
        await using var server = await TestServer.StartAsync(dataDir);
        var setupKey = await server.CreateSetupKeyAsync();
        var r = await server.RegisterAgentAsync(setupKey, "router");
        var c = await server.RegisterAgentAsync(setupKey, "client");

        using var cts = new CancellationTokenSource(Wait);
        await using var clientStream = c.SyncAsync(TestServer.Meta("client"), cts.Token).GetAsyncEnumerator(cts.Token);
        await using var routerStream = r.SyncAsync(TestServer.Meta("router"), cts.Token).GetAsyncEnumerator(cts.Token);
        var clientMap = new NetworkMapState();
        var routerMap = new NetworkMapState();
        Assert.True(await clientStream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, clientMap.Apply(clientStream.Current));
        Assert.True(await routerStream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, routerMap.Apply(routerStream.Current));
        Assert.Empty(clientMap.ToMap().Routes);

        await using var admin = await OpenAdminStoreAsync(dataDir);
        await admin.CreateResourceAsync("lan", "10.77.0.0/24", "router", CancellationToken.None);
        var policy = await admin.CreatePolicyAsync(new NewPolicy("lan", "All", null, "lan", "tcp", "80", "accept", false), CancellationToken.None);

        var deltas = 0;
        while (clientMap.ToMap().Routes.Count == 0 && await clientStream.MoveNextAsync())
        {
            deltas += clientStream.Current.NetworkMapDelta is not null ? 1 : 0;
            Assert.Equal(MapUpdateResult.Applied, clientMap.Apply(clientStream.Current));
        }

        Assert.True(deltas > 0, "the change arrived as a delta, not a whole map");
        Assert.Equal("10.77.0.0/24", Assert.Single(clientMap.ToMap().Routes).Network);
        while (!routerMap.ToMap().FirewallRules.Any(x => x.RuleId == policy.Id) && await routerStream.MoveNextAsync())
        {
            Assert.Equal(MapUpdateResult.Applied, routerMap.Apply(routerStream.Current));
        }

        var rule = Assert.Single(routerMap.ToMap().FirewallRules, x => x.RuleId == policy.Id);
        Assert.Equal(("10.77.0.0/24", "100.64.0.0/10", "in"), (rule.Destination, rule.PeerIp, rule.Direction));
        Assert.Single(routerMap.ToMap().Routes);
    }
}
