using System.Text.Json;

namespace Modular.Core.Firewall.Nftables;

/// <summary>Reads named counters out of nft's JSON (`nft -j list counters table ...` or `nft -j list table ...`).</summary>
public static class NftablesCounters
{
    /// <summary>
    /// Packets per named counter object. Anonymous rule counters are not read (accept rules carry those, for
    /// `nft list` readers). Output that is not nft's JSON gives false, never an exception.
    /// </summary>
    public static bool TryParse(string json, out IReadOnlyDictionary<string, long> packetsByCounter)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        packetsByCounter = counts;
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
                if (item.ValueKind == JsonValueKind.Object && item.TryGetProperty("counter", out var counter) && counter.ValueKind == JsonValueKind.Object
                    && counter.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String
                    && counter.TryGetProperty("packets", out var packets) && packets.ValueKind == JsonValueKind.Number && packets.TryGetInt64(out var value))
                {
                    counts[name.GetString()!] = value;
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
