using System.Security.Cryptography;
using System.Text;
using Dapper;
using Microsoft.Data.Sqlite;
using Modular.Abstractions.WireGuard;

namespace Modular.Server.Store;

/// <summary>
/// <see cref="IStore"/> on an embedded SQLite file (WAL, so the admin CLI can write while the server
/// runs). Setup keys are stored as SHA-256 hashes: they are 192-bit random secrets, so a fast hash is enough.
/// </summary>
public sealed partial class SqliteStore : IStore
{
    public const string DefaultAccountId = "default";
    private const int SchemaVersion = 3;
    private const int MaxLabelLength = 63;

    private readonly string _connectionString;
    private readonly TimeProvider _time;
    private readonly string _dnsZone;

    /// <param name="dnsZone">The account's zone ([account] dns_domain), so "label.zone" names a peer too.</param>
    public SqliteStore(string databasePath, TimeProvider? time = null, string? dnsZone = null)
    {
        _dnsZone = (dnsZone ?? new Config.AccountConfig().DnsDomain).Trim('.');
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = databasePath,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
        _time = time ?? TimeProvider.System;
        DatabasePath = databasePath;
    }

    public string DatabasePath { get; }

    public async Task InitializeAsync(CancellationToken cancellationToken)
    {
        try
        {
            await CreateOrMigrateAsync(cancellationToken);
        }
        catch (SqliteException e)
        {
            // "file is not a database", "unable to open database file", a lock held past the busy timeout: one line
            // for the operator, not a stack trace.
            throw new StoreUnavailableException($"cannot open the store {DatabasePath}: {e.Message}", e);
        }
    }

