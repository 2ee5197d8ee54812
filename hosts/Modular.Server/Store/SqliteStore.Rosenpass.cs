using Dapper;
using Microsoft.Data.Sqlite;

namespace Modular.Server.Store;

/// <summary>
/// Rosenpass public keys, once per fingerprint, each owned by the peer that published it and deleted with that peer
/// (ON DELETE CASCADE). A key is half a megabyte: the map carries only its fingerprint, and agents fetch it once.
/// </summary>
public interface IRosenpassKeyStore
{
    /// <summary>
    /// Stores <paramref name="publicKey"/> under <paramref name="fingerprint"/> for the peer <paramref name="peerId"/>
    /// (the caller checked that the fingerprint matches). The peer's older keys go: an agent has one Rosenpass key.
    /// Publishing a key already stored for this peer changes nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another peer owns this fingerprint.</exception>
    Task PutRosenpassKeyAsync(string peerId, byte[] fingerprint, byte[] publicKey, CancellationToken cancellationToken);

    /// <summary>The key with <paramref name="fingerprint"/>; null when no (live) peer published it.</summary>
    Task<byte[]?> GetRosenpassKeyAsync(byte[] fingerprint, CancellationToken cancellationToken);
}

/// <summary>The Rosenpass key table: its own idempotent step (keyed on the table's existence, as the DNS table's).</summary>
public sealed partial class SqliteStore : IRosenpassKeyStore
{
    private static async Task MigrateRosenpassKeysAsync(SqliteConnection db, SqliteTransaction tx)
    {
        await db.ExecuteAsync(
            """
            CREATE TABLE IF NOT EXISTS rosenpass_keys (
                fingerprint BLOB PRIMARY KEY,  -- BLAKE2s-256 of public_key
                peer_id TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
                public_key BLOB NOT NULL,
                created_at INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS rosenpass_keys_peer ON rosenpass_keys(peer_id);
            """,
            transaction: tx);
    }

    public async Task PutRosenpassKeyAsync(string peerId, byte[] fingerprint, byte[] publicKey, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        var owner = await db.QuerySingleOrDefaultAsync<string>("SELECT peer_id FROM rosenpass_keys WHERE fingerprint = @f", new { f = fingerprint }, tx);
        if (owner is not null && owner != peerId)
        {
            throw new InvalidOperationException("another peer published this Rosenpass key");
        }

        await db.ExecuteAsync("DELETE FROM rosenpass_keys WHERE peer_id = @p AND fingerprint <> @f", new { p = peerId, f = fingerprint }, tx);
        if (owner is null)
        {
            await db.ExecuteAsync(
                "INSERT INTO rosenpass_keys (fingerprint, peer_id, public_key, created_at) VALUES (@f, @p, @k, @now)",
                new { f = fingerprint, p = peerId, k = publicKey, now = _time.GetUtcNow().ToUnixTimeSeconds() },
                tx);
        }

        await tx.CommitAsync(cancellationToken);
    }

    public async Task<byte[]?> GetRosenpassKeyAsync(byte[] fingerprint, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await db.QuerySingleOrDefaultAsync<byte[]>("SELECT public_key FROM rosenpass_keys WHERE fingerprint = @f", new { f = fingerprint });
    }
}
