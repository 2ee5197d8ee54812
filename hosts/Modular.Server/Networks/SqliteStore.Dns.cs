using Dapper;
using Microsoft.Data.Sqlite;
using Modular.Server.Networks;

namespace Modular.Server.Store;

/// <summary>
/// Nameserver groups. Their table is created by its own idempotent step (keyed on the table's existence,
/// not on user_version), so it composes with schema version bumps made for other features.
/// </summary>
public sealed partial class SqliteStore : INameserverStore
{
    private static async Task MigrateDnsAsync(SqliteConnection db, SqliteTransaction tx)
    {
        await db.ExecuteAsync(
            """
            CREATE TABLE IF NOT EXISTS nameserver_groups (
                id TEXT PRIMARY KEY,
                account_id TEXT NOT NULL REFERENCES accounts(id),
                name TEXT NOT NULL UNIQUE,
                nameservers TEXT NOT NULL, -- comma-separated ip:port, in order
                domains TEXT NOT NULL,     -- comma-separated; empty: the default group
                created_at INTEGER NOT NULL);
            """,
            transaction: tx);
    }

    public async Task<IReadOnlyList<NameserverGroupRecord>> ListNameserverGroupsAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await ListNameserverGroupsAsync(db, null);
    }

    public async Task<NameserverGroupRecord> CreateNameserverGroupAsync(NewNameserverGroup group, CancellationToken cancellationToken)
    {
        var valid = DnsValidator.Validate(group);
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var existing = await ListNameserverGroupsAsync(db, tx);
        if (existing.Any(g => string.Equals(g.Name, valid.Name, StringComparison.OrdinalIgnoreCase)))
        {
            throw new NetworkValidationException("name", $"a nameserver group named '{valid.Name}' exists");
        }

        if (valid.Domains.Count == 0 && existing.FirstOrDefault(g => g.IsDefault) is { } fallback)
        {
            throw new NetworkValidationException("domain", $"'{fallback.Name}' is already the default group (no domains); give --domain, or remove it first");
        }

        foreach (var domain in valid.Domains)
        {
            if (existing.FirstOrDefault(g => g.Domains.Contains(domain)) is { } owner)
            {
                throw new NetworkValidationException("domain", $"'{domain}' is already served by group '{owner.Name}'");
            }
        }

        var record = new NameserverGroupRecord(NewId(), valid.Name, valid.Nameservers, valid.Domains, _time.GetUtcNow());
        await db.ExecuteAsync(
            "INSERT INTO nameserver_groups (id, account_id, name, nameservers, domains, created_at) VALUES (@Id, @account, @Name, @nameservers, @domains, @ms)",
            new { record.Id, account = DefaultAccountId, record.Name, nameservers = string.Join(',', record.Nameservers), domains = string.Join(',', record.Domains), ms = record.CreatedAt.ToUnixTimeMilliseconds() },
            tx);
        await BumpSerialAsync(db, tx);
        await tx.CommitAsync(cancellationToken);
        return record;
    }

    public async Task<bool> DeleteNameserverGroupAsync(string idOrName, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var deleted = await db.ExecuteAsync("DELETE FROM nameserver_groups WHERE id = @v OR name = @v COLLATE NOCASE", new { v = idOrName.Trim() }, tx);
        if (deleted > 0)
        {
            await BumpSerialAsync(db, tx);
        }

        await tx.CommitAsync(cancellationToken);
        return deleted > 0;
    }

    private static async Task<IReadOnlyList<NameserverGroupRecord>> ListNameserverGroupsAsync(SqliteConnection db, SqliteTransaction? tx)
    {
        var rows = await db.QueryAsync<(string Id, string Name, string Nameservers, string Domains, long CreatedAt)>(
            "SELECT id, name, nameservers, domains, created_at FROM nameserver_groups ORDER BY created_at, id", transaction: tx);
        return [.. rows.Select(r => new NameserverGroupRecord(r.Id, r.Name, Split(r.Nameservers), Split(r.Domains), DateTimeOffset.FromUnixTimeMilliseconds(r.CreatedAt)))];
    }

    private static string[] Split(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
