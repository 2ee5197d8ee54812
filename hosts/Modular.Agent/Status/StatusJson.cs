using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Modular.Core.Status;

namespace Modular.Agent.Status;

/// <summary>
/// The JSON form of `modular status --json`: the field names of DESIGN.md (snake_case),
/// enums by name (Idle, P2P), absent values as null, times as ISO 8601 UTC.
/// </summary>
internal static class StatusJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        // Keys and URLs print as they are ("+", "&"): this is terminal and script output, not HTML.
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Converters = { new JsonStringEnumConverter(), new UtcTimestampConverter() },
    };

    public static string Serialize(AgentStatus status) => JsonSerializer.Serialize(status, Options);

    public static string Serialize<T>(T value) => JsonSerializer.Serialize(value, Options);

    /// <summary>"2026-11-25T14:29:47.123Z" whatever offset the time was recorded with.</summary>
    private sealed class UtcTimestampConverter : JsonConverter<DateTimeOffset>
    {
        public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
            => DateTimeOffset.Parse(reader.GetString() ?? "", CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

        public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options)
            => writer.WriteStringValue(value.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
    }
}
