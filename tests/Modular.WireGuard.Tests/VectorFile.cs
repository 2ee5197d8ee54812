using System.Text.Json;

namespace Modular.WireGuard.Tests;

/// <summary>Reads the independent WireGuard vectors copied from ../shared/vectors/wireguard.</summary>
internal static class VectorFile
{
    private static readonly Lazy<JsonDocument> Document = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Vectors", "wireguard-vectors.json"))));

    public static JsonElement Root => Document.Value.RootElement;

    public static IEnumerable<JsonElement> Handshakes
    {
        get
        {
            foreach (var handshake in Root.GetProperty("handshakes").EnumerateArray())
            {
                yield return handshake;
            }

            foreach (var cookie in Root.GetProperty("cookies").EnumerateArray())
            {
                if (cookie.TryGetProperty("handshake", out var handshake))
                {
                    yield return handshake;
                }
            }
        }
    }

    public static JsonElement Handshake(string name) => Handshakes.First(h => h.GetProperty("name").GetString() == name);

    public static JsonElement Cookie(string name) => Root.GetProperty("cookies").EnumerateArray().First(c => c.GetProperty("name").GetString() == name);

    public static TheoryData<string> HandshakeNames()
    {
        var data = new TheoryData<string>();
        foreach (var handshake in Handshakes)
        {
            data.Add(handshake.GetProperty("name").GetString()!);
        }

        return data;
    }

    public static byte[] Hex(this JsonElement element, string property) => Convert.FromHexString(element.GetProperty(property).GetString()!);

    public static byte[]? HexOrNull(this JsonElement element, string property)
        => element.GetProperty(property).ValueKind == JsonValueKind.Null ? null : element.Hex(property);
}
