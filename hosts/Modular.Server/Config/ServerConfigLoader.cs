using System.Globalization;
using System.Net;
using Modular.Abstractions.Config;
using Tomlyn.Parsing;
using Tomlyn.Syntax;

namespace Modular.Server.Config;

/// <summary>
/// Reads server.toml into <see cref="ServerConfig"/>. Works on Tomlyn's syntax tree so every error can
/// name line and column; unknown keys and wrong types are errors, never silently ignored.
/// </summary>
public static class ServerConfigLoader
{
    public static ServerConfig LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{path}: cannot read the configuration: {e.Message}");
        }

        return Parse(text, path);
    }

    public static ServerConfig Parse(string text, string fileName = "server.toml")
    {
        var document = SyntaxParser.Parse(text, fileName, true);
        if (document.HasErrors)
        {
            var first = document.Diagnostics.First(d => d.Kind == DiagnosticMessageKind.Error);
            throw new ConfigException($"{fileName}:{first.Span.Start.Line + 1}:{first.Span.Start.Column + 1}: {first.Message}");
        }

        var root = TomlNode.Build(document, fileName);
        var positions = new Dictionary<string, string>(StringComparer.Ordinal);
        var r = new Section(root, fileName, "", positions);
        var config = new ServerConfig();
        var defaults = config;
        config = config with
        {
            Listen = r.Endpoint("listen", defaults.Listen),
            Components = r.Components("components", defaults.Components),
            DataDir = r.String("data_dir", defaults.DataDir),
            RedisUrl = r.String("redis_url", defaults.RedisUrl),
        };
        if (config.RedisUrl.Length > 0 && !RedisUrl.TryParse(config.RedisUrl, out _, out var redisError))
        {
            throw new ConfigException($"{fileName}: key 'redis_url': {redisError}");
        }

        if (config.DataDir.Length == 0)
        {
            throw new ConfigException($"{fileName}: key 'data_dir': must not be empty");
        }

        using (var p = r.Table("public_url"))
        {
            config = config with { PublicUrl = new PublicUrls(p.String("signal", ""), p.String("relay", ""), p.String("stun", "")) };
        }

        using (var s = r.Table("store"))
        {
            var kind = s.OneOf("kind", "sqlite", "sqlite", "postgres");
            var dsn = s.String("dsn", "");
            if (kind == "postgres")
            {
                throw new ConfigException($"{fileName}: key 'store.kind': 'postgres' is not available in this build; use 'sqlite'");
            }

            config = config with { Store = new StoreConfig(kind, dsn) };
        }

        using (var s = r.Table("relay"))
        {
            config = config with { RelayListen = s.Endpoint("listen", defaults.RelayListen) };
        }

        using (var s = r.Table("stun"))
        {
            config = config with { StunListen = s.Endpoint("listen", defaults.StunListen) };
        }

        using (var m = r.Table("metrics"))
        {
            // Off unless written; a written address is checked here, so a typo fails the start with file:line.
            var listen = m.String("listen", "");
            config = config with { MetricsListen = listen.Length == 0 ? "" : m.Endpoint("listen", "127.0.0.1:9100", requirePort: true) };
        }

        using (var t = r.Table("tls"))
        {
            var tls = new TlsConfig(t.String("cert", ""), t.String("key", ""));
            if ((tls.Cert.Length == 0) != (tls.Key.Length == 0))
            {
                throw new ConfigException($"{fileName}: table 'tls': give both 'cert' and 'key', or neither");
            }

            config = config with { Tls = tls };
        }

        using (var a = r.Table("account"))
        {
            var account = new AccountConfig
            {
                DnsDomain = a.String("dns_domain", "modular.internal"),
                LazyConnections = a.Bool("lazy_connections", false),
                Psk = a.String("psk", ""),
                PeerLoginExpiration = a.Duration("peer_login_expiration", TimeSpan.Zero),
            };
            if (account.Psk.Length > 0 && !Modular.Abstractions.WireGuard.WgKey.TryParse(account.Psk, out _))
            {
                throw new ConfigException($"{fileName}: key 'account.psk': expected a base64 WireGuard key (44 characters), the value is not one");
            }

            using (var f = a.Table("flows"))
            {
                var retention = f.Duration("retention", FlowSettingsConfig.DefaultRetention);
                if (retention <= TimeSpan.Zero)
                {
                    throw new ConfigException($"{fileName}: key 'account.flows.retention': must be longer than zero, e.g. 7d");
                }

                account = account with { Flows = new FlowSettingsConfig(f.Bool("enabled", false), f.Bool("collect_dns", false), f.Bool("collect_exit_node", false)) { Retention = retention } };
            }

            using (var rp = a.Table("rosenpass"))
            {
                account = account with { Rosenpass = new RosenpassSettingsConfig(rp.Bool("enabled", false), rp.Bool("permissive", false)) };
            }

            config = config with { Account = account };
        }

        r.Dispose();
        return config with { Positions = positions };
    }

    /// <summary>A TOML table or a value, with where it was written.</summary>
    private sealed class TomlNode
    {
        public Dictionary<string, TomlNode>? Children { get; init; }

        public ValueSyntax? Value { get; init; }

        public required SourceSpan Span { get; init; }

        public static TomlNode Build(DocumentSyntax document, string fileName)
        {
            var root = new TomlNode { Children = new(StringComparer.Ordinal), Span = document.Span };
            foreach (var kv in document.KeyValues)
            {
                Add(root, kv, fileName);
            }

            foreach (var table in document.Tables)
            {
                if (table is not TableSyntax || table.Name is null)
                {
                    throw Error(fileName, table.Span, "arrays of tables are not used in server.toml");
                }

                var node = Descend(root, KeyParts(table.Name), table.Span, fileName);
                foreach (var item in table.Items)
                {
                    if (item is KeyValueSyntax kv)
                    {
                        Add(node, kv, fileName);
                    }
                }
            }

            return root;
        }

        private static void Add(TomlNode table, KeyValueSyntax kv, string fileName)
        {
            var parts = KeyParts(kv.Key!);
            var parent = Descend(table, parts[..^1], kv.Span, fileName);
            var name = parts[^1];
            if (parent.Children!.ContainsKey(name))
            {
                throw Error(fileName, kv.Span, $"key '{name}' is given twice");
            }

            parent.Children[name] = kv.Value is InlineTableSyntax inline ? FromInline(inline, fileName) : new TomlNode { Value = kv.Value, Span = kv.Span };
        }

        private static TomlNode FromInline(InlineTableSyntax inline, string fileName)
        {
            var node = new TomlNode { Children = new(StringComparer.Ordinal), Span = inline.Span };
            foreach (var item in inline.Items)
            {
                if (item.KeyValue is { } kv)
                {
                    Add(node, kv, fileName);
                }
            }

            return node;
        }

        private static TomlNode Descend(TomlNode node, string[] parts, SourceSpan span, string fileName)
        {
            foreach (var part in parts)
            {
                if (!node.Children!.TryGetValue(part, out var child))
                {
                    child = new TomlNode { Children = new(StringComparer.Ordinal), Span = span };
                    node.Children[part] = child;
                }
                else if (child.Children is null)
                {
                    throw Error(fileName, span, $"'{part}' is a value, not a table");
                }

                node = child;
            }

            return node;
        }

        private static string[] KeyParts(KeySyntax key)
        {
            var parts = new List<string> { Name(key.Key) };
            foreach (var dotted in key.DotKeys)
            {
                parts.Add(Name(dotted.Key));
            }

            return [.. parts];
        }

        private static string Name(BareKeyOrStringValueSyntax? key) => key switch
        {
            BareKeySyntax bare => bare.Key?.Text ?? "",
            StringValueSyntax str => str.Value ?? "",
            _ => "",
        };
    }

    private static ConfigException Error(string fileName, SourceSpan span, string message)
        => new($"{fileName}:{span.Start.Line + 1}:{span.Start.Column + 1}: {message}");

    /// <summary>Reads keys of one table and, when disposed, rejects any key nobody asked for.</summary>
    private sealed class Section : IDisposable
    {
        private readonly TomlNode _node;
        private readonly string _fileName;
        private readonly string _path;
        private readonly HashSet<string> _known = new(StringComparer.Ordinal);
        private readonly Dictionary<string, string> _positions;

        public Section(TomlNode node, string fileName, string path, Dictionary<string, string> positions)
        {
            _node = node;
            _fileName = fileName;
            _path = path;
            _positions = positions;
        }

        // Where each key that was read is written ("file:line:col"), for warnings after loading.
        private void Remember(string key, SourceSpan span)
            => _positions[Qualified(key)] = $"{_fileName}:{span.Start.Line + 1}:{span.Start.Column + 1}";

        private string Qualified(string key) => _path.Length == 0 ? key : $"{_path}.{key}";

        private ValueSyntax? Take(string key, out SourceSpan span)
        {
            _known.Add(key);
            span = _node.Span;
            if (!_node.Children!.TryGetValue(key, out var child))
            {
                return null;
            }

            span = child.Span;
            Remember(key, span);
            if (child.Value is null)
            {
                throw Error(_fileName, child.Span, $"key '{Qualified(key)}': expected a value, got a table");
            }

            return child.Value;
        }

        public Section Table(string key)
        {
            _known.Add(key);
            if (!_node.Children!.TryGetValue(key, out var child))
            {
                return new Section(new TomlNode { Span = _node.Span, Children = new(StringComparer.Ordinal) }, _fileName, Qualified(key), _positions);
            }

            if (child.Children is null)
            {
                throw Error(_fileName, child.Span, $"key '{Qualified(key)}': expected a table, got {Describe(child.Value)}");
            }

            Remember(key, child.Span);
            return new Section(child, _fileName, Qualified(key), _positions);
        }

        public string String(string key, string fallback)
        {
            var value = Take(key, out var span);
            return value switch
            {
                null => fallback,
                StringValueSyntax s => s.Value ?? "",
                _ => throw Error(_fileName, span, $"key '{Qualified(key)}': expected a string, got {Describe(value)}"),
            };
        }

        public bool Bool(string key, bool fallback)
        {
            var value = Take(key, out var span);
            return value switch
            {
                null => fallback,
                BooleanValueSyntax b => b.Value,
                _ => throw Error(_fileName, span, $"key '{Qualified(key)}': expected true or false, got {Describe(value)}"),
            };
        }

        public string OneOf(string key, string fallback, params string[] allowed)
        {
            var value = String(key, fallback);
            if (!allowed.Contains(value, StringComparer.Ordinal))
            {
                Take(key, out var span);
                throw Error(_fileName, span, $"key '{Qualified(key)}': expected one of {string.Join(", ", allowed)}, got '{value}'");
            }

            return value;
        }

        public TimeSpan Duration(string key, TimeSpan fallback)
        {
            var text = String(key, "");
            if (text.Length == 0)
            {
                return fallback;
            }

            if (!ConfigDuration.TryParse(text, out var duration))
            {
                Take(key, out var span);
                throw Error(_fileName, span, $"key '{Qualified(key)}': expected a duration such as 90s, 15m, 24h or 7d, got '{text}'");
            }

            return duration;
        }

        /// <param name="requirePort">Refuse port 0 (a listener others must find at a known port).</param>
        public string Endpoint(string key, string fallback, bool requirePort = false)
        {
            var text = String(key, fallback);
            if (!IPEndPoint.TryParse(text, out var endpoint) || text.LastIndexOf(':') < 0 || endpoint.Port < (requirePort ? 1 : 0))
            {
                Take(key, out var span);
                throw Error(_fileName, span, $"key '{Qualified(key)}': expected an address and port such as 0.0.0.0:{fallback.Split(':')[^1]}, got '{text}'");
            }

            return text;
        }

        public IReadOnlySet<string> Components(string key, IReadOnlySet<string> fallback)
        {
            var value = Take(key, out var span);
            if (value is null)
            {
                return fallback;
            }

            if (value is not ArraySyntax array)
            {
                throw Error(_fileName, span, $"key '{Qualified(key)}': expected an array of strings, got {Describe(value)}");
            }

            var result = new HashSet<string>(StringComparer.Ordinal);
            foreach (var item in array.Items)
            {
                if (item.Value is not StringValueSyntax s || !ServerConfig.AllComponents.Contains(s.Value ?? "", StringComparer.Ordinal))
                {
                    throw Error(_fileName, item.Span, $"key '{Qualified(key)}': each entry must be one of {string.Join(", ", ServerConfig.AllComponents)}, got {(item.Value is StringValueSyntax bad ? $"'{bad.Value}'" : Describe(item.Value))}");
                }

                result.Add(s.Value!);
            }

            return result;
        }

        public void Dispose()
        {
            foreach (var (key, child) in _node.Children!)
            {
                if (!_known.Contains(key))
                {
                    throw Error(_fileName, child.Span, $"unknown key '{Qualified(key)}'");
                }
            }
        }

        private static string Describe(ValueSyntax? value) => value switch
        {
            StringValueSyntax => "a string",
            IntegerValueSyntax => "an integer",
            FloatValueSyntax => "a number",
            BooleanValueSyntax => "a boolean",
            ArraySyntax => "an array",
            InlineTableSyntax => "a table",
            null => "nothing",
            _ => "a date or time",
        };
    }
}
