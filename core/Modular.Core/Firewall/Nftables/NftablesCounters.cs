using System.Text.Json;

namespace Modular.Core.Firewall.Nftables;

/// <summary>Reads rule counters out of `nft -j list table` output.</summary>
public static class NftablesCounters
{
    /// <summary>
    /// Packets counted per rule comment (summed when several rules share one, as a policy rule split over
    /// address families or port ranges does). Rules without a comment or a counter are left out. Output that
    /// is not nft's JSON gives false, never an exception.
    /// </summary>
    public static bool TryParse(string json, out IReadOnlyDictionary<string, long> packetsByComment)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        packetsByComment = counts;
        try
        {
            using var document = JsonDocument.Parse(json);
            if (document.RootElement.ValueKind != JsonValueKind.Object
                || !document.RootElement.TryGetProperty("nftables", out var items) || items.ValueKind != JsonValueKind.Array)
            {
                return false;
            }

            foreach (var item in items.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("rule", out var rule) || rule.ValueKind != JsonValueKind.Object
                    || !rule.TryGetProperty("comment", out var comment) || comment.ValueKind != JsonValueKind.String
                    || !rule.TryGetProperty("expr", out var expressions) || expressions.ValueKind != JsonValueKind.Array)
                {
                    continue;
                }

                foreach (var expression in expressions.EnumerateArray())
                {
                    if (expression.ValueKind == JsonValueKind.Object && expression.TryGetProperty("counter", out var counter)
                        && counter.ValueKind == JsonValueKind.Object && counter.TryGetProperty("packets", out var packets) && packets.ValueKind == JsonValueKind.Number
                        && packets.TryGetInt64(out var value))
                    {
                        var key = comment.GetString()!;
                        counts[key] = counts.GetValueOrDefault(key) + value;
                    }
                }
            }

            return true;
        }
        catch (JsonException)
        {
            counts.Clear();
            return false;
        }
    }
}
