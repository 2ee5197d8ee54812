using System.Collections.Concurrent;
using System.Text.Json;
using Modular.Core.Firewall.Nftables;

namespace Modular.Core.Tests.Firewall.Nftables;

/// <summary>
/// nftables in memory for unit tests (the enforcer's and the route manager's): records every script accepted and
/// every table deleted, refuses on demand with nft's kind of message, and lists the table as nft's JSON with
/// counters a test sets (reset when the table is replaced).
/// </summary>
internal sealed class FakeNftables : INftables
{
    private readonly Lock _lock = new();

    public List<string> Applied { get; } = [];

    public ConcurrentQueue<string> Deleted { get; } = new();

    /// <summary>When set, every apply fails with this message (as nft prints it).</summary>
    public string? RefuseWith { get; set; }

    /// <summary>Packets per named counter of the table in force.</summary>
    public Dictionary<string, long> Counters { get; } = new(StringComparer.Ordinal);

    public bool TableExists { get; private set; }

    /// <summary>Runs on every counter listing (e.g. to let a fake clock pass as a slow nft would).</summary>
    public Action? OnList { get; set; }

    public Task ApplyAsync(string script, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (RefuseWith is { } message)
            {
                throw new IOException($"nft -f -: {message}");
            }

            Applied.Add(script);
            Counters.Clear();
            TableExists = true;
        }

        return Task.CompletedTask;
    }

    public Task DeleteTableAsync(string family, string table, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            Deleted.Enqueue($"{family} {table}");
            TableExists = false;
        }

        return Task.CompletedTask;
    }

    public Task<string?> ListCountersJsonAsync(string family, string table, CancellationToken cancellationToken)
    {
        OnList?.Invoke();
        lock (_lock)
        {
            if (!TableExists)
            {
                return Task.FromResult<string?>(null);
            }

            var counters = Counters.Select(pair => (object)new Dictionary<string, object>
            {
                ["counter"] = new Dictionary<string, object> { ["family"] = family, ["name"] = pair.Key, ["table"] = table, ["packets"] = pair.Value, ["bytes"] = pair.Value * 100 },
            });
            return Task.FromResult<string?>(JsonSerializer.Serialize(new Dictionary<string, object> { ["nftables"] = counters.ToArray() }));
        }
    }
}
