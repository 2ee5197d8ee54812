using System.Globalization;
using Modular.Abstractions.Config;

namespace Modular.Core.Config;

/// <summary>
/// Reads the keys of one TOML table into typed values, remembering which keys it was asked
/// for so <see cref="RejectUnknownKeys"/> can name a key nobody expected (with a suggestion).
/// Every error cites the file, line, column and full dotted key.
/// </summary>
internal sealed class ConfigSection
{
    private readonly TomlNode _table;
    private readonly string _file;
    private readonly HashSet<string> _known = new(StringComparer.Ordinal);

    public ConfigSection(TomlNode table, string path, string file)
    {
        _table = table;
        Path = path;
        _file = file;
    }

    /// <summary>The dotted path of this table; "" for the root.</summary>
    public string Path { get; }

    public string FullKey(string key) => Path.Length == 0 ? key : $"{Path}.{key}";

    public ConfigException Error(TomlNode at, string key, string problem)
        => new(_file, at.Position.Line, at.Position.Column, FullKey(key), problem);

    /// <summary>The raw node, marking the key as known; null when absent.</summary>
    public TomlNode? Raw(string key)
    {
        _known.Add(key);
        return _table.Find(key);
    }

    public string String(string key, string defaultValue, Func<string, string?>? validate = null, string expectation = "a string")
    {
        var node = Raw(key);
        if (node is null)
        {
            return defaultValue;
        }

        if (node.Kind != TomlKind.String)
        {
            throw Error(node, key, $"expected {expectation}, got {TomlNode.Describe(node.Kind)}");
        }

        var value = (string)node.Scalar!;
        if (validate?.Invoke(value) is { } problem)
        {
            throw Error(node, key, problem);
        }

        return value;
    }

    /// <summary>A string that must be one of <paramref name="allowed"/> (compared exactly).</summary>
    public string OneOf(string key, string defaultValue, params string[] allowed)
    {
        var expectation = string.Join(" or ", allowed.Select(a => $"\"{a}\""));
        return String(
            key,
            defaultValue,
            value => allowed.Contains(value, StringComparer.Ordinal) ? null : $"expected {expectation}, got \"{value}\"",
            expectation);
    }

    public bool Bool(string key, bool defaultValue)
    {
        var node = Raw(key);
        if (node is null)
        {
            return defaultValue;
        }

        return node.Kind == TomlKind.Boolean
            ? (bool)node.Scalar!
            : throw Error(node, key, $"expected true or false, got {TomlNode.Describe(node.Kind)}");
    }

    /// <summary>A boolean that may be absent: null then, so the caller can tell "not written" from false.</summary>
    public bool? OptionalBool(string key) => _table.Find(key) is null ? MarkKnown(key) : Bool(key, false);

    public int Int(string key, int defaultValue, int min, int max)
    {
        var node = Raw(key);
        if (node is null)
        {
            return defaultValue;
        }

        var expectation = $"an integer between {min} and {max}";
        if (node.Kind != TomlKind.Integer)
        {
            throw Error(node, key, $"expected {expectation}, got {TomlNode.Describe(node.Kind)}");
        }

        var value = (long)node.Scalar!;
        return value < min || value > max
            ? throw Error(node, key, $"expected {expectation}, got {value.ToString(CultureInfo.InvariantCulture)}")
            : (int)value;
    }

    public TimeSpan Duration(string key, TimeSpan defaultValue)
    {
        const string Expectation = "a positive duration such as \"90s\", \"15m\" or \"1h30m\"";
        var node = Raw(key);
        if (node is null)
        {
            return defaultValue;
        }

        if (node.Kind != TomlKind.String)
        {
            throw Error(node, key, $"expected {Expectation}, got {TomlNode.Describe(node.Kind)}");
        }

        var text = (string)node.Scalar!;
        return ConfigDuration.TryParse(text, out var duration) && duration > TimeSpan.Zero
            ? duration
            : throw Error(node, key, $"expected {Expectation}, got \"{text}\"");
    }

    public IReadOnlyList<string> StringList(string key)
    {
        var node = Raw(key);
        if (node is null)
        {
            return [];
        }

        if (node.Kind != TomlKind.Array)
        {
            throw Error(node, key, $"expected an array of strings, got {TomlNode.Describe(node.Kind)}");
        }

        var result = new List<string>(node.Items.Count);
        foreach (var item in node.Items)
        {
            if (item.Kind != TomlKind.String)
            {
                throw Error(item, key, $"expected an array of strings, got an element that is {TomlNode.Describe(item.Kind)}");
            }

            result.Add((string)item.Scalar!);
        }

        return result;
    }

    /// <summary>A sub-table ([name] or inline); an empty one when absent.</summary>
    private bool? MarkKnown(string key)
    {
        _known.Add(key);
        return null;
    }

    public ConfigSection Section(string key)
    {
        var node = Raw(key);
        if (node is null)
        {
            return new ConfigSection(TomlNode.NewTable(new SourcePosition(0, 0)), FullKey(key), _file);
        }

        return node.Kind == TomlKind.Table
            ? new ConfigSection(node, FullKey(key), _file)
            : throw Error(node, key, $"expected a table, got {TomlNode.Describe(node.Kind)}");
    }

    /// <summary>Every key of this table as a table of its own, e.g. the [plugins.NAME] sections.</summary>
    public IEnumerable<(string Key, TomlNode Table)> SubTables()
    {
        foreach (var (key, _, value) in _table.Entries)
        {
            _known.Add(key);
            yield return value.Kind == TomlKind.Table
                ? (key, value)
                : throw Error(value, key, $"expected a table, got {TomlNode.Describe(value.Kind)}");
        }
    }

    /// <summary>Throws for the first key that no reader asked for, suggesting the nearest known key.</summary>
    public void RejectUnknownKeys()
    {
        foreach (var (key, keyPosition, _) in _table.Entries)
        {
            if (_known.Contains(key))
            {
                continue;
            }

            var tableName = Path.Length == 0 ? "root" : Path;
            var problem = $"unknown key '{key}' in table {tableName}";
            var suggestion = Suggest(key, _known);
            if (suggestion is not null)
            {
                problem += $"; did you mean '{suggestion}'?";
            }
            else
            {
                problem += $"; known keys: {string.Join(", ", _known.Order(StringComparer.Ordinal))}";
            }

            throw new ConfigException(_file, keyPosition.Line, keyPosition.Column, FullKey(key), problem);
        }
    }

    /// <summary>The candidate closest to <paramref name="key"/> when it is a likely typo (edit distance at most 2).</summary>
    public static string? Suggest(string key, IEnumerable<string> candidates)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var candidate in candidates)
        {
            var distance = EditDistance(key, candidate);
            if (distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }

        return bestDistance <= Math.Max(2, key.Length / 4) ? best : null;
    }

    private static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = char.ToLowerInvariant(a[i - 1]) == char.ToLowerInvariant(b[j - 1]) ? 0 : 1;
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }
}
