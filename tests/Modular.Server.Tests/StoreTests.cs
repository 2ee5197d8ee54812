using Microsoft.Extensions.Time.Testing;
using Modular.Control.Crypto;
using Modular.Server.Store;

namespace Modular.Server.Tests;

public sealed class StoreTests : IAsyncLifetime
{
    private readonly string _dir = TestServer.NewDataDir();
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
    private SqliteStore _store = null!;

    private string DbPath => Path.Combine(_dir, "modular.db");

    public async Task InitializeAsync()
    {
        _store = new SqliteStore(DbPath, _time);
        await _store.InitializeAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private static PeerMetadata Meta(string host) => new(host, "1.0", "linux", ["lazy"], [], "");

    private static Modular.Abstractions.WireGuard.WgKey NewKey()
    {
        using var k = X25519KeyPair.Generate();
        return k.PublicKey;
    }

    [Fact]
    public async Task Peers_and_keys_survive_reopening_the_database()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var key = NewKey();
        var peer = await _store.RegisterPeerAsync(plain, key, Meta("alpha"), null, default);
        var serial = await _store.GetNetworkSerialAsync(default);
        await _store.DisposeAsync();

        _store = new SqliteStore(DbPath, _time);
        await _store.InitializeAsync(default);
        var again = await _store.GetPeerAsync(key, default);
        Assert.NotNull(again);
        Assert.Equal(peer.OverlayIp, again.OverlayIp);
        Assert.Equal("alpha", again.Hostname);
        Assert.Equal(serial, await _store.GetNetworkSerialAsync(default));
        Assert.Single(await _store.ListSetupKeysAsync(default));
        Assert.Equal(1, (await _store.ListSetupKeysAsync(default))[0].UsedCount);
    }

