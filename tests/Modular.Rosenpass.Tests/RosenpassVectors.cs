using System.Text.Json;

namespace Modular.Rosenpass.Tests;

/// <summary>
/// Reads Vectors/vectors.json, the upstream Rosenpass reference values (official ones and the
/// computed ones marked so; Vectors/README.md says which is which). Its keys often carry a
/// description in parentheses, so <see cref="Get"/> matches a key by its first word(s).
/// </summary>
internal static class RosenpassVectors
{
    private static readonly Lazy<JsonDocument> Document = new(() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Vectors", "vectors.json"))));

    public static JsonElement Root => Document.Value.RootElement;

    /// <summary>The property named <paramref name="name"/>, or whose name starts with "<paramref name="name"/> ".</summary>
    public static JsonElement Get(this JsonElement element, string name)
    {
        if (element.TryGetProperty(name, out var exact))
        {
            return exact;
        }

        var matches = element.EnumerateObject().Where(p => p.Name.StartsWith(name + " ", StringComparison.Ordinal)).ToList();
        Assert.True(matches.Count == 1, $"vectors.json: expected one key starting with '{name}', found {matches.Count}");
        return matches[0].Value;
    }

    /// <summary>A byte string: a hex string, or an object with "hex" or "b64" (checked against its length).</summary>
    public static byte[] Bytes(this JsonElement element)
    {
        if (element.ValueKind == JsonValueKind.String)
        {
            return Convert.FromHexString(element.GetString()!);
        }

        byte[] bytes = element.TryGetProperty("hex", out var hex)
            ? Convert.FromHexString(hex.GetString()!)
            : Convert.FromBase64String(element.GetProperty("b64").GetString()!);
        if (element.TryGetProperty("len", out var len))
        {
            Assert.Equal(len.GetInt32(), bytes.Length);
        }

        return bytes;
    }

    public static byte[] Bytes(this JsonElement element, string name) => element.Get(name).Bytes();

    public static string Hex(byte[] bytes) => Convert.ToHexStringLower(bytes);

    public static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    public static JsonElement Handshake(string version) => version switch
    {
        "V03" => Root.GetProperty("handshake_V03_shake256_official"),
        "V02" => Root.GetProperty("handshake_V02_blake2b_computed"),
        _ => throw new ArgumentOutOfRangeException(nameof(version)),
    };

    /// <summary>The recorded inputs (keys, session ids, KEM outputs); the same for both versions.</summary>
    public static JsonElement Inputs => Root.GetProperty("handshake_V03_shake256_official").GetProperty("inputs");
}
