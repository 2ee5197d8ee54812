using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Modular.Core.Status;

namespace Modular.Agent.Status;

/// <summary>
/// The JSON the CLI prints: the field names of DESIGN.md (snake_case), enums by name (Idle,
/// P2P), absent values as null, times as ISO 8601 UTC. Source-generated, so a cold `modular
/// status --json` with thousands of peers does not pay for reflection.
/// </summary>
internal static class StatusJson
{
    // Keys and URLs print as they are ("+", "&"): this is terminal and script output, not HTML.
    private static readonly CliJsonContext Context = new(new JsonSerializerOptions(CliJsonContext.Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });

    public static string Serialize(AgentStatus status) => JsonSerializer.Serialize(status, Context.AgentStatus);

    public static string Serialize(PluginsDocument plugins) => JsonSerializer.Serialize(plugins, Context.PluginsDocument);
}

/// <summary>`modular plugins --json`.</summary>
internal sealed record PluginsDocument(string PluginsDir, string Source, IReadOnlyList<PluginDocument> Plugins);

/// <param name="RelayedPeers">A proxy plugin's relayed peers, from a running daemon (empty otherwise).</param>
internal sealed record PluginDocument(
    string Name, string Kind, string? Version, string AssemblyPath, bool Loaded, string? Error, string? Description, IReadOnlyList<string> RelayedPeers);

/// <summary>"2026-11-25T14:29:47.123Z" whatever offset the time was recorded with.</summary>
internal sealed class UtcTimestampConverter : JsonConverter<DateTimeOffset>
{
    public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        => DateTimeOffset.Parse(reader.GetString() ?? "", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options)
        => writer.WriteStringValue(value.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    UseStringEnumConverter = true,
    Converters = [typeof(UtcTimestampConverter)])]
[JsonSerializable(typeof(AgentStatus))]
[JsonSerializable(typeof(PluginsDocument))]
internal sealed partial class CliJsonContext : JsonSerializerContext;
