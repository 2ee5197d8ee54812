using Modular.Control.Crypto;
using Modular.Server.Store;

namespace Modular.Server.Tests;

public sealed class StoreTests : StoreTestBase
{
    private static PeerMetadata Meta(string host) => new(host, "1.0", "linux", ["lazy"], [], "");

    private static Modular.Abstractions.WireGuard.WgKey NewKey()
    {
        using var k = X25519KeyPair.Generate();
        return k.PublicKey;
    }

    [Fact]
    public async Task Peers_and_keys_survive_reopening_the_database()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var key = NewKey();
        var peer = await Store.RegisterPeerAsync(plain, key, Meta("alpha"), null, default);
        var serial = await Store.GetNetworkSerialAsync(default);
        await ReopenStoreAsync();
        var again = await Store.GetPeerAsync(key, default);
        Assert.NotNull(again);
        Assert.Equal(peer.OverlayIp, again.OverlayIp);
        Assert.Equal("alpha", again.Hostname);
        Assert.Equal(serial, await Store.GetNetworkSerialAsync(default));
        Assert.Single(await Store.ListSetupKeysAsync(default));
        Assert.Equal(1, (await Store.ListSetupKeysAsync(default))[0].UsedCount);
    }

    [Fact]
    public async Task Many_processes_opening_one_fresh_database_at_once_migrate_it_exactly_once()
    {
        // The server and an admin command started together on a new data_dir used to both run the migrations
        // (each read the schema version before taking the write lock): one then died on "duplicate column name".
        for (var round = 0; round < 5; round++)
        {
            var dir = TestServer.NewDataDir();
            try
            {
                var stores = Enumerable.Range(0, 8).Select(_ => new SqliteStore(Path.Combine(dir, "modular.db"))).ToList();
                await Task.WhenAll(stores.Select(s => Task.Run(() => s.InitializeAsync(CancellationToken.None))));
                Assert.Single(await stores[0].ListGroupsAsync(default));
                Assert.Single(await stores[0].ListPoliciesAsync(default));
                foreach (var store in stores)
                {
                    await store.DisposeAsync();
                }
            }
            finally
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Fact]
    public async Task Database_file_is_private()
    {
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(DbPath));
    }

    [Fact]
    public async Task Addresses_are_lowest_free_unique_and_stable()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var keys = Enumerable.Range(0, 5).Select(_ => NewKey()).ToList();
        var ips = new List<string>();
        foreach (var (key, i) in keys.Select((k, i) => (k, i)))
        {
            ips.Add((await Store.RegisterPeerAsync(plain, key, Meta($"h{i}"), null, default)).OverlayAddress.ToString());
        }

        Assert.Equal(["100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.5"], ips);

        // Re-registering keeps the address.
        Assert.Equal("100.64.0.3", (await Store.RegisterPeerAsync(plain, keys[2], Meta("h2"), null, default)).OverlayAddress.ToString());

        // A freed address is reused by the next newcomer, the others stay where they are.
        await Store.RemovePeersAsync("100.64.0.2", default);
        var newcomer = await Store.RegisterPeerAsync(plain, NewKey(), Meta("new"), null, default);
        Assert.Equal("100.64.0.2", newcomer.OverlayAddress.ToString());
        var all = await Store.ListPeersAsync(default);
        Assert.Equal(all.Count, all.Select(p => p.OverlayIp).Distinct().Count());
        Assert.Equal("100.64.0.4", all.Single(p => p.PublicKey == keys[3]).OverlayAddress.ToString());
    }

    [Fact]
    public async Task Duplicate_hostnames_get_distinct_dns_labels()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var a = await Store.RegisterPeerAsync(plain, NewKey(), Meta("Web Server"), null, default);
        var b = await Store.RegisterPeerAsync(plain, NewKey(), Meta("web-server"), null, default);
        Assert.Equal("web-server", a.DnsLabel);
        Assert.Equal("web-server-2", b.DnsLabel);
    }

    [Fact]
    public async Task A_collision_suffix_keeps_a_long_label_within_63_characters()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var name = new string('a', 70);
        var labels = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            labels.Add((await Store.RegisterPeerAsync(plain, NewKey(), Meta(name), null, default)).DnsLabel);
        }

        Assert.Equal([new string('a', 63), new string('a', 61) + "-2", new string('a', 61) + "-3"], labels);
    }

    [Fact]
    public async Task Removing_by_a_name_two_peers_share_removes_neither_and_names_both()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        await Store.RegisterPeerAsync(plain, NewKey(), Meta("web"), null, default);
        await Store.RegisterPeerAsync(plain, NewKey(), Meta("web"), null, default);

        var e = await Assert.ThrowsAsync<AmbiguousPeerException>(() => Store.RemovePeersAsync("web", default));
        Assert.Equal("'web' matches 2 peers: web (100.64.0.1), web-2 (100.64.0.2); name one by its DNS label, overlay IP or public key", e.Message);
        Assert.Equal(2, (await Store.ListPeersAsync(default)).Count);
        Assert.Single(await Store.RemovePeersAsync("web-2", default));
        Assert.Single(await Store.RemovePeersAsync("web", default));
    }

    [Fact]
    public async Task One_off_key_works_once()
    {
        var (record, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("once", false, 0, null), default);
        Assert.False(record.Reusable);
        await Store.RegisterPeerAsync(plain, NewKey(), Meta("a"), null, default);
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync(plain, NewKey(), Meta("b"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);
    }

    [Fact]
    public async Task Registering_the_same_live_peer_again_does_not_use_the_key_up()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("two", false, 2, null), default);
        var key = NewKey();
        for (var i = 0; i < 3; i++)
        {
            await Store.RegisterPeerAsync(plain, key, Meta("retry"), null, default);
        }

        Assert.Equal(1, (await Store.ListSetupKeysAsync(default))[0].UsedCount);

        // An expired peer registering again is a new use.
        var expiring = NewKey();
        await Store.RegisterPeerAsync(plain, expiring, Meta("exp"), Time.GetUtcNow().AddMinutes(1), default);
        Time.Advance(TimeSpan.FromMinutes(2));
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync(plain, expiring, Meta("exp"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);
    }

    [Fact]
    public async Task Usage_limit_is_enforced_and_reusable_without_limit_is_not()
    {
        var (_, limited) = await Store.CreateSetupKeyAsync(new NewSetupKey("two", false, 2, null), default);
        await Store.RegisterPeerAsync(limited, NewKey(), Meta("a"), null, default);
        await Store.RegisterPeerAsync(limited, NewKey(), Meta("b"), null, default);
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync(limited, NewKey(), Meta("c"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);

        var (_, unlimited) = await Store.CreateSetupKeyAsync(new NewSetupKey("many", true, 0, null), default);
        for (var i = 0; i < 4; i++)
        {
            await Store.RegisterPeerAsync(unlimited, NewKey(), Meta($"u{i}"), null, default);
        }
    }

    [Fact]
    public async Task Expired_revoked_and_unknown_keys_are_refused()
    {
        var (_, expiring) = await Store.CreateSetupKeyAsync(new NewSetupKey("day", true, 0, TimeSpan.FromHours(24)), default);
        await Store.RegisterPeerAsync(expiring, NewKey(), Meta("early"), null, default);
        Time.Advance(TimeSpan.FromHours(25));
        var expired = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync(expiring, NewKey(), Meta("late"), null, default));
        Assert.Equal(SetupKeyFailure.Expired, expired.Reason);

        var (record, revokedKey) = await Store.CreateSetupKeyAsync(new NewSetupKey("revoke-me", true, 0, null), default);
        Assert.Equal(record.Id, Assert.Single(await Store.RevokeSetupKeyAsync(record.Id, default)).Id);
        var revoked = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync(revokedKey, NewKey(), Meta("x"), null, default));
        Assert.Equal(SetupKeyFailure.Revoked, revoked.Reason);

        var unknown = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => Store.RegisterPeerAsync("mdl-not-a-key", NewKey(), Meta("x"), null, default));
        Assert.Equal(SetupKeyFailure.Unknown, unknown.Reason);
        Assert.DoesNotContain(await Store.ListPeersAsync(default), p => p.Hostname == "x" || p.Hostname == "late");
    }

    [Fact]
    public async Task Setup_key_is_stored_only_as_a_hash()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("secret", true, 0, null), default);
        await Store.DisposeAsync();
        var bytes = await File.ReadAllBytesAsync(DbPath);
        var wal = File.Exists(DbPath + "-wal") ? await File.ReadAllBytesAsync(DbPath + "-wal") : [];
        var needle = System.Text.Encoding.UTF8.GetBytes(plain);
        Assert.True(bytes.AsSpan().IndexOf(needle) < 0 && wal.AsSpan().IndexOf(needle) < 0, "the plaintext setup key is in the database");
        Store = new SqliteStore(DbPath, Time);
    }

    [Fact]
    public async Task Every_change_bumps_the_serial_and_removal_by_name_ip_or_key_works()
    {
        var (_, plain) = await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var s0 = await Store.GetNetworkSerialAsync(default);
        var a = NewKey();
        await Store.RegisterPeerAsync(plain, a, Meta("a"), null, default);
        var s1 = await Store.GetNetworkSerialAsync(default);
        Assert.True(s1 > s0);

        // Login without changes: no new serial; with changed metadata: new serial.
        await Store.UpdatePeerAsync(a, Meta("a"), default);
        Assert.Equal(s1, await Store.GetNetworkSerialAsync(default));
        await Store.UpdatePeerAsync(a, Meta("a") with { AgentVersion = "2.0" }, default);
        var s2 = await Store.GetNetworkSerialAsync(default);
        Assert.True(s2 > s1);

        var b = NewKey();
        await Store.RegisterPeerAsync(plain, b, Meta("bee"), null, default);
        var c = NewKey();
        await Store.RegisterPeerAsync(plain, c, Meta("sea"), null, default);
        Assert.Single(await Store.RemovePeersAsync("bee", default));
        Assert.Single(await Store.RemovePeersAsync(c.ToBase64(), default));
        Assert.Single(await Store.RemovePeersAsync("100.64.0.1", default));
        Assert.Empty(await Store.RemovePeersAsync("nobody", default));
        Assert.Empty(await Store.ListPeersAsync(default));
        Assert.True(await Store.GetNetworkSerialAsync(default) > s2);
    }

    [Fact]
    public async Task Setup_key_names_are_unique_and_unnamed_keys_get_free_names()
    {
        var (first, _) = await Store.CreateSetupKeyAsync(new NewSetupKey("ci", true, 0, null), default);
        var e = await Assert.ThrowsAsync<NameInUseException>(() => Store.CreateSetupKeyAsync(new NewSetupKey("ci", false, 1, null), default));
        Assert.Contains(first.Id, e.Message, StringComparison.Ordinal);
        var (a, _) = await Store.CreateSetupKeyAsync(new NewSetupKey("", true, 0, null), default);
        var (b, _) = await Store.CreateSetupKeyAsync(new NewSetupKey("", true, 0, null), default);
        Assert.Equal(["ci", "setup-key", "setup-key-2"], (await Store.ListSetupKeysAsync(default)).Select(k => k.Name).Order(StringComparer.Ordinal));
        Assert.Equal(("setup-key", "setup-key-2"), (a.Name, b.Name));
    }

    [Fact]
    public async Task A_peer_is_found_by_label_dot_zone_of_the_stores_zone_only()
    {
        await using var store = new SqliteStore(Path.Combine(Dir, "zone.db"), Time, "corp.mesh");
        await store.InitializeAsync(default);
        var (_, plain) = await store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        await store.RegisterPeerAsync(plain, NewKey(), Meta("Web Server"), null, default);
        await store.CreateGroupAsync("web", default);

        Assert.True(await store.AddPeerToGroupAsync("web", "web-server.corp.mesh", default));
        Assert.False(await store.AddPeerToGroupAsync("web", "WEB-SERVER.CORP.MESH.", default));
        await Assert.ThrowsAsync<Networks.NetworkValidationException>(() => store.AddPeerToGroupAsync("web", "web-server.modular.internal", default));
        Assert.Single(await store.RemovePeersAsync("web-server.corp.mesh", default));
    }
}
