using Dapper;
using Microsoft.Data.Sqlite;
using Modular.Server.Networks;

namespace Modular.Server.Store;

/// <summary>Groups, policies and network resources (schema version 2; masquerade and metric: 3).</summary>
public sealed partial class SqliteStore
{
    private static async Task MigrateNetworksAsync(SqliteConnection db, SqliteTransaction tx, long version, DateTimeOffset now)
    {
        if (version >= 2)
        {
            return;
        }

        await db.ExecuteAsync(
            """
            CREATE TABLE IF NOT EXISTS groups (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                name TEXT NOT NULL UNIQUE,
                built_in INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS group_members (
                group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
                peer_id TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
                PRIMARY KEY (group_id, peer_id));
            CREATE TABLE IF NOT EXISTS resources (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                name TEXT NOT NULL UNIQUE,
                address TEXT NOT NULL,
                routing_peer_id TEXT NOT NULL, -- no foreign key: removing the routing peer leaves the resource unserved, not deleted
                created_at INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS policies (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                name TEXT NOT NULL UNIQUE,
                source_group_id TEXT NOT NULL REFERENCES groups(id),
                destination_group_id TEXT NULL REFERENCES groups(id),
                destination_resource_id TEXT NULL REFERENCES resources(id),
                protocol TEXT NOT NULL,
                ports TEXT NOT NULL,
                action TEXT NOT NULL,
                bidirectional INTEGER NOT NULL,
                created_at INTEGER NOT NULL);
            PRAGMA user_version = 2;
            """,
            transaction: tx);

        // A new account: everyone may reach everyone, until an administrator narrows it.
        var ms = now.ToUnixTimeMilliseconds();
        await db.ExecuteAsync(
            "INSERT OR IGNORE INTO groups (id, account_id, name, built_in, created_at) VALUES (@id, @account, @name, 1, @ms)",
            new { id = GroupRecord.AllGroupId, account = DefaultAccountId, name = GroupRecord.AllGroupName, ms },
            tx);
        await db.ExecuteAsync(
            """
            INSERT OR IGNORE INTO policies (id, account_id, name, source_group_id, destination_group_id, protocol, ports, action, bidirectional, created_at)
            VALUES (@id, @account, 'Default', @all, @all, 'all', '', 'accept', 1, @ms)
            """,
            new { id = PolicyRecord.DefaultPolicyId, account = DefaultAccountId, all = GroupRecord.AllGroupId, ms },
            tx);
    }

    /// <summary>Schema version 3: resources are routes, with masquerade (on for existing ones) and a metric.</summary>
    private static async Task MigrateRoutesAsync(SqliteConnection db, SqliteTransaction tx, long version)
    {
        if (version >= 3)
        {
            return;
        }

        await db.ExecuteAsync(
            $"""
            ALTER TABLE resources ADD COLUMN masquerade INTEGER NOT NULL DEFAULT 1;
            ALTER TABLE resources ADD COLUMN metric INTEGER NOT NULL DEFAULT {NetworkResourceRecord.DefaultMetric};
            PRAGMA user_version = 3;
            """,
            transaction: tx);
    }