    private async Task CreateOrMigrateAsync(CancellationToken cancellationToken)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(DatabasePath));
        if (directory is not null && !Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        await using var db = await OpenAsync(cancellationToken);
        // Peers and (hashed) setup keys are nobody else's business; SQLite gives the WAL files the same mode.
        File.SetUnixFileMode(DatabasePath, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        await db.ExecuteAsync("PRAGMA journal_mode=WAL;");

        // One write transaction (BEGIN IMMEDIATE) for the version check and every step: a second process opening
        // the same fresh file (the server and an admin command started together) waits here, then sees the
        // migrated version and does nothing. Reading the version before taking the lock let both migrate.
        await using var tx = db.BeginTransaction(deferred: false);
        var version = await db.ExecuteScalarAsync<long>("PRAGMA user_version;", transaction: tx);
        if (version > SchemaVersion)
        {
            throw new InvalidOperationException($"The database {DatabasePath} has schema version {version}, newer than this server ({SchemaVersion}).");
        }

        if (version < 1)
        {
            await db.ExecuteAsync(
                """
                CREATE TABLE IF NOT EXISTS accounts (
                    id TEXT PRIMARY KEY,
                    network_serial INTEGER NOT NULL,
                    created_at INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS setup_keys (
                    id TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL REFERENCES accounts(id),
                    name TEXT NOT NULL,
                    key_hash TEXT NOT NULL UNIQUE,
                    reusable INTEGER NOT NULL,
                    usage_limit INTEGER NOT NULL,
                    used_count INTEGER NOT NULL DEFAULT 0,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NULL,
                    revoked INTEGER NOT NULL DEFAULT 0,
                    last_used_at INTEGER NULL);
                CREATE TABLE IF NOT EXISTS peers (
                    id TEXT PRIMARY KEY,
                    account_id TEXT NOT NULL REFERENCES accounts(id),
                    public_key TEXT NOT NULL UNIQUE,
                    hostname TEXT NOT NULL,
                    dns_label TEXT NOT NULL UNIQUE,
                    overlay_ip INTEGER NOT NULL UNIQUE,
                    registered_at INTEGER NOT NULL,
                    last_seen INTEGER NOT NULL,
                    agent_version TEXT NOT NULL,
                    os TEXT NOT NULL,
                    features TEXT NOT NULL,
                    rosenpass_fingerprint BLOB NOT NULL,
                    rosenpass_addr TEXT NOT NULL,
                    login_expires_at INTEGER NULL,
                    setup_key_id TEXT NOT NULL);
                PRAGMA user_version = 1;
                """,
                transaction: tx);
            await db.ExecuteAsync(
                "INSERT OR IGNORE INTO accounts (id, network_serial, created_at) VALUES (@id, 1, @now)",
                new { id = DefaultAccountId, now = Now() },
                tx);
        }

        await MigrateNetworksAsync(db, tx, version, _time.GetUtcNow());
        await MigrateRoutesAsync(db, tx, version);
        await MigrateDnsAsync(db, tx);
        await MigrateFlowsAsync(db, tx);
        await MigrateRosenpassKeysAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
    }

    public async Task<(SetupKeyRecord Record, string PlainKey)> CreateSetupKeyAsync(NewSetupKey spec, CancellationToken cancellationToken)
    {
        if (spec.UsageLimit < 0)
        {
            throw new ArgumentException("The usage limit cannot be negative.", nameof(spec));
        }

        var plain = "mdl-" + Base64Url(RandomNumberGenerator.GetBytes(24));
        var now = _time.GetUtcNow();
        var reusable = spec.Reusable || spec.UsageLimit > 1;
        var limit = reusable ? spec.UsageLimit : 1;
        await using var db = await OpenAsync(cancellationToken);
        // Serializable: two creates of one name cannot both see it free.
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var name = spec.Name.Trim();
        if (name.Length == 0)
        {
            name = await FreeSetupKeyNameAsync(db, tx);
        }
        else if (await db.QuerySingleOrDefaultAsync<SetupKeyRow>("SELECT * FROM setup_keys WHERE name = @name LIMIT 1", new { name }, tx) is { } holder)
        {
            throw new NameInUseException(
                $"a setup key named '{name}' exists already ({holder.id}{(holder.revoked != 0 ? ", revoked" : "")}); choose another --name");
        }

        var record = new SetupKeyRecord(
            Id: Guid.NewGuid().ToString("N")[..12],
            Name: name,
            Reusable: reusable,
            UsageLimit: limit,
            UsedCount: 0,
            CreatedAt: now,
            ExpiresAt: spec.ExpiresIn is { } e && e > TimeSpan.Zero ? now + e : null,
            Revoked: false,
            LastUsedAt: null);
        await db.ExecuteAsync(
            """
            INSERT INTO setup_keys (id, account_id, name, key_hash, reusable, usage_limit, used_count, created_at, expires_at, revoked)
            VALUES (@Id, @Account, @Name, @Hash, @Reusable, @UsageLimit, 0, @CreatedAt, @ExpiresAt, 0)
            """,
            new
            {
                record.Id,
                Account = DefaultAccountId,
                record.Name,
                Hash = HashSetupKey(plain),
                Reusable = record.Reusable ? 1 : 0,
                record.UsageLimit,
                CreatedAt = record.CreatedAt.ToUnixTimeMilliseconds(),
                ExpiresAt = record.ExpiresAt?.ToUnixTimeMilliseconds(),
            },
            tx);
        await tx.CommitAsync(cancellationToken);
        return (record, plain);
    }

    public async Task<IReadOnlyList<SetupKeyRecord>> ListSetupKeysAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        var rows = await db.QueryAsync<SetupKeyRow>("SELECT * FROM setup_keys ORDER BY created_at, id");
        return [.. rows.Select(r => r.ToRecord())];
    }

    public async Task<IReadOnlyList<SetupKeyRecord>> RevokeSetupKeyAsync(string idOrName, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        // Stores made before names were unique may hold several keys of one name: each is revoked and reported.
        var rows = (await db.QueryAsync<SetupKeyRow>("SELECT * FROM setup_keys WHERE id = @v OR name = @v ORDER BY created_at, id", new { v = idOrName.Trim() }, tx)).ToList();
        await db.ExecuteAsync("UPDATE setup_keys SET revoked = 1 WHERE id IN @ids", new { ids = rows.Select(r => r.id).ToArray() }, tx);
        await tx.CommitAsync(cancellationToken);
        return [.. rows.Select(r => r.ToRecord())];
    }

    public async Task<PeerRecord> RegisterPeerAsync(string plainSetupKey, WgKey publicKey, PeerMetadata meta, DateTimeOffset? loginExpiresAt, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        // IMMEDIATE: take the write lock up front so concurrent registrations serialize instead of deadlocking on upgrade.
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var now = _time.GetUtcNow();
        var key = await db.QuerySingleOrDefaultAsync<SetupKeyRow>("SELECT * FROM setup_keys WHERE key_hash = @h", new { h = HashSetupKey(plainSetupKey) }, tx);
        if (key is null)
        {
            throw new SetupKeyRejectedException(SetupKeyFailure.Unknown);
        }

        if (key.ToRecord().Check(now) is { } failure)
        {
            throw new SetupKeyRejectedException(failure);
        }

        var existing = await db.QuerySingleOrDefaultAsync<PeerRow>("SELECT * FROM peers WHERE public_key = @k", new { k = publicKey.ToBase64() }, tx);
        var hostname = SanitizeHostname(meta.Hostname);
        string id;
        if (existing is null)
        {
            var ip = await db.ExecuteScalarAsync<long?>(
                """
                SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM peers WHERE overlay_ip = @first) THEN @first
                ELSE (SELECT MIN(p.overlay_ip + 1) FROM peers p
                      WHERE p.overlay_ip + 1 <= @last
                        AND NOT EXISTS (SELECT 1 FROM peers q WHERE q.overlay_ip = p.overlay_ip + 1)) END
                """,
                new { first = (long)OverlayNetwork.FirstHost, last = (long)OverlayNetwork.LastHost },
                tx) ?? throw new InvalidOperationException("The overlay network 100.64.0.0/10 has no free address left.");
            id = Guid.NewGuid().ToString("N")[..16];
            var label = await UniqueLabelAsync(db, tx, hostname, null);
            await db.ExecuteAsync(
                """
                INSERT INTO peers (id, account_id, public_key, hostname, dns_label, overlay_ip, registered_at, last_seen,
                                   agent_version, os, features, rosenpass_fingerprint, rosenpass_addr, login_expires_at, setup_key_id)
                VALUES (@id, @account, @key, @hostname, @label, @ip, @now, @now, @version, @os, @features, @rpf, @rpa, @expires, @setupKey)
                """,
                new
                {
                    id,
                    account = DefaultAccountId,
                    key = publicKey.ToBase64(),
                    hostname,
                    label,
                    ip,
                    now = now.ToUnixTimeMilliseconds(),
                    version = meta.AgentVersion,
                    os = meta.Os,
                    features = string.Join(',', meta.Features),
                    rpf = meta.RosenpassFingerprint,
                    rpa = meta.RosenpassAddr,
                    expires = loginExpiresAt?.ToUnixTimeMilliseconds(),
                    setupKey = key.id,
                },
                tx);
        }
        else
        {
            // Re-registration of a known key (e.g. after its login expired): same identity, same address, same DNS label.
            id = existing.id;
            await db.ExecuteAsync(
                """
                UPDATE peers SET hostname = @hostname, last_seen = @now, agent_version = @version, os = @os,
                       features = @features, rosenpass_fingerprint = @rpf, rosenpass_addr = @rpa, login_expires_at = @expires, setup_key_id = @setupKey
                WHERE id = @id
                """,
                new
                {
                    id,
                    hostname,
                    now = now.ToUnixTimeMilliseconds(),
                    version = meta.AgentVersion,
                    os = meta.Os,
                    features = string.Join(',', meta.Features),
                    rpf = meta.RosenpassFingerprint,
                    rpa = meta.RosenpassAddr,
                    expires = loginExpiresAt?.ToUnixTimeMilliseconds(),
                    setupKey = key.id,
                },
                tx);
        }

        // A retried (or replayed) registration of a peer that is still registered and live does not use the key up again.
        var alreadyLive = existing is not null && (existing.login_expires_at is null || existing.login_expires_at > now.ToUnixTimeMilliseconds());
        if (!alreadyLive)
        {
            await db.ExecuteAsync("UPDATE setup_keys SET used_count = used_count + 1, last_used_at = @now WHERE id = @id", new { id = key.id, now = now.ToUnixTimeMilliseconds() }, tx);
        }

        await BumpSerialAsync(db, tx);
        var row = await db.QuerySingleAsync<PeerRow>("SELECT * FROM peers WHERE id = @id", new { id }, tx);
        await tx.CommitAsync(cancellationToken);
        return row.ToRecord();
    }

    public async Task<PeerRecord?> GetPeerAsync(WgKey publicKey, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        var row = await db.QuerySingleOrDefaultAsync<PeerRow>("SELECT * FROM peers WHERE public_key = @k", new { k = publicKey.ToBase64() });
        return row?.ToRecord();
    }

    public async Task<IReadOnlyList<PeerRecord>> ListPeersAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        var rows = await db.QueryAsync<PeerRow>("SELECT * FROM peers ORDER BY overlay_ip");
        return [.. rows.Select(r => r.ToRecord())];
    }

    public async Task<PeerRecord?> UpdatePeerAsync(WgKey publicKey, PeerMetadata? meta, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var row = await db.QuerySingleOrDefaultAsync<PeerRow>("SELECT * FROM peers WHERE public_key = @k", new { k = publicKey.ToBase64() }, tx);
        if (row is null)
        {
            return null;
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        if (meta is not null)
        {
            if (meta.DiffersFrom(row.ToRecord()))
            {
                // The DNS label stays the one given at registration: a peer renaming itself changes only the hostname it
                // shows, never takes a name another peer may want (an operator renames with `peers rename`).
                var hostname = SanitizeHostname(meta.Hostname);
                var features = string.Join(',', meta.Features);
                await db.ExecuteAsync(
                    """
                    UPDATE peers SET hostname = @hostname, agent_version = @version, os = @os, features = @features,
                           rosenpass_fingerprint = @rpf, rosenpass_addr = @rpa WHERE id = @id
                    """,
                    new { id = row.id, hostname, version = meta.AgentVersion, os = meta.Os, features, rpf = meta.RosenpassFingerprint, rpa = meta.RosenpassAddr },
                    tx);
                await BumpSerialAsync(db, tx);
            }
        }

        await db.ExecuteAsync("UPDATE peers SET last_seen = @now WHERE id = @id", new { id = row.id, now }, tx);
        var updated = await db.QuerySingleAsync<PeerRow>("SELECT * FROM peers WHERE id = @id", new { id = row.id }, tx);
        await tx.CommitAsync(cancellationToken);
        return updated.ToRecord();
    }

    public async Task<IReadOnlyList<PeerRecord>> RemovePeersAsync(string match, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var rows = await FindPeersAsync(db, tx, match);
        if (rows.Count > 1)
        {
            // Two peers may share a hostname (their labels differ): removing both on a guess is not what was asked.
            throw new AmbiguousPeerException(
                $"'{match.Trim()}' matches {rows.Count} peers: "
                + string.Join(", ", rows.Select(r => $"{r.dns_label} ({OverlayNetwork.ToAddress((uint)r.overlay_ip)})"))
                + "; name one by its DNS label, overlay IP or public key");
        }

        if (rows.Count > 0)
        {
            await db.ExecuteAsync("DELETE FROM peers WHERE id IN @ids", new { ids = rows.Select(r => r.id).ToArray() }, tx);
            await BumpSerialAsync(db, tx);
        }

        await tx.CommitAsync(cancellationToken);
        return [.. rows.Select(r => r.ToRecord())];
    }

    public async Task<PeerRecord> RenamePeerAsync(string match, string label, CancellationToken cancellationToken)
    {
        var wanted = label.Trim().TrimEnd('.').ToLowerInvariant();
        if (wanted.Length == 0 || SanitizeHostname(wanted) != wanted || wanted.StartsWith('-') || wanted.EndsWith('-'))
        {
            throw new ArgumentException($"'{label}' is not a DNS label: letters, digits and inner hyphens, at most {MaxLabelLength} characters", nameof(label));
        }

        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var rows = await FindPeersAsync(db, tx, match);
        if (rows.Count != 1)
        {
            throw rows.Count == 0
                ? new KeyNotFoundException($"no peer matches '{match.Trim()}'")
                : new AmbiguousPeerException(
                    $"'{match.Trim()}' matches {rows.Count} peers: "
                    + string.Join(", ", rows.Select(r => $"{r.dns_label} ({OverlayNetwork.ToAddress((uint)r.overlay_ip)})"))
                    + "; name one by its DNS label, overlay IP or public key");
        }

        var row = rows[0];
        if (row.dns_label != wanted)
        {
            var holder = await db.QuerySingleOrDefaultAsync<PeerRow>("SELECT * FROM peers WHERE dns_label = @l", new { l = wanted }, tx);
            if (holder is not null)
            {
                throw new NameInUseException($"the DNS label '{wanted}' belongs to another peer ({OverlayNetwork.ToAddress((uint)holder.overlay_ip)}); rename or remove it first");
            }

            await db.ExecuteAsync("UPDATE peers SET dns_label = @l WHERE id = @id", new { l = wanted, id = row.id }, tx);
            await BumpSerialAsync(db, tx);
        }

        var updated = await db.QuerySingleAsync<PeerRow>("SELECT * FROM peers WHERE id = @id", new { id = row.id }, tx);
        await tx.CommitAsync(cancellationToken);
        return updated.ToRecord();
    }

    public async Task<ulong> GetNetworkSerialAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return (ulong)await db.ExecuteScalarAsync<long>("SELECT network_serial FROM accounts WHERE id = @id", new { id = DefaultAccountId });
    }

    public async Task<ulong> BumpNetworkSerialAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var serial = await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return serial;
    }

    public ValueTask DisposeAsync()
    {
        // Pooled connections keep the file open (and the WAL unmerged); release them with the store.
        SqliteConnection.ClearAllPools();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The one place a command's peer reference is resolved: id, public key, hostname, DNS label, the full
    /// "label.zone" that `modular status -d` shows (any case, trailing dot allowed), or overlay IP.
    /// </summary>
    private async Task<List<PeerRow>> FindPeersAsync(SqliteConnection db, SqliteTransaction tx, string reference)
    {
        var m = reference.Trim();
        var ip = OverlayNetwork.TryParse(m, out var parsed) ? (long)parsed : -1;
        var fqdn = m.TrimEnd('.');
        var suffix = "." + _dnsZone;
        var label = fqdn.Length > suffix.Length && fqdn.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
            ? fqdn[..^suffix.Length].ToLowerInvariant()
            : null;
        return [.. await db.QueryAsync<PeerRow>(
            "SELECT * FROM peers WHERE id = @m OR public_key = @m OR hostname = @m OR dns_label = @m OR dns_label = @label OR overlay_ip = @ip ORDER BY overlay_ip",
            new { m, label, ip },
            tx)];
    }

    private static async Task<string> FreeSetupKeyNameAsync(SqliteConnection db, SqliteTransaction tx)
    {
        for (var n = 1; ; n++)
        {
            var name = n == 1 ? "setup-key" : $"setup-key-{n}";
            if (await db.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM setup_keys WHERE name = @name", new { name }, tx) == 0)
            {
                return name;
            }
        }
    }

    private static async Task<ulong> BumpSerialAsync(SqliteConnection db, SqliteTransaction tx)
        => (ulong)await db.ExecuteScalarAsync<long>(
            "UPDATE accounts SET network_serial = network_serial + 1 WHERE id = @id RETURNING network_serial",
            new { id = DefaultAccountId },
            tx);

    private static async Task<string> UniqueLabelAsync(SqliteConnection db, SqliteTransaction tx, string hostname, string? ownId)
    {
        var label = hostname;
        for (var n = 2; ; n++)
        {
            var holder = await db.ExecuteScalarAsync<string?>("SELECT id FROM peers WHERE dns_label = @l", new { l = label }, tx);
            if (holder is null || holder == ownId)
            {
                return label;
            }

            label = WithSuffix(hostname, n);
        }
    }

    /// <summary>"hostname-n", the hostname cut so the label stays within DNS's 63 characters (a longer one never resolves).</summary>
    private static string WithSuffix(string hostname, int n)
    {
        var suffix = $"-{n}";
        var room = MaxLabelLength - suffix.Length;
        return (hostname.Length > room ? hostname[..room].TrimEnd('-') : hostname) + suffix;
    }

    /// <summary>A DNS label: lower-case letters, digits and hyphens, at most 63 characters.</summary>
    internal static string SanitizeHostname(string hostname)
    {
        var sb = new StringBuilder(Math.Min(hostname.Length, MaxLabelLength));
        foreach (var c in hostname.ToLowerInvariant())
        {
            if (sb.Length == MaxLabelLength)
            {
                break;
            }

            sb.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        }

        var label = sb.ToString().Trim('-');
        return label.Length > 0 ? label : "peer";
    }

    private static string HashSetupKey(string plain) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(plain.Trim())));

    private static string Base64Url(byte[] bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');

    private long Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    private async Task<SqliteConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var db = new SqliteConnection(_connectionString);
        await db.OpenAsync(cancellationToken);
        await db.ExecuteAsync("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;");
        return db;
    }

