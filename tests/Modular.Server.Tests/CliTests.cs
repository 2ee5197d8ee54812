using System.Text.Json;
using Modular.Control.Management;
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
        var e = await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => thirdClient.RegisterAsync(key, TestServer.Meta("p3"), CancellationToken.None));
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
            await Assert.ThrowsAsync<Grpc.Core.RpcException>(() => client.RegisterAsync("mdl-wrong-key-marker", TestServer.Meta("x"), CancellationToken.None));
        }

        Shell.Run("kill", $"-TERM {server.Process.Id}");
        Assert.True(server.Process.WaitForExit(20_000), "the server did not stop on SIGTERM");
        Assert.Equal(0, server.Process.ExitCode);
        Assert.DoesNotContain(key, server.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("wrong-key-marker", server.Output, StringComparison.Ordinal);
        Assert.Contains("Registered peer proc", server.Output, StringComparison.Ordinal);
    }
}
