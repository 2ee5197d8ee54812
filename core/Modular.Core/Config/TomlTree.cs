using Tomlyn.Parsing;
using Tomlyn.Syntax;

namespace Modular.Core.Config;

/// <summary>What a TOML value is, in the words error messages use.</summary>
internal enum TomlKind
{
    String,
    Integer,
    Float,
    Boolean,
    DateTime,
    Array,
    Table,
}

/// <summary>One TOML value with where it was written; tables keep their keys in file order.</summary>
internal sealed class TomlNode
{
    private TomlNode(TomlKind kind, SourcePosition position)
    {
        Kind = kind;
        Position = position;
    }

    public TomlKind Kind { get; }

    /// <summary>Where the value (or, for a [table], its header) starts.</summary>
    public SourcePosition Position { get; }

    /// <summary>string, long, double, bool or DateTime for scalars.</summary>
    public object? Scalar { get; private init; }

    public List<TomlNode> Items { get; } = [];

    /// <summary>Keys in file order with the position of the key itself.</summary>
    public List<(string Key, SourcePosition KeyPosition, TomlNode Value)> Entries { get; } = [];

    public static TomlNode NewScalar(TomlKind kind, object value, SourcePosition position) => new(kind, position) { Scalar = value };

    public static TomlNode NewArray(SourcePosition position) => new(TomlKind.Array, position);

    public static TomlNode NewTable(SourcePosition position) => new(TomlKind.Table, position);

    public TomlNode? Find(string key)
    {
        foreach (var (k, _, v) in Entries)
        {
            if (k == key)
            {
                return v;
            }
        }

        return null;
    }

    public static string Describe(TomlKind kind) => kind switch
    {
        TomlKind.String => "a string",
        TomlKind.Integer => "an integer",
        TomlKind.Float => "a float",
        TomlKind.Boolean => "a boolean",
        TomlKind.DateTime => "a date-time",
        TomlKind.Array => "an array",
        _ => "a table",
    };

    /// <summary>The value as the plain objects plugins receive (see IPluginContext.Settings).</summary>
    public object? ToPlain() => Kind switch
    {
        TomlKind.Array => Items.Select(i => i.ToPlain()).ToList(),
        TomlKind.Table => ToPlainTable(),
        _ => Scalar,
    };

    public IReadOnlyDictionary<string, object?> ToPlainTable()
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (k, _, v) in Entries)
        {
            result[k] = v.ToPlain();
        }

        return result;
    }
}

/// <summary>
/// Turns TOML text into <see cref="TomlNode"/>s using Tomlyn's syntax tree, so every value
/// keeps its line and column for error messages.
/// </summary>
internal static class TomlTreeReader
{
    /// <summary>Parses <paramref name="toml"/>; a syntax error is a <see cref="ConfigException"/> at its position.</summary>
    public static TomlNode Read(string toml, string sourceName)
    {
        DocumentSyntax document;
        try
        {
            document = SyntaxParser.Parse(toml, sourceName, validate: true);
        }
        catch (Exception ex) when (ex is not ConfigException)
        {
            throw new ConfigException(sourceName, 0, 0, null, $"not valid TOML: {ex.Message}");
        }

        foreach (var diagnostic in document.Diagnostics)
        {
            if (diagnostic.Kind == DiagnosticMessageKind.Error)
            {
                var at = ToPosition(diagnostic.Span.Start);
                throw new ConfigException(sourceName, at.Line, at.Column, null, $"TOML syntax error: {diagnostic.Message}");
            }
        }

        var root = TomlNode.NewTable(new SourcePosition(1, 1));
        foreach (var keyValue in document.KeyValues)
        {
            AddKeyValue(root, keyValue, sourceName);
        }

        foreach (var table in document.Tables)
        {
            var header = table.Name ?? throw new ConfigException(sourceName, 0, 0, null, "a table header has no name");
            var segments = KeySegments(header);
            var position = ToPosition(header.Span.Start);
            var parent = Descend(root, segments.AsSpan(0, segments.Length - 1), position, sourceName, string.Join('.', segments));
            var last = segments[^1];
            TomlNode target;
            if (table is TableArraySyntax)
            {
                var array = parent.Find(last.Text);
                if (array is null)
                {
                    array = TomlNode.NewArray(position);
                    parent.Entries.Add((last.Text, last.Position, array));
                }
                else if (array.Kind != TomlKind.Array)
                {
                    throw new ConfigException(sourceName, position.Line, position.Column, string.Join('.', segments), "defined twice");
                }

                target = TomlNode.NewTable(position);
                array.Items.Add(target);
            }
            else
            {
                var existing = parent.Find(last.Text);
                if (existing is { Kind: TomlKind.Table })
                {
                    target = existing;
                }
                else if (existing is null)
                {
                    target = TomlNode.NewTable(position);
                    parent.Entries.Add((last.Text, last.Position, target));
                }
                else
                {
                    throw new ConfigException(sourceName, position.Line, position.Column, string.Join('.', segments), "defined twice");
                }
            }

            foreach (var keyValue in table.Items)
            {
                AddKeyValue(target, keyValue, sourceName);
            }
        }

        return root;
    }

