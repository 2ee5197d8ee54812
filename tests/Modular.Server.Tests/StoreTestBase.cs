using Microsoft.Extensions.Time.Testing;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Server.Management;
using Modular.Server.Networks;
using Modular.Server.Store;

namespace Modular.Server.Tests;

/// <summary>
/// A fresh SqliteStore per test in its own temporary dir, on a fake clock, with helpers to register peers and
/// build a peer's map from what the store holds.
/// </summary>
public abstract class StoreTestBase : IAsyncLifetime
{
    protected static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    // Made on the first Register rather than up front, so tests that count setup keys see only their own.
    private string? _setupKey;

    protected string Dir { get; } = TestServer.NewDataDir();

    protected FakeTimeProvider Time { get; } = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    protected SqliteStore Store { get; set; } = null!;

    protected string DbPath => Path.Combine(Dir, "modular.db");

    public async Task InitializeAsync() => Store = await OpenAsync();

    public async Task DisposeAsync()
    {
        // The store's dispose releases SQLite's pooled connections (process-wide), which would otherwise keep the file open.
        await Store.DisposeAsync();
        Directory.Delete(Dir, recursive: true);
    }

    /// <summary>A second store on a server's database file, as the admin CLI opens it.</summary>
    protected static async Task<SqliteStore> OpenAdminStoreAsync(string dataDir)
    {
        var store = new SqliteStore(Path.Combine(dataDir, "modular.db"));
        await store.InitializeAsync(CancellationToken.None);
        return store;
    }

    /// <summary>Closes the store and opens the same file again, as a restarted server would.</summary>
    protected async Task ReopenStoreAsync()
    {
        await Store.DisposeAsync();
        Store = await OpenAsync();
    }

    protected async Task<PeerRecord> Register(string name)
    {
        _setupKey ??= (await Store.CreateSetupKeyAsync(new NewSetupKey("k", true, 0, null), default)).PlainKey;
        using var key = X25519KeyPair.Generate();
        return await Store.RegisterPeerAsync(_setupKey, key.PublicKey, new PeerMetadata(name, "1.0", "linux", [], [], ""), null, default);
    }

    protected async Task<NetworkMap> MapFor(PeerRecord self)
    {
        var peers = await Store.ListPeersAsync(default);
        var set = new PolicySet(await Store.ListGroupsAsync(default), await Store.ListPoliciesAsync(default), await Store.ListResourcesAsync(default));
        var snapshot = new NetworkSnapshot(1, peers, set);
        return NetworkMapBuilder.Build(snapshot, peers.Single(p => p.Id == self.Id), new Config.AccountConfig(), DateTimeOffset.UtcNow);
    }

    /// <summary>One rule as a line; only rules for a routed network have a destination, shown after an arrow.</summary>
    protected static string Describe(FirewallRule r)
        => $"{r.RuleId} {r.Action} {r.Protocol} {r.Direction} {r.PeerIp}{(r.Destination.Length == 0 ? "" : $" -> {r.Destination}")} {(r.PortRanges.Count == 0 ? "any" : string.Join(',', r.PortRanges.Select(p => p.Start == p.End ? $"{p.Start}" : $"{p.Start}-{p.End}")))}";

    private async Task<SqliteStore> OpenAsync()
    {
        var store = new SqliteStore(DbPath, Time);
        await store.InitializeAsync(CancellationToken.None);
        return store;
    }
}
