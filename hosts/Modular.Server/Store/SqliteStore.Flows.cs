using System.Net;
using Dapper;
using Microsoft.Data.Sqlite;
using Modular.Abstractions.Flows;
using Modular.Server.Flows;

namespace Modular.Server.Store;

/// <summary>
/// Flow events (<see cref="IFlowStore"/>). Their table is created by its own idempotent step (keyed on the table's
/// existence, not on user_version), as the nameserver groups' is. UNIQUE(peer_id, event_id) is what keeps an event
/// once across retries and restarts; the foreign key deletes a peer's events with the peer.
/// </summary>
public sealed partial class SqliteStore : IFlowStore
{
    private static async Task MigrateFlowsAsync(SqliteConnection db, SqliteTransaction tx)
    {
        await db.ExecuteAsync(
            """
            CREATE TABLE IF NOT EXISTS flow_events (
                peer_id TEXT NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
                event_id TEXT NOT NULL,
                flow_id TEXT NOT NULL,
                at INTEGER NOT NULL,          -- the event's time, unix ms (retention and --since go by it)
                received_at INTEGER NOT NULL, -- when the server stored it, unix ms
                type INTEGER NOT NULL,        -- FlowEventType: 0 start, 1 end, 2 drop
                direction INTEGER NOT NULL,   -- FlowDirection: 0 ingress, 1 egress
                protocol INTEGER NOT NULL,
                src_ip TEXT NOT NULL,
                src_port INTEGER NOT NULL,
                dst_ip TEXT NOT NULL,
                dst_port INTEGER NOT NULL,
                icmp_type INTEGER NOT NULL,
                icmp_code INTEGER NOT NULL,
                rx_packets INTEGER NOT NULL,
                rx_bytes INTEGER NOT NULL,
                tx_packets INTEGER NOT NULL,
                tx_bytes INTEGER NOT NULL,
                rule_id TEXT NULL,
                src_resource TEXT NULL,
                dst_resource TEXT NULL,
                UNIQUE (peer_id, event_id));
            CREATE INDEX IF NOT EXISTS flow_events_at ON flow_events (at);
            CREATE INDEX IF NOT EXISTS flow_events_peer_at ON flow_events (peer_id, at);
            """,
            transaction: tx);
    }

    public async Task<IReadOnlyList<FlowEvent>> AddFlowEventsAsync(string peerId, IReadOnlyList<FlowEvent> events, DateTimeOffset keepSince, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(events);
        var added = new List<FlowEvent>();
        var now = Now();
        await using var db = await OpenAsync(cancellationToken);
        await using var tx = (SqliteTransaction)await db.BeginTransactionAsync(System.Data.IsolationLevel.Serializable, cancellationToken);
        foreach (var e in events)
        {
            if (e.Timestamp < keepSince)
            {
                continue;
            }

            // The counters are ulong; SQLite's INTEGER is signed 64-bit: a value past long.MaxValue is kept as the largest.
            var inserted = await db.ExecuteAsync(
                """
                INSERT OR IGNORE INTO flow_events (peer_id, event_id, flow_id, at, received_at, type, direction, protocol,
                    src_ip, src_port, dst_ip, dst_port, icmp_type, icmp_code, rx_packets, rx_bytes, tx_packets, tx_bytes,
                    rule_id, src_resource, dst_resource)
                VALUES (@peerId, @id, @flowId, @at, @now, @type, @direction, @protocol, @srcIp, @srcPort, @dstIp, @dstPort,
                    @icmpType, @icmpCode, @rxPackets, @rxBytes, @txPackets, @txBytes, @ruleId, @srcResource, @dstResource)
                """,
                new
                {
                    peerId,
                    id = e.Id.ToString("D"),
                    flowId = e.FlowId.ToString("D"),
                    at = e.Timestamp.ToUnixTimeMilliseconds(),
                    now,
                    type = (int)e.Type,
                    direction = (int)e.Direction,
                    protocol = (int)e.Protocol,
                    srcIp = e.SourceAddress.ToString(),
                    srcPort = (int)e.SourcePort,
                    dstIp = e.DestinationAddress.ToString(),
                    dstPort = (int)e.DestinationPort,
                    icmpType = (int)e.IcmpType,
                    icmpCode = (int)e.IcmpCode,
                    rxPackets = Clamp(e.RxPackets),
                    rxBytes = Clamp(e.RxBytes),
                    txPackets = Clamp(e.TxPackets),
                    txBytes = Clamp(e.TxBytes),
                    ruleId = e.RuleId,
                    srcResource = e.SourceResourceId,
                    dstResource = e.DestinationResourceId,
                },
                tx);
            if (inserted > 0)
            {
                added.Add(e);
            }
        }

        await tx.CommitAsync(cancellationToken);
        return added;
    }