    public async Task<IReadOnlyList<GroupRecord>> ListGroupsAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await ListGroupsAsync(db, null);
    }

    public async Task<GroupRecord> CreateGroupAsync(string name, CancellationToken cancellationToken)
    {
        name = PolicyValidator.ValidateName("name", name);
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        if (await FindGroupIdAsync(db, tx, name) is not null)
        {
            throw new NetworkValidationException("name", $"a group named '{name}' exists");
        }

        var id = NewId();
        await db.ExecuteAsync("INSERT INTO groups (id, account_id, name, built_in, created_at) VALUES (@id, @account, @name, 0, @ms)", new { id, account = DefaultAccountId, name, ms = Now() }, tx);
        await tx.CommitAsync(cancellationToken);
        return (await ListGroupsAsync(db, null)).Single(g => g.Id == id);
    }

    public async Task<bool> DeleteGroupAsync(string idOrName, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var id = await FindGroupIdAsync(db, tx, idOrName);
        if (id is null)
        {
            return false;
        }

        if (id == GroupRecord.AllGroupId)
        {
            throw new NetworkValidationException("group", "the built-in All group cannot be deleted");
        }

        var users = (await db.QueryAsync<string>("SELECT name FROM policies WHERE source_group_id = @id OR destination_group_id = @id", new { id }, tx)).ToList();
        if (users.Count > 0)
        {
            throw new NetworkValidationException("group", $"used by policies {string.Join(", ", users)}; delete them first");
        }

        await db.ExecuteAsync("DELETE FROM groups WHERE id = @id", new { id }, tx);
        await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return true;
    }

    public Task<bool> AddPeerToGroupAsync(string group, string peer, CancellationToken cancellationToken) => ChangeMembershipAsync(group, peer, add: true, cancellationToken);

    public Task<bool> RemovePeerFromGroupAsync(string group, string peer, CancellationToken cancellationToken) => ChangeMembershipAsync(group, peer, add: false, cancellationToken);

    public async Task<IReadOnlyList<PolicyRecord>> ListPoliciesAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await ListPoliciesAsync(db, null);
    }

    public async Task<PolicyRecord> CreatePolicyAsync(NewPolicy policy, CancellationToken cancellationToken)
    {
        var valid = PolicyValidator.Validate(policy);
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var source = await FindGroupIdAsync(db, tx, valid.Source) ?? throw new NetworkValidationException("source", $"no group '{valid.Source}'");
        string? destination = null;
        string? resource = null;
        if (valid.Destination is not null)
        {
            destination = await FindGroupIdAsync(db, tx, valid.Destination) ?? throw new NetworkValidationException("destination", $"no group '{valid.Destination}'");
        }
        else
        {
            resource = await db.ExecuteScalarAsync<string?>("SELECT id FROM resources WHERE id = @v OR name = @v", new { v = valid.DestinationResource }, tx)
                ?? throw new NetworkValidationException("destination-resource", $"no network resource '{valid.DestinationResource}'");
        }

        if (await db.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM policies WHERE name = @n", new { n = valid.Name }, tx) > 0)
        {
            throw new NetworkValidationException("name", $"a policy named '{valid.Name}' exists");
        }

        var id = NewId();
        await db.ExecuteAsync(
            """
            INSERT INTO policies (id, account_id, name, source_group_id, destination_group_id, destination_resource_id, protocol, ports, action, bidirectional, created_at)
            VALUES (@id, @account, @name, @source, @destination, @resource, @protocol, @ports, @action, @bidirectional, @ms)
            """,
            new
            {
                id,
                account = DefaultAccountId,
                name = valid.Name,
                source,
                destination,
                resource,
                protocol = valid.Protocol.ToString().ToLowerInvariant(),
                ports = PortSpan.Format(valid.Ports),
                action = valid.Action.ToString().ToLowerInvariant(),
                bidirectional = valid.Bidirectional ? 1 : 0,
                ms = Now(),
            },
            tx);
        await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return (await ListPoliciesAsync(db, null)).Single(p => p.Id == id);
    }

    public async Task<bool> DeletePolicyAsync(string idOrName, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var deleted = await db.ExecuteAsync("DELETE FROM policies WHERE id = @v OR name = @v", new { v = idOrName }, tx);
        if (deleted > 0)
        {
            await BumpSerialAsync(db, tx);
        }

        await tx.CommitAsync(cancellationToken);
        return deleted > 0;
    }

    public async Task<IReadOnlyList<NetworkResourceRecord>> ListResourcesAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        var rows = await db.QueryAsync<(string Id, string Name, string Address, string RoutingPeerId, long CreatedAt, long Masquerade, long Metric)>(
            "SELECT id, name, address, routing_peer_id, created_at, masquerade, metric FROM resources ORDER BY name");
        return [.. rows.Select(r => new NetworkResourceRecord(r.Id, r.Name, r.Address, r.RoutingPeerId, DateTimeOffset.FromUnixTimeMilliseconds(r.CreatedAt), r.Masquerade != 0, (int)r.Metric))];
    }

    /// <summary>A resource that masquerades, with the default metric.</summary>
    public Task<NetworkResourceRecord> CreateResourceAsync(string name, string address, string routingPeer, CancellationToken cancellationToken)
        => CreateResourceAsync(new NewResource(name, address, routingPeer), cancellationToken);

    public async Task<NetworkResourceRecord> CreateResourceAsync(NewResource resource, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(resource);
        var valid = RouteValidator.Validate(resource);
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var peerId = await FindPeerIdAsync(db, tx, valid.RoutingPeer) ?? throw new NetworkValidationException(valid.ExitNode ? "peer" : "routing-peer", $"no peer '{valid.RoutingPeer}'");
        var name = valid.Name.Length > 0
            ? valid.Name
            : "exit-" + await db.ExecuteScalarAsync<string>("SELECT hostname FROM peers WHERE id = @peerId", new { peerId }, tx);
        if (await db.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM resources WHERE name = @name", new { name }, tx) > 0)
        {
            throw new NetworkValidationException("name", $"a network resource named '{name}' exists");
        }

        if (await db.ExecuteScalarAsync<string?>("SELECT name FROM resources WHERE address = @Address AND routing_peer_id = @peerId", new { valid.Address, peerId }, tx) is { } twin)
        {
            throw new NetworkValidationException(valid.ExitNode ? "peer" : "address", $"{valid.Address} is already served by this peer (resource '{twin}')");
        }

        var record = new NetworkResourceRecord(NewId(), name, valid.Address, peerId, _time.GetUtcNow(), valid.Masquerade, valid.Metric);
        await db.ExecuteAsync(
            "INSERT INTO resources (id, account_id, name, address, routing_peer_id, created_at, masquerade, metric) VALUES (@Id, @account, @Name, @Address, @RoutingPeerId, @ms, @masquerade, @Metric)",
            new { record.Id, account = DefaultAccountId, record.Name, record.Address, record.RoutingPeerId, ms = record.CreatedAt.ToUnixTimeMilliseconds(), masquerade = record.Masquerade ? 1 : 0, record.Metric },
            tx);
        await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return record;
    }

    public async Task<bool> DeleteResourceAsync(string idOrName, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var id = await db.ExecuteScalarAsync<string?>("SELECT id FROM resources WHERE id = @v OR name = @v", new { v = idOrName }, tx);
        if (id is null)
        {
            return false;
        }

        var users = (await db.QueryAsync<string>("SELECT name FROM policies WHERE destination_resource_id = @id", new { id }, tx)).ToList();
        if (users.Count > 0)
        {
            throw new NetworkValidationException("resource", $"used by policies {string.Join(", ", users)}; delete them first");
        }

        await db.ExecuteAsync("DELETE FROM resources WHERE id = @id", new { id }, tx);
        await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return true;
    }

    private async Task<bool> ChangeMembershipAsync(string group, string peer, bool add, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var groupId = await FindGroupIdAsync(db, tx, group) ?? throw new NetworkValidationException("group", $"no group '{group}'");
        if (groupId == GroupRecord.AllGroupId)
        {
            throw new NetworkValidationException("group", "the built-in All group always holds every peer");
        }

        var peerId = await FindPeerIdAsync(db, tx, peer) ?? throw new NetworkValidationException("peer", $"no peer '{peer}'");
        var changed = add
            ? await db.ExecuteAsync("INSERT OR IGNORE INTO group_members (group_id, peer_id) VALUES (@groupId, @peerId)", new { groupId, peerId }, tx)
            : await db.ExecuteAsync("DELETE FROM group_members WHERE group_id = @groupId AND peer_id = @peerId", new { groupId, peerId }, tx);
        if (changed > 0)
        {
            await BumpSerialAsync(db, tx);
        }

        await tx.CommitAsync(cancellationToken);
        return changed > 0;
    }

    private static async Task<string?> FindGroupIdAsync(SqliteConnection db, SqliteTransaction tx, string idOrName)
        => await db.ExecuteScalarAsync<string?>("SELECT id FROM groups WHERE id = @v OR name = @v COLLATE NOCASE ORDER BY id = @v DESC LIMIT 1", new { v = idOrName.Trim() }, tx);

    private async Task<string?> FindPeerIdAsync(SqliteConnection db, SqliteTransaction tx, string match)
    {
        var ids = (await FindPeersAsync(db, tx, match)).Select(p => p.id).ToList();
        return ids.Count switch
        {
            0 => null,
            1 => ids[0],
            _ => throw new NetworkValidationException("peer", $"'{match}' matches {ids.Count} peers; use its IP or public key"),
        };
    }

    private static async Task<IReadOnlyList<GroupRecord>> ListGroupsAsync(SqliteConnection db, SqliteTransaction? tx)
    {
        var groups = await db.QueryAsync<(string Id, string Name, long BuiltIn, long CreatedAt)>("SELECT id, name, built_in, created_at FROM groups ORDER BY built_in DESC, name", transaction: tx);
        var members = (await db.QueryAsync<(string GroupId, string PeerId)>("SELECT group_id, peer_id FROM group_members ORDER BY peer_id", transaction: tx))
            .ToLookup(m => m.GroupId, m => m.PeerId);
        var allPeers = (await db.QueryAsync<string>("SELECT id FROM peers ORDER BY overlay_ip", transaction: tx)).ToList();
        return [.. groups.Select(g => new GroupRecord(g.Id, g.Name, g.BuiltIn != 0, g.Id == GroupRecord.AllGroupId ? allPeers : [.. members[g.Id]], DateTimeOffset.FromUnixTimeMilliseconds(g.CreatedAt)))];
    }

    private static async Task<IReadOnlyList<PolicyRecord>> ListPoliciesAsync(SqliteConnection db, SqliteTransaction? tx)
    {
        var rows = await db.QueryAsync<PolicyRow>("SELECT * FROM policies ORDER BY created_at, id", transaction: tx);
        return [.. rows.Select(r => new PolicyRecord(
            r.id,
            r.name,
            r.source_group_id,
            r.destination_group_id,
            r.destination_resource_id,
            PolicyValidator.ParseProtocol(r.protocol),
            PolicyValidator.ParsePorts(r.ports),
            r.action == "drop" ? PolicyAction.Drop : PolicyAction.Accept,
            r.bidirectional != 0,
            DateTimeOffset.FromUnixTimeMilliseconds(r.created_at)))];
    }

    private static string NewId() => Guid.NewGuid().ToString("N")[..12];

#pragma warning disable IDE1006, CA1812, SA1300 // Dapper maps snake_case columns onto these names.
    private sealed class PolicyRow
    {
        public string id { get; set; } = "";
        public string name { get; set; } = "";
        public string source_group_id { get; set; } = "";
        public string? destination_group_id { get; set; }
        public string? destination_resource_id { get; set; }
        public string protocol { get; set; } = "";
        public string ports { get; set; } = "";
        public string action { get; set; } = "";
        public long bidirectional { get; set; }
        public long created_at { get; set; }
    }
#pragma warning restore IDE1006, CA1812, SA1300
}
