using System.Text.Json;
using Modular.Control.Management;
using Modular.Server.Networks;
using Modular.Server.Store;
using Modular.Testing;

namespace Modular.Server.Tests;

/// <summary>Nameserver groups: validation with the field named, storage, the map's DNS section, Sync pushing changes, the `dns` CLI.</summary>
public sealed class DnsNameserverTests : StoreTestBase
{
    private static string Executable => Path.Combine(AppContext.BaseDirectory, "modular-server");

    [Theory]
    [InlineData("", "198.18.0.1", null, "name")]
    [InlineData("corp", "", null, "nameserver")]
    [InlineData("corp", "not-an-ip", null, "nameserver")]
    [InlineData("corp", "198.18.0.1:0", null, "nameserver")]
    [InlineData("corp", "198.18.0.1:65536", null, "nameserver")]
    [InlineData("corp", "198.18.0.1:x", null, "nameserver")]
    [InlineData("corp", "198.18.0.1", "bad_.-domain-", "domain")]
    [InlineData("corp", "198.18.0.1", "a..b", "domain")]
    [InlineData("corp", "198.18.0.1", "-corp.test", "domain")]
    public async Task Invalid_input_names_the_field_and_stores_nothing(string name, string nameserver, string? domain, string field)
    {
        var e = await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateNameserverGroupAsync(
            new NewNameserverGroup(name, nameserver.Length == 0 ? [] : [nameserver], domain is null ? [] : [domain]), default));
        Assert.Equal(field, e.Field);
        Assert.Empty(await Store.ListNameserverGroupsAsync(default));
    }

    [Fact]
    public async Task Groups_are_normalized_and_listed_in_creation_order_with_stable_ids()
    {
        var serial = await Store.GetNetworkSerialAsync(default);
        var corp = await Store.CreateNameserverGroupAsync(new NewNameserverGroup(" corp ", ["198.18.0.1", "198.18.0.2:5353", "198.18.0.1:53"], ["Corp.Test.", "lab.corp.test"]), default);
        Assert.Equal("corp", corp.Name);
        Assert.Equal(["198.18.0.1:53", "198.18.0.2:5353"], corp.Nameservers);
        Assert.Equal(["corp.test", "lab.corp.test"], corp.Domains);
        Assert.True(await Store.GetNetworkSerialAsync(default) > serial);

        Time.Advance(TimeSpan.FromSeconds(1));
        var fallback = await Store.CreateNameserverGroupAsync(new NewNameserverGroup("upstream", ["[2001:db8::53]:53", "2001:db8::54"], []), default);
        Assert.True(fallback.IsDefault);
        Assert.Equal(["[2001:db8::53]:53", "[2001:db8::54]:53"], fallback.Nameservers);

        var listed = await Store.ListNameserverGroupsAsync(default);
        Assert.Equal([corp.Id, fallback.Id], listed.Select(g => g.Id));
        Assert.Equal(corp.Nameservers, listed[0].Nameservers);
        Assert.Equal(corp.Domains, listed[0].Domains);
    }

    [Theory]
    [InlineData("198.18.0.1", "198.18.0.1:53")]
    [InlineData(" 198.18.0.1:5353 ", "198.18.0.1:5353")]
    [InlineData("2001:db8::1", "[2001:db8::1]:53")]
    [InlineData("[2001:db8::1]", "[2001:db8::1]:53")]
    [InlineData("[2001:db8::1]:5353", "[2001:db8::1]:5353")]
    [InlineData("100.64.0.7:5353", "100.64.0.7:5353")]
    [InlineData("100.128.0.1", "100.128.0.1:53")]
    public void Nameservers_are_normalized_to_ip_and_port(string input, string expected)
        => Assert.Equal(expected, DnsValidator.ParseNameserver(input));

    [Theory]
    [InlineData("[2001:db8::1]:0")]
    [InlineData("[2001:db8::1]:x")]
    [InlineData("198.18.0.1:")]
    [InlineData("198.18.0")]
    [InlineData("dns.example")]
    [InlineData("[198.18.0.1")]
    [InlineData("100.64.0.7")]
    [InlineData("100.127.255.254:53")]
    public void Bad_nameservers_name_the_field(string input)
        => Assert.Equal("nameserver", Assert.Throws<NetworkValidationException>(() => DnsValidator.ParseNameserver(input)).Field);

    [Fact]
    public async Task A_second_default_group_a_taken_domain_or_name_is_refused()
    {
        await Store.CreateNameserverGroupAsync(new NewNameserverGroup("default", ["198.18.0.1"], []), default);
        await Store.CreateNameserverGroupAsync(new NewNameserverGroup("corp", ["198.18.0.2"], ["corp.test"]), default);
        var serial = await Store.GetNetworkSerialAsync(default);

        Assert.Equal("domain", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateNameserverGroupAsync(new NewNameserverGroup("other", ["198.18.0.3"], []), default))).Field);
        Assert.Equal("domain", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateNameserverGroupAsync(new NewNameserverGroup("corp2", ["198.18.0.3"], ["CORP.test"]), default))).Field);
        Assert.Equal("name", (await Assert.ThrowsAsync<NetworkValidationException>(() => Store.CreateNameserverGroupAsync(new NewNameserverGroup("Corp", ["198.18.0.3"], ["x.test"]), default))).Field);
        Assert.Equal(2, (await Store.ListNameserverGroupsAsync(default)).Count);
        Assert.Equal(serial, await Store.GetNetworkSerialAsync(default));
    }

    [Fact]
    public async Task Remove_by_name_or_id_bumps_the_serial()
    {
        var a = await Store.CreateNameserverGroupAsync(new NewNameserverGroup("a", ["198.18.0.1"], ["a.test"]), default);
        await Store.CreateNameserverGroupAsync(new NewNameserverGroup("b", ["198.18.0.1"], ["b.test"]), default);
        var serial = await Store.GetNetworkSerialAsync(default);
        Assert.True(await Store.DeleteNameserverGroupAsync(a.Id, default));
        Assert.True(await Store.DeleteNameserverGroupAsync("B", default));
        Assert.False(await Store.DeleteNameserverGroupAsync("b", default));
        Assert.Empty(await Store.ListNameserverGroupsAsync(default));
        Assert.True(await Store.GetNetworkSerialAsync(default) > serial);
    }

    [Fact]
    public void A_domain_inside_the_mesh_zone_is_refused()
    {
        var spec = DnsValidator.Validate(new NewNameserverGroup("x", ["198.18.0.1"], ["Lab.Modular.Internal"]));
        Assert.Equal("domain", Assert.Throws<NetworkValidationException>(() => DnsValidator.RefuseZoneDomains(spec, "modular.internal")).Field);
        DnsValidator.RefuseZoneDomains(DnsValidator.Validate(new NewNameserverGroup("y", ["198.18.0.1"], ["notmodular.internal"])), "modular.internal");
    }

    [Fact]
    public async Task Initialize_twice_keeps_the_groups()
    {
        await Store.CreateNameserverGroupAsync(new NewNameserverGroup("a", ["198.18.0.1"], ["a.test"]), default);
        await using var again = new SqliteStore(DbPath, Time);
        await again.InitializeAsync(default);
        Assert.Single(await again.ListNameserverGroupsAsync(default));
    }

    [Fact]
    public async Task Sync_carries_the_zone_and_groups_and_pushes_a_change_in_the_delta_sections()
    {
        var dataDir = Path.Combine(Dir, "server");
        await using var server = await TestServer.StartAsync(dataDir);
        var setupKey = await server.CreateSetupKeyAsync();
        await server.RegisterAgentAsync(setupKey, "alpha");
        var b = await server.RegisterAgentAsync(setupKey, "bravo");

        using var cts = new CancellationTokenSource(Wait);
        await using var stream = b.SyncAsync(TestServer.Meta("bravo"), cts.Token).GetAsyncEnumerator(cts.Token);
        var map = new NetworkMapState();
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        var first = map.ToMap();
        Assert.True(first.Dns.Enabled);
        Assert.Equal(server.Config.Account.DnsDomain, first.Dns.Zone);
        Assert.Empty(first.Dns.NameserverGroups);
        Assert.EndsWith("." + first.Dns.Zone, first.PeerConfig.Fqdn, StringComparison.Ordinal);
        Assert.EndsWith("." + first.Dns.Zone, Assert.Single(first.RemotePeers).Fqdn, StringComparison.Ordinal);

        // Through a second store on the same file, as the admin CLI does it.
        await using var admin = await OpenAdminStoreAsync(dataDir);
        var corp = await admin.CreateNameserverGroupAsync(new NewNameserverGroup("corp", ["198.18.0.1"], ["corp.test"]), CancellationToken.None);
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.NotNull(stream.Current.NetworkMapDelta?.Sections);
        var group = Assert.Single(map.ToMap().Dns.NameserverGroups);
        Assert.Equal(corp.Id, group.Id);
        Assert.Equal(["198.18.0.1:53"], group.Nameservers);
        Assert.Equal(["corp.test"], group.Domains);

        await admin.DeleteNameserverGroupAsync("corp", CancellationToken.None);
        Assert.True(await stream.MoveNextAsync());
        Assert.Equal(MapUpdateResult.Applied, map.Apply(stream.Current));
        Assert.Empty(map.ToMap().Dns.NameserverGroups);
        Assert.Single(map.ToMap().RemotePeers);
    }

    [Fact]
    public void Dns_cli_adds_lists_shows_and_removes_groups_and_names_the_bad_field()
    {
        var config = Path.Combine(Dir, "server.toml");
        File.WriteAllText(config, $"""
            listen = "127.0.0.1:0"
            data_dir = "{Dir}/cli"
            [account]
            dns_domain = "mesh.example"
            """);
        Shell.Result Cli(string arguments) => Shell.TryRun(Executable, $"{arguments} --config {config}", TimeSpan.FromSeconds(60));

        var added = Cli("dns nameservers add --name corp --nameserver 198.18.0.1 --nameserver 198.18.0.2:5353 --domain corp.test --domain Lab.Corp.Test");
        Assert.True(added.ExitCode == 0, added.Error);
        var id = added.Output.Trim();
        Assert.Matches("^[0-9a-f]{12}$", id);

        var bad = Cli("dns nameservers add --name x --nameserver 198.18.0.1:70000");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("nameserver", bad.Error, StringComparison.Ordinal);
        var inZone = Cli("dns nameservers add --name y --nameserver 198.18.0.1 --domain a.mesh.example");
        Assert.NotEqual(0, inZone.ExitCode);
        Assert.Contains("domain", inZone.Error, StringComparison.Ordinal);

        var list = Cli("dns nameservers list --json");
        Assert.Equal(0, list.ExitCode);
        using (var json = JsonDocument.Parse(list.Output))
        {
            var group = Assert.Single(json.RootElement.EnumerateArray());
            Assert.Equal(id, group.GetProperty("id").GetString());
            Assert.Equal(["198.18.0.1:53", "198.18.0.2:5353"], group.GetProperty("nameservers").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal(["corp.test", "lab.corp.test"], group.GetProperty("domains").EnumerateArray().Select(e => e.GetString()));
            Assert.False(group.GetProperty("default").GetBoolean());
        }

        var show = Cli("dns show");
        Assert.Equal(0, show.ExitCode);
        Assert.Contains("zone: mesh.example", show.Output, StringComparison.Ordinal);
        Assert.Contains("REFUSED", show.Output, StringComparison.Ordinal);

        Assert.Equal(0, Cli($"dns nameservers remove {id}").ExitCode);
        Assert.NotEqual(0, Cli("dns nameservers remove corp").ExitCode);
        using var empty = JsonDocument.Parse(Cli("dns nameservers list --json").Output);
        Assert.Empty(empty.RootElement.EnumerateArray());
    }
}