    public async Task<IReadOnlyList<StoredFlowEvent>> ListFlowEventsAsync(string? peerReference, DateTimeOffset? since, int limit, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        string? peerId = null;
        if (peerReference is not null)
        {
            await using var tx = db.BeginTransaction();
            var rows = await FindPeersAsync(db, tx, peerReference);
            if (rows.Count != 1)
            {
                throw rows.Count == 0
                    ? new KeyNotFoundException($"no peer matches '{peerReference.Trim()}'")
                    : new AmbiguousPeerException(
                        $"'{peerReference.Trim()}' matches {rows.Count} peers: "
                        + string.Join(", ", rows.Select(r => $"{r.dns_label} ({OverlayNetwork.ToAddress((uint)r.overlay_ip)})"))
                        + "; name one by its DNS label, overlay IP or public key");
            }

            peerId = rows[0].id;
        }

        var found = await db.QueryAsync<FlowRow>(
            """
            SELECT * FROM (
                SELECT f.*, p.hostname AS peer_name, p.overlay_ip AS peer_ip FROM flow_events f JOIN peers p ON p.id = f.peer_id
                WHERE (@peerId IS NULL OR f.peer_id = @peerId) AND f.at >= @since
                ORDER BY f.at DESC, f.rowid DESC LIMIT @limit)
            ORDER BY at, event_id
            """,
            new { peerId, since = since?.ToUnixTimeMilliseconds() ?? long.MinValue, limit = Math.Max(0, limit) });
        return [.. found.Select(r => r.ToRecord())];
    }

    public async Task<int> DeleteFlowEventsBeforeAsync(DateTimeOffset cutoff, CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await db.ExecuteAsync("DELETE FROM flow_events WHERE at < @cutoff", new { cutoff = cutoff.ToUnixTimeMilliseconds() });
    }

    public async Task<long> CountFlowEventsAsync(CancellationToken cancellationToken)
    {
        await using var db = await OpenAsync(cancellationToken);
        return await db.ExecuteScalarAsync<long>("SELECT COUNT(*) FROM flow_events");
    }

    private static long Clamp(ulong value) => value > long.MaxValue ? long.MaxValue : (long)value;

#pragma warning disable IDE1006, CA1812, SA1300 // Dapper maps snake_case columns onto these names.
    private sealed class FlowRow
    {
        public string peer_id { get; set; } = "";
        public string event_id { get; set; } = "";
        public string flow_id { get; set; } = "";
        public long at { get; set; }
        public long received_at { get; set; }
        public long type { get; set; }
        public long direction { get; set; }
        public long protocol { get; set; }
        public string src_ip { get; set; } = "";
        public long src_port { get; set; }
        public string dst_ip { get; set; } = "";
        public long dst_port { get; set; }
        public long icmp_type { get; set; }
        public long icmp_code { get; set; }
        public long rx_packets { get; set; }
        public long rx_bytes { get; set; }
        public long tx_packets { get; set; }
        public long tx_bytes { get; set; }
        public string? rule_id { get; set; }
        public string? src_resource { get; set; }
        public string? dst_resource { get; set; }
        public string peer_name { get; set; } = "";
        public long peer_ip { get; set; }

        public StoredFlowEvent ToRecord() => new(
            peer_id,
            peer_name,
            OverlayNetwork.ToAddress((uint)peer_ip),
            new FlowEvent(
                Guid.Parse(event_id),
                Guid.Parse(flow_id),
                DateTimeOffset.FromUnixTimeMilliseconds(at),
                (FlowEventType)type,
                (FlowDirection)direction,
                (byte)protocol,
                IPAddress.Parse(src_ip),
                (ushort)src_port,
                IPAddress.Parse(dst_ip),
                (ushort)dst_port,
                (byte)icmp_type,
                (byte)icmp_code,
                (ulong)rx_packets,
                (ulong)rx_bytes,
                (ulong)tx_packets,
                (ulong)tx_bytes,
                rule_id,
                src_resource,
                dst_resource),
            DateTimeOffset.FromUnixTimeMilliseconds(received_at));
    }
#pragma warning restore IDE1006, CA1812, SA1300
}
