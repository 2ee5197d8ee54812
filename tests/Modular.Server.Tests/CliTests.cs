using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Server.Cli;
using Modular.Server.Store;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>The admin CLI as a real process against the same store a running server uses.</summary>
public sealed class CliTests : IAsyncLifetime
{
    private readonly string _dir = TestServer.NewDataDir();
    private string _configPath = "";

    private static string Executable => Path.Combine(AppContext.BaseDirectory, "modular-server");

    public Task InitializeAsync()
    {
        Directory.CreateDirectory(_dir);
        _configPath = Path.Combine(_dir, "server.toml");
        File.WriteAllText(_configPath, $"""
            listen = "127.0.0.1:0"
            data_dir = "{_dir}/data"
            relay = {"{"} listen = "127.0.0.1:0" {"}"}
            stun = {"{"} listen = "127.0.0.1:0" {"}"}
            """);
        return Task.CompletedTask;
    }

    public Task DisposeAsync()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, recursive: true);
        return Task.CompletedTask;
    }

    private Shell.Result Cli(string arguments) => Shell.TryRun(Executable, $"{arguments} --config {_configPath}", TimeSpan.FromSeconds(60));

    [Fact]
    public async Task Setup_key_with_usage_limit_two_registers_exactly_two_peers()
    {
        var created = Cli("setup-key create --usage-limit 2 --name ci");
        Assert.True(created.ExitCode == 0, created.Error);
        var key = created.Output.Trim();
        Assert.StartsWith("mdl-", key, StringComparison.Ordinal);
        Assert.DoesNotContain(key, created.Error, StringComparison.Ordinal);

        await using var server = await TestServer.StartAsync(Path.Combine(_dir, "data"));
        for (var i = 0; i < 2; i++)
        {
            var (k, client) = server.NewAgent();
            using var _ = k;
            await client.RegisterAsync(key, TestServer.Meta($"p{i}"), CancellationToken.None);
        }

        var (third, thirdClient) = server.NewAgent();
        using var __ = third;
        var e = await Assert.ThrowsAsync<Modular.Control.Management.ManagementRefusedException>(() => thirdClient.RegisterAsync(key, TestServer.Meta("p3"), CancellationToken.None));
        Assert.Equal(Grpc.Core.StatusCode.PermissionDenied, e.StatusCode);

        var list = Cli("setup-key list --json");
        Assert.Equal(0, list.ExitCode);
        Assert.DoesNotContain(key, list.Output, StringComparison.Ordinal);
        var keys = JsonDocument.Parse(list.Output).RootElement;
        Assert.Equal(2, keys[0].GetProperty("used_count").GetInt32());
        Assert.Equal("exhausted", keys[0].GetProperty("state").GetString());
    }

    [Fact]
    public async Task Peers_list_and_remove_work_while_the_server_runs_and_the_server_notices()
    {
        await using var server = await TestServer.StartAsync(Path.Combine(_dir, "data"));
        var setupKey = await server.CreateSetupKeyAsync();
        var (a, clientA) = server.NewAgent();
        var (b, clientB) = server.NewAgent();
        using var _ = a;
        using var __ = b;
        await clientA.RegisterAsync(setupKey, TestServer.Meta("alpha"), CancellationToken.None);
        await clientB.RegisterAsync(setupKey, TestServer.Meta("bravo"), CancellationToken.None);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var stream = clientA.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        var map = new NetworkMapState();
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.Single(map.ToMap().RemotePeers);

        var list = Cli("peers list --json");
        Assert.True(list.ExitCode == 0, list.Error);
        var peers = JsonDocument.Parse(list.Output).RootElement;
        Assert.Equal(2, peers.GetArrayLength());
        Assert.Equal("bravo", peers[1].GetProperty("name").GetString());
        Assert.Equal("100.64.0.2", peers[1].GetProperty("ip").GetString());

        var removed = Cli("peers remove 100.64.0.2");
        Assert.True(removed.ExitCode == 0, removed.Error);
        Assert.Contains("bravo", removed.Output, StringComparison.Ordinal);

        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.Empty(map.ToMap().RemotePeers);

        var missing = Cli("peers remove nobody");
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("no peer matches", missing.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dns_label_takeover_peers_rename_gives_a_peer_another_dns_label_and_every_map_follows()
    {
        await using var server = await TestServer.StartAsync(Path.Combine(_dir, "data"));
        var setupKey = await server.CreateSetupKeyAsync();
        var alpha = await server.RegisterAgentAsync(setupKey, "alpha");
        await server.RegisterAgentAsync(setupKey, "bravo");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await using var stream = alpha.SyncAsync(TestServer.Meta("alpha"), cts.Token).GetAsyncEnumerator(cts.Token);
        var map = new NetworkMapState();
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));

        var renamed = Cli("peers rename bravo db");
        Assert.True(renamed.ExitCode == 0, renamed.Error);
        Assert.Equal("100.64.0.2 is now db.modular.internal", renamed.Output.Trim());
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.Equal("db.modular.internal", Assert.Single(map.ToMap().RemotePeers).Fqdn);

        var taken = Cli("peers rename db alpha");
        Assert.Equal(1, taken.ExitCode);
        Assert.Contains("'alpha' belongs to another peer", taken.Error, StringComparison.Ordinal);
        var malformed = Cli("peers rename db no_such_label");
        Assert.Equal(2, malformed.ExitCode);
        Assert.Contains("not a DNS label", malformed.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_broken_config_is_a_clear_error_naming_line_and_column()
    {
        File.WriteAllText(_configPath, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n");
        var result = Cli("peers list");
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("server.toml:2:1: unknown key 'colour'", result.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_server_runs_as_a_process_serves_agents_never_logs_the_setup_key_and_stops_on_sigterm()
    {
        var key = Cli("setup-key create --name proc").Output.Trim();
        using var server = Shell.Start(Executable, $"--config {_configPath}");
        var deadline = DateTime.UtcNow.AddSeconds(30);
        System.Text.RegularExpressions.Match listening;
        while (!(listening = System.Text.RegularExpressions.Regex.Match(server.Output, @"listening on (http://[0-9.:]+)")).Success)
        {
            Assert.False(server.Process.HasExited, server.Output);
            Assert.True(DateTime.UtcNow < deadline, "the server did not report its address: " + server.Output);
            await Task.Delay(100);
        }

        using (var channel = Grpc.Net.Client.GrpcChannel.ForAddress(listening.Groups[1].Value))
        using (var agent = Modular.Control.Crypto.X25519KeyPair.Generate())
        {
            var client = new ManagementClient(channel, agent);
            var reply = await client.RegisterAsync(key, TestServer.Meta("proc"), CancellationToken.None);
            Assert.Equal("100.64.0.1/10", reply.PeerConfig.Address);
            await Assert.ThrowsAsync<Modular.Control.Management.ManagementRefusedException>(() => client.RegisterAsync("mdl-wrong-key-marker", TestServer.Meta("x"), CancellationToken.None));
        }

        Shell.Run("kill", $"-TERM {server.Process.Id}");
        Assert.True(server.Process.WaitForExit(20_000), "the server did not stop on SIGTERM");
        server.Process.WaitForExit(); // it has exited: this only waits for its output to be read to the end
        Assert.Equal(0, server.Process.ExitCode);
        Assert.DoesNotContain(key, server.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong-key-marker", server.Output, StringComparison.Ordinal);
        Assert.Contains("Registered peer proc", server.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Under_systemd_the_server_says_ready_once_it_listens_and_stopping_on_sigterm()
    {
        // The NOTIFY_SOCKET systemd gives a Type=notify service, held by the test (no systemd needed).
        using var notify = new NotifySocket();
        using var server = Shell.Start(Executable, $"--config {_configPath}", new Dictionary<string, string> { [NotifySocket.Variable] = notify.Path });

        Assert.Equal("READY=1", await notify.ReceiveAsync(TimeSpan.FromSeconds(60)));
        // Ready means listening: the address is logged before READY=1, and a gRPC call is answered at once.
        var listening = System.Text.RegularExpressions.Regex.Match(server.Output, @"listening on (http://[0-9.:]+)");
        Assert.True(listening.Success, server.Output);
        using (var channel = Grpc.Net.Client.GrpcChannel.ForAddress(listening.Groups[1].Value))
        using (var agent = X25519KeyPair.Generate())
        {
            await Assert.ThrowsAsync<ManagementRefusedException>(() => new ManagementClient(channel, agent).LoginAsync(TestServer.Meta("nobody"), CancellationToken.None));
        }

        Shell.Run("kill", $"-TERM {server.Process.Id}");
        Assert.Equal("STOPPING=1", await notify.ReceiveAsync(TimeSpan.FromSeconds(30)));
        Assert.True(server.Process.WaitForExit(20_000), "the server did not stop on SIGTERM");
        Assert.Equal(0, server.Process.ExitCode);
    }

    [Fact]
    public void A_usage_error_exits_2_and_says_what_was_expected_for_any_option()
    {
        var type = Cli("setup-key create --usage-limit abc");
        Assert.Equal(2, type.ExitCode);
        Assert.Contains("--usage-limit: expected an integer, got 'abc'", type.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", type.Error, StringComparison.Ordinal);

        // Another command's option, with no code of its own for it.
        var metric = Cli("resources create lan --address 10.9.0.0/24 --routing-peer gw --metric high");
        Assert.Equal(2, metric.ExitCode);
        Assert.Contains("--metric: expected an integer, got 'high'", metric.Error, StringComparison.Ordinal);

        Assert.Equal(2, Cli("no-such-command").ExitCode);
        Assert.Equal(2, Cli("peers list --no-such-option").ExitCode);
        var missing = Cli("groups add-peer web");
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("modular-server --help", missing.Error, StringComparison.Ordinal);

        // Nothing was opened for a command line that could not be used.
        Assert.False(Directory.Exists(Path.Combine(_dir, "data")));

        // A malformed value only the command understands is a usage error too.
        var expires = Cli("setup-key create --expires soon");
        Assert.Equal(2, expires.ExitCode);
        Assert.Contains("--expires: expected a duration such as 24h or 7d, got 'soon'", expires.Error, StringComparison.Ordinal);

        // A command that ran and failed is 1.
        var nobody = Cli("peers remove nobody");
        Assert.Equal(1, nobody.ExitCode);
        Assert.Contains("no peer matches 'nobody'", nobody.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void Help_says_that_no_command_runs_the_server()
    {
        var help = Shell.TryRun(Executable, "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("Without a command, runs the server", help.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Without_a_config_an_admin_command_refuses_when_no_store_exists_and_creates_none()
    {
        Assert.True(string.IsNullOrEmpty(Environment.GetEnvironmentVariable("MODULAR_CONFIG")), "this test needs MODULAR_CONFIG unset");
        var defaults = new CliDefaults(Path.Combine(_dir, "absent.toml"), Path.Combine(_dir, "default-data"));
        var database = Path.Combine(defaults.DataDir, "modular.db");
        var error = new StringWriter();
        var before = Console.Error;
        int exit;
        Console.SetError(error);
        try
        {
            exit = await ServerCli.RunAsync(["setup-key", "create", "--name", "lost"], defaults);
        }
        finally
        {
            Console.SetError(before);
        }

        Assert.Equal(1, exit);
        Assert.Contains($"no store at {database}: pass --config server.toml (the running server's config)", error.ToString(), StringComparison.Ordinal);
        Assert.False(Directory.Exists(defaults.DataDir));

        // Where a store exists (the server made it), the same command uses it.
        await using (var store = new SqliteStore(database))
        {
            await store.InitializeAsync(CancellationToken.None);
        }

        Assert.Equal(0, await ServerCli.RunAsync(["setup-key", "list"], defaults));
    }

    [Fact]
    public void A_store_that_cannot_be_opened_is_one_line_and_exit_1()
    {
        // Not a database: what a disk mix-up or a half-copied backup leaves behind.
        Directory.CreateDirectory(Path.Combine(_dir, "data"));
        File.WriteAllText(Path.Combine(_dir, "data", "modular.db"), new string('x', 8192));
        var server = Shell.TryRun(Executable, $"--config {_configPath}", TimeSpan.FromSeconds(60));
        Assert.Equal(1, server.ExitCode);
        Assert.Contains($"cannot open the store {_dir}/data/modular.db: ", server.Output + server.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", server.Output + server.Error, StringComparison.Ordinal);

        var admin = Cli("setup-key list");
        Assert.Equal(1, admin.ExitCode);
        Assert.Contains($"cannot open the store {_dir}/data/modular.db: ", admin.Error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_taken_port_is_one_line_naming_the_component_and_the_address_and_exit_1()
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var relayPort = ((IPEndPoint)udp.LocalEndPoint!).Port;
        File.WriteAllText(_configPath, $"""
            listen = "127.0.0.1:0"
            data_dir = "{_dir}/data"
            relay = {"{"} listen = "127.0.0.1:{relayPort}" {"}"}
            stun = {"{"} listen = "127.0.0.1:0" {"}"}
            """);
        var relay = Shell.TryRun(Executable, $"--config {_configPath}", TimeSpan.FromSeconds(60));
        Assert.Equal(1, relay.ExitCode);
        Assert.Contains($"relay: cannot listen on 127.0.0.1:{relayPort}: address already in use", relay.Output + relay.Error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", relay.Output + relay.Error, StringComparison.Ordinal);

        var tcp = new TcpListener(IPAddress.Loopback, 0);
        tcp.Start();
        try
        {
            var grpcPort = ((IPEndPoint)tcp.LocalEndpoint).Port;
            File.WriteAllText(_configPath, $"""
                listen = "127.0.0.1:{grpcPort}"
                data_dir = "{_dir}/data"
                relay = {"{"} listen = "127.0.0.1:0" {"}"}
                stun = {"{"} listen = "127.0.0.1:0" {"}"}
                """);
            var grpc = Shell.TryRun(Executable, $"--config {_configPath}", TimeSpan.FromSeconds(60));
            Assert.Equal(1, grpc.ExitCode);
            Assert.Contains($"management/signal/flow: cannot listen on 127.0.0.1:{grpcPort}: address already in use", grpc.Output + grpc.Error, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", grpc.Output + grpc.Error, StringComparison.Ordinal);
        }
        finally
        {
            tcp.Stop();
        }
    }

    [Fact]
    public void Setup_key_names_are_unique_revoke_says_what_it_revoked_and_usage_limit_0_is_unlimited_either_way()
    {
        Assert.Equal(0, Cli("setup-key create --name ci").ExitCode);
        var duplicate = Cli("setup-key create --name ci --reusable");
        Assert.Equal(1, duplicate.ExitCode);
        Assert.Contains("a setup key named 'ci' exists already", duplicate.Error, StringComparison.Ordinal);
        Assert.Equal("", duplicate.Output.Trim());

        Assert.Equal(0, Cli("setup-key create --name zero --usage-limit 0").ExitCode);
        Assert.Equal(0, Cli("setup-key create --name zero-reusable --usage-limit 0 --reusable").ExitCode);
        var keys = JsonDocument.Parse(Cli("setup-key list --json").Output).RootElement;
        Assert.Equal(["ci", "zero", "zero-reusable"], keys.EnumerateArray().Select(k => k.GetProperty("name").GetString()));
        foreach (var zero in keys.EnumerateArray().Skip(1))
        {
            Assert.True(zero.GetProperty("reusable").GetBoolean());
            Assert.Equal(0, zero.GetProperty("usage_limit").GetInt32());
        }

        var ciId = keys[0].GetProperty("id").GetString();
        var revoked = Cli("setup-key revoke ci");
        Assert.True(revoked.ExitCode == 0, revoked.Error);
        Assert.Equal($"revoked {ciId} 'ci'", revoked.Output.Trim());
        Assert.Equal("revoked", JsonDocument.Parse(Cli("setup-key list --json").Output).RootElement[0].GetProperty("state").GetString());
        Assert.Equal($"{ciId} 'ci' was already revoked", Cli($"setup-key revoke {ciId}").Output.Trim());
    }

    [Fact]
    public async Task Json_keeps_base64_keys_verbatim_and_a_peer_is_named_by_its_full_name_in_the_zone()
    {
        await using var server = await TestServer.StartAsync(Path.Combine(_dir, "data"));
        var setupKey = await server.CreateSetupKeyAsync();
        // A public key with both characters JSON encoders like to escape.
        var key = X25519KeyPair.Generate();
        while (!(key.PublicKey.ToBase64().Contains('+', StringComparison.Ordinal) && key.PublicKey.ToBase64().Contains('/', StringComparison.Ordinal)))
        {
            key.Dispose();
            key = X25519KeyPair.Generate();
        }

        var alphaKey = key.PublicKey.ToBase64();
        using (key)
        {
            await new ManagementClient(server.Channel(), key).RegisterAsync(setupKey, TestServer.Meta("alpha"), CancellationToken.None);
        }

        await server.RegisterAgentAsync(setupKey, "bravo");

        var list = Cli("peers list --json");
        Assert.True(list.ExitCode == 0, list.Error);
        Assert.Contains($"\"public_key\": \"{alphaKey}\"", list.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("\\u002B", list.Output, StringComparison.Ordinal);

        Assert.Equal(0, Cli("groups create web").ExitCode);
        var added = Cli("groups add-peer web alpha.modular.internal");
        Assert.True(added.ExitCode == 0, added.Error);
        Assert.Equal("added", added.Output.Trim());
        Assert.Equal("already a member", Cli("groups add-peer web Alpha.Modular.Internal.").Output.Trim());
        var otherZone = Cli("groups add-peer web alpha.example.com");
        Assert.Equal(2, otherZone.ExitCode);
        Assert.Contains("no peer 'alpha.example.com'", otherZone.Error, StringComparison.Ordinal);

        var exit = Cli("routes exit-node alpha.modular.internal");
        Assert.True(exit.ExitCode == 0, exit.Error);
        Assert.Contains("exit-alpha", exit.Error, StringComparison.Ordinal);

        var removed = Cli("peers remove bravo.modular.internal");
        Assert.True(removed.ExitCode == 0, removed.Error);
        Assert.StartsWith("removed bravo 100.64.0.2", removed.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Flows_list_prints_stored_flows_by_peer_and_time_as_text_and_json()
    {
        var now = DateTimeOffset.UtcNow;
        var recent = FlowSamples.Tcp(now, 2, Abstractions.Flows.FlowEventType.End, rxBytes: 6000, txBytes: 4000);
        var icmp = FlowSamples.Tcp(now, 0, Abstractions.Flows.FlowEventType.Drop) with { Protocol = 1, SourcePort = 0, DestinationPort = 0, IcmpType = 8, RuleId = "deny-ping" };
        var store = new SqliteStore(Path.Combine(_dir, "data", "modular.db"));
        await using (store)
        {
            await store.InitializeAsync(CancellationToken.None);
            var (_, setupKey) = await store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), CancellationToken.None);
            using var alphaKey = X25519KeyPair.Generate();
            using var bravoKey = X25519KeyPair.Generate();
            var alpha = await store.RegisterPeerAsync(setupKey, alphaKey.PublicKey, new PeerMetadata("alpha", "1.0", "linux", [], [], ""), null, CancellationToken.None);
            var bravo = await store.RegisterPeerAsync(setupKey, bravoKey.PublicKey, new PeerMetadata("bravo", "1.0", "linux", [], [], ""), null, CancellationToken.None);
            await store.AddFlowEventsAsync(alpha.Id, [FlowSamples.Tcp(now - TimeSpan.FromHours(1), 1), recent], DateTimeOffset.UnixEpoch, CancellationToken.None);
            await store.AddFlowEventsAsync(bravo.Id, [icmp], DateTimeOffset.UnixEpoch, CancellationToken.None);
        }

        var all = Cli("flows list");
        Assert.True(all.ExitCode == 0, all.Error);
        var lines = all.Output.Trim().Split('\n');
        Assert.Equal(4, lines.Length);
        Assert.StartsWith("TIME", lines[0], StringComparison.Ordinal);
        Assert.Matches(@"^\S+Z +alpha +start +out +tcp +100\.64\.0\.1:40001 +100\.64\.0\.2:22 +1/60 +1/40 +policy-1$", lines[1]);
        Assert.Contains(lines, l => System.Text.RegularExpressions.Regex.IsMatch(l, @" bravo +drop +out +icmp +100\.64\.0\.1 +100\.64\.0\.2 type 8/0 .* deny-ping$"));

        var alphaRecent = Cli("flows list --peer alpha --since 10m --json");
        Assert.True(alphaRecent.ExitCode == 0, alphaRecent.Error);
        var json = JsonDocument.Parse(alphaRecent.Output).RootElement;
        var only = Assert.Single(json.EnumerateArray());
        Assert.Equal(recent.Id.ToString("D"), only.GetProperty("id").GetString());
        Assert.Equal("alpha", only.GetProperty("peer").GetString());
        Assert.Equal("100.64.0.1", only.GetProperty("peer_ip").GetString());
        Assert.Equal("end", only.GetProperty("type").GetString());
        Assert.Equal("tcp", only.GetProperty("protocol").GetString());
        Assert.Equal(40002, only.GetProperty("source_port").GetInt32());
        Assert.Equal(6000UL, only.GetProperty("rx_bytes").GetUInt64());
        Assert.Equal(4000UL, only.GetProperty("tx_bytes").GetUInt64());

        // By overlay IP too; an unknown peer is a failure, a malformed duration a usage error.
        Assert.Single(JsonDocument.Parse(Cli("flows list --peer 100.64.0.2 --json").Output).RootElement.EnumerateArray());
        var unknown = Cli("flows list --peer nobody");
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("no peer matches 'nobody'", unknown.Error, StringComparison.Ordinal);
        var badSince = Cli("flows list --since soon");
        Assert.Equal(2, badSince.ExitCode);
        Assert.Contains("--since", badSince.Error, StringComparison.Ordinal);
    }
}
