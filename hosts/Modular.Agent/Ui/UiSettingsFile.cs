using System.Text.Json;

namespace Modular.Agent.Ui;

/// <summary>
/// What the user switched in the local UI, kept in the state directory (ui-settings.json, 0600) so the choice survives a
/// restart. A damaged file is reported and ignored: it never stops the agent.
/// </summary>
internal sealed class UiSettingsFile(string stateDir)
{
    private const UnixFileMode OwnerOnlyFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public string Path { get; } = System.IO.Path.Combine(stateDir, "ui-settings.json");

    /// <summary>The saved lazy-connections switch; null when none was saved. Throws <see cref="InvalidDataException"/> for a damaged file.</summary>
    public bool? LoadLazyConnections()
    {
        if (!File.Exists(Path))
        {
            return null;
        }

        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(Path));
            return document.RootElement.ValueKind == JsonValueKind.Object
                   && document.RootElement.TryGetProperty("lazy_connections", out var value)
                   && value.ValueKind is JsonValueKind.True or JsonValueKind.False
                ? value.GetBoolean()
                : throw new InvalidDataException($"{Path}: expected {{\"lazy_connections\": true|false}}");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{Path}: not JSON ({e.Message})", e);
        }
    }

    /// <summary>Writes the switch atomically (a temporary file renamed over the old one).</summary>
    public void SaveLazyConnections(bool enabled)
    {
        var temporary = Path + ".tmp";
        using (var stream = new FileStream(temporary, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = OwnerOnlyFile }))
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            writer.WriteStartObject();
            writer.WriteBoolean("lazy_connections", enabled);
            writer.WriteEndObject();
        }

        File.Move(temporary, Path, overwrite: true);
    }
}