#pragma warning disable IDE1006, CA1812, SA1300 // Dapper maps snake_case columns onto these names.
    private sealed class SetupKeyRow
    {
        public string id { get; set; } = "";
        public string name { get; set; } = "";
        public long reusable { get; set; }
        public long usage_limit { get; set; }
        public long used_count { get; set; }
        public long created_at { get; set; }
        public long? expires_at { get; set; }
        public long revoked { get; set; }
        public long? last_used_at { get; set; }

        public SetupKeyRecord ToRecord() => new(
            id, name, reusable != 0, (int)usage_limit, (int)used_count,
            DateTimeOffset.FromUnixTimeMilliseconds(created_at),
            expires_at is { } e ? DateTimeOffset.FromUnixTimeMilliseconds(e) : null,
            revoked != 0,
            last_used_at is { } l ? DateTimeOffset.FromUnixTimeMilliseconds(l) : null);
    }

    private sealed class PeerRow
    {
        public string id { get; set; } = "";
        public string public_key { get; set; } = "";
        public string hostname { get; set; } = "";
        public string dns_label { get; set; } = "";
        public long overlay_ip { get; set; }
        public long registered_at { get; set; }
        public long last_seen { get; set; }
        public string agent_version { get; set; } = "";
        public string os { get; set; } = "";
        public string features { get; set; } = "";
        public byte[] rosenpass_fingerprint { get; set; } = [];
        public string rosenpass_addr { get; set; } = "";
        public long? login_expires_at { get; set; }
        public string setup_key_id { get; set; } = "";

        public PeerRecord ToRecord() => new(
            id, WgKey.Parse(public_key), hostname, dns_label, (uint)overlay_ip,
            DateTimeOffset.FromUnixTimeMilliseconds(registered_at),
            DateTimeOffset.FromUnixTimeMilliseconds(last_seen),
            agent_version, os,
            features.Split(',', StringSplitOptions.RemoveEmptyEntries),
            rosenpass_fingerprint, rosenpass_addr,
            login_expires_at is { } e ? DateTimeOffset.FromUnixTimeMilliseconds(e) : null,
            setup_key_id);
    }
#pragma warning restore IDE1006, CA1812, SA1300
}