    [Fact]
    public async Task Database_file_is_private()
    {
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(DbPath));
    }

    [Fact]
    public async Task Addresses_are_lowest_free_unique_and_stable()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var keys = Enumerable.Range(0, 5).Select(_ => NewKey()).ToList();
        var ips = new List<string>();
        foreach (var (key, i) in keys.Select((k, i) => (k, i)))
        {
            ips.Add((await _store.RegisterPeerAsync(plain, key, Meta($"h{i}"), null, default)).OverlayAddress.ToString());
        }

        Assert.Equal(["100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.5"], ips);

        // Re-registering keeps the address.
        Assert.Equal("100.64.0.3", (await _store.RegisterPeerAsync(plain, keys[2], Meta("h2"), null, default)).OverlayAddress.ToString());

        // A freed address is reused by the next newcomer, the others stay where they are.
        await _store.RemovePeersAsync("100.64.0.2", default);
        var newcomer = await _store.RegisterPeerAsync(plain, NewKey(), Meta("new"), null, default);
        Assert.Equal("100.64.0.2", newcomer.OverlayAddress.ToString());
        var all = await _store.ListPeersAsync(default);
        Assert.Equal(all.Count, all.Select(p => p.OverlayIp).Distinct().Count());
        Assert.Equal("100.64.0.4", all.Single(p => p.PublicKey == keys[3]).OverlayAddress.ToString());
    }

    [Fact]
    public async Task Duplicate_hostnames_get_distinct_dns_labels()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var a = await _store.RegisterPeerAsync(plain, NewKey(), Meta("Web Server"), null, default);
        var b = await _store.RegisterPeerAsync(plain, NewKey(), Meta("web-server"), null, default);
        Assert.Equal("web-server", a.DnsLabel);
        Assert.Equal("web-server-2", b.DnsLabel);
    }

    [Fact]
    public async Task One_off_key_works_once()
    {
        var (record, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("once", false, 0, null), default);
        Assert.False(record.Reusable);
        await _store.RegisterPeerAsync(plain, NewKey(), Meta("a"), null, default);
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync(plain, NewKey(), Meta("b"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);
    }

    [Fact]
    public async Task Registering_the_same_live_peer_again_does_not_use_the_key_up()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("two", false, 2, null), default);
        var key = NewKey();
        for (var i = 0; i < 3; i++)
        {
            await _store.RegisterPeerAsync(plain, key, Meta("retry"), null, default);
        }

        Assert.Equal(1, (await _store.ListSetupKeysAsync(default))[0].UsedCount);

        // An expired peer registering again is a new use.
        var expiring = NewKey();
        await _store.RegisterPeerAsync(plain, expiring, Meta("exp"), _time.GetUtcNow().AddMinutes(1), default);
        _time.Advance(TimeSpan.FromMinutes(2));
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync(plain, expiring, Meta("exp"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);
    }

    [Fact]
    public async Task Usage_limit_is_enforced_and_reusable_without_limit_is_not()
    {
        var (_, limited) = await _store.CreateSetupKeyAsync(new NewSetupKey("two", false, 2, null), default);
        await _store.RegisterPeerAsync(limited, NewKey(), Meta("a"), null, default);
        await _store.RegisterPeerAsync(limited, NewKey(), Meta("b"), null, default);
        var e = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync(limited, NewKey(), Meta("c"), null, default));
        Assert.Equal(SetupKeyFailure.Exhausted, e.Reason);

        var (_, unlimited) = await _store.CreateSetupKeyAsync(new NewSetupKey("many", true, 0, null), default);
        for (var i = 0; i < 4; i++)
        {
            await _store.RegisterPeerAsync(unlimited, NewKey(), Meta($"u{i}"), null, default);
        }
    }

    [Fact]
    public async Task Expired_revoked_and_unknown_keys_are_refused()
    {
        var (_, expiring) = await _store.CreateSetupKeyAsync(new NewSetupKey("day", true, 0, TimeSpan.FromHours(24)), default);
        await _store.RegisterPeerAsync(expiring, NewKey(), Meta("early"), null, default);
        _time.Advance(TimeSpan.FromHours(25));
        var expired = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync(expiring, NewKey(), Meta("late"), null, default));
        Assert.Equal(SetupKeyFailure.Expired, expired.Reason);

        var (record, revokedKey) = await _store.CreateSetupKeyAsync(new NewSetupKey("revoke-me", true, 0, null), default);
        Assert.True(await _store.RevokeSetupKeyAsync(record.Id, default));
        var revoked = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync(revokedKey, NewKey(), Meta("x"), null, default));
        Assert.Equal(SetupKeyFailure.Revoked, revoked.Reason);

        var unknown = await Assert.ThrowsAsync<SetupKeyRejectedException>(() => _store.RegisterPeerAsync("mdl-not-a-key", NewKey(), Meta("x"), null, default));
        Assert.Equal(SetupKeyFailure.Unknown, unknown.Reason);
        Assert.DoesNotContain(await _store.ListPeersAsync(default), p => p.Hostname == "x" || p.Hostname == "late");
    }

    [Fact]
    public async Task Setup_key_is_stored_only_as_a_hash()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("secret", true, 0, null), default);
        await _store.DisposeAsync();
        var bytes = await File.ReadAllBytesAsync(DbPath);
        var wal = File.Exists(DbPath + "-wal") ? await File.ReadAllBytesAsync(DbPath + "-wal") : [];
        var needle = System.Text.Encoding.UTF8.GetBytes(plain);
        Assert.True(bytes.AsSpan().IndexOf(needle) < 0 && wal.AsSpan().IndexOf(needle) < 0, "the plaintext setup key is in the database");
        _store = new SqliteStore(DbPath, _time);
    }

    [Fact]
    public async Task Every_change_bumps_the_serial_and_removal_by_name_ip_or_key_works()
    {
        var (_, plain) = await _store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default);
        var s0 = await _store.GetNetworkSerialAsync(default);
        var a = NewKey();
        await _store.RegisterPeerAsync(plain, a, Meta("a"), null, default);
        var s1 = await _store.GetNetworkSerialAsync(default);
        Assert.True(s1 > s0);

        // Login without changes: no new serial; with changed metadata: new serial.
        await _store.UpdatePeerAsync(a, Meta("a"), default);
        Assert.Equal(s1, await _store.GetNetworkSerialAsync(default));
        await _store.UpdatePeerAsync(a, Meta("a") with { AgentVersion = "2.0" }, default);
        var s2 = await _store.GetNetworkSerialAsync(default);
        Assert.True(s2 > s1);

        var b = NewKey();
        await _store.RegisterPeerAsync(plain, b, Meta("bee"), null, default);
        var c = NewKey();
        await _store.RegisterPeerAsync(plain, c, Meta("sea"), null, default);
        Assert.Single(await _store.RemovePeersAsync("bee", default));
        Assert.Single(await _store.RemovePeersAsync(c.ToBase64(), default));
        Assert.Single(await _store.RemovePeersAsync("100.64.0.1", default));
        Assert.Empty(await _store.RemovePeersAsync("nobody", default));
        Assert.Empty(await _store.ListPeersAsync(default));
        Assert.True(await _store.GetNetworkSerialAsync(default) > s2);
    }
}