    private static void AddKeyValue(TomlNode table, KeyValueSyntax keyValue, string sourceName)
    {
        var key = keyValue.Key ?? throw new ConfigException(sourceName, 0, 0, null, "a key/value pair has no key");
        var segments = KeySegments(key);
        var parent = Descend(table, segments.AsSpan(0, segments.Length - 1), segments[0].Position, sourceName, string.Join('.', segments));
        var last = segments[^1];
        if (parent.Find(last.Text) is not null)
        {
            throw new ConfigException(sourceName, last.Position.Line, last.Position.Column, last.Text, "defined twice");
        }

        var value = keyValue.Value ?? throw new ConfigException(sourceName, last.Position.Line, last.Position.Column, last.Text, "has no value");
        parent.Entries.Add((last.Text, last.Position, Convert(value, sourceName)));
    }

    private static TomlNode Descend(TomlNode from, ReadOnlySpan<KeySegment> path, SourcePosition position, string sourceName, string fullKey)
    {
        var current = from;
        foreach (var segment in path)
        {
            var next = current.Find(segment.Text);
            if (next is null)
            {
                next = TomlNode.NewTable(segment.Position);
                current.Entries.Add((segment.Text, segment.Position, next));
            }
            else if (next.Kind == TomlKind.Array && next.Items.Count > 0 && next.Items[^1].Kind == TomlKind.Table)
            {
                // [[a]] followed by [a.b]: b belongs to the last element of a.
                next = next.Items[^1];
            }
            else if (next.Kind != TomlKind.Table)
            {
                throw new ConfigException(sourceName, position.Line, position.Column, fullKey, $"'{segment.Text}' is already {TomlNode.Describe(next.Kind)}, not a table");
            }

            current = next;
        }

        return current;
    }

    private static TomlNode Convert(ValueSyntax value, string sourceName)
    {
        var position = ToPosition(value.Span.Start);
        switch (value)
        {
            case StringValueSyntax s:
                return TomlNode.NewScalar(TomlKind.String, s.Value ?? "", position);
            case IntegerValueSyntax i:
                return TomlNode.NewScalar(TomlKind.Integer, i.Value, position);
            case FloatValueSyntax f:
                return TomlNode.NewScalar(TomlKind.Float, f.Value, position);
            case BooleanValueSyntax b:
                return TomlNode.NewScalar(TomlKind.Boolean, b.Value, position);
            case DateTimeValueSyntax d:
                return TomlNode.NewScalar(TomlKind.DateTime, d.Value.DateTime.UtcDateTime, position);
            case ArraySyntax a:
                var array = TomlNode.NewArray(position);
                foreach (var item in a.Items)
                {
                    if (item.Value is { } itemValue)
                    {
                        array.Items.Add(Convert(itemValue, sourceName));
                    }
                }

                return array;
            case InlineTableSyntax t:
                var table = TomlNode.NewTable(position);
                foreach (var item in t.Items)
                {
                    if (item.KeyValue is { } kv)
                    {
                        AddKeyValue(table, kv, sourceName);
                    }
                }

                return table;
            default:
                throw new ConfigException(sourceName, position.Line, position.Column, null, $"unsupported TOML value {value.Kind}");
        }
    }

    private readonly record struct KeySegment(string Text, SourcePosition Position);

    private static KeySegment[] KeySegments(KeySyntax key)
    {
        var segments = new List<KeySegment>();
        if (key.Key is { } first)
        {
            segments.Add(new KeySegment(KeyText(first), ToPosition(first.Span.Start)));
        }

        foreach (var dotted in key.DotKeys)
        {
            if (dotted.Key is { } part)
            {
                segments.Add(new KeySegment(KeyText(part), ToPosition(part.Span.Start)));
            }
        }

        return [.. segments];
    }

    private static string KeyText(BareKeyOrStringValueSyntax key) => key switch
    {
        BareKeySyntax bare => bare.Key?.Text ?? "",
        StringValueSyntax quoted => quoted.Value ?? "",
        _ => key.ToString() ?? "",
    };

    // Tomlyn counts lines and columns from 0; people (and editors) count from 1.
    private static SourcePosition ToPosition(TextPosition position) => new(position.Line + 1, position.Column + 1);
}
