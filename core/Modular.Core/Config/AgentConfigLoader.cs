using System.Globalization;
using System.Net;
using Modular.Abstractions.Config;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Config;

/// <summary>Reads agent.toml into <see cref="AgentConfig"/>; precedence: flags, environment, file, defaults.</summary>
public static class AgentConfigLoader
{
    /// <summary>Where errors in environment variables are said to be.</summary>
    public const string EnvironmentSource = "environment";

    /// <summary>Where errors in command-line flags are said to be.</summary>
    public const string CommandLineSource = "command line";

    private static readonly string[] LogLevels = ["trace", "debug", "info", "warn", "error"];

    /// <summary>Loads and validates <paramref name="path"/>; throws <see cref="ConfigException"/> on any problem.</summary>
    public static AgentConfig Load(string path, IReadOnlyDictionary<string, string?> environment, AgentConfigOverrides overrides)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ConfigException(path, 0, 0, null, "the configuration file does not exist");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException(path, 0, 0, null, $"cannot read the configuration file: {ex.Message}");
        }

        return Parse(text, path, environment, overrides);
    }

    /// <summary>Same as <see cref="Load"/> from text; <paramref name="sourceName"/> is what errors cite.</summary>
    public static AgentConfig Parse(string toml, string sourceName, IReadOnlyDictionary<string, string?> environment, AgentConfigOverrides overrides)
    {
        var root = TomlTreeReader.Read(toml, sourceName);
        var config = Bind(root, sourceName);
        config = ApplyEnvironment(config, environment);
        return ApplyOverrides(config, overrides);
    }

    /// <summary>
    /// Checks that the proxy kind (unless "auto") names a loaded proxy plugin; the error lists
    /// <paramref name="availableProxyNames"/> and cites the key's line and column.
    /// </summary>
    public static void ValidatePluginNames(AgentConfig config, IReadOnlyCollection<string> availableProxyNames)
    {
        var kind = config.Proxy.Kind;
        if (kind == "auto" || availableProxyNames.Contains(kind, StringComparer.Ordinal))
        {
            return;
        }

        throw UnknownPlugin(config, "proxy.kind", "plugin", kind, availableProxyNames, "auto, ");
    }

    /// <summary>
    /// While flow logging is on, every name in <c>[netflow] sinks</c> must be a loaded flow-sink plugin: an unknown one
    /// fails at that key, listing the available ones (as <see cref="ValidatePluginNames"/> does for <c>proxy.kind</c>).
    /// </summary>
    public static void ValidateFlowSinkNames(AgentConfig config, IReadOnlyCollection<string> availableSinkNames)
    {
        foreach (var name in config.Netflow.Sinks)
        {
            if (availableSinkNames.Contains(name, StringComparer.Ordinal))
            {
                continue;
            }

            throw UnknownPlugin(config, "netflow.sinks", "flow-sink plugin", name, availableSinkNames, "");
        }
    }

    /// <summary>
    /// While Rosenpass is on, <c>[rosenpass] provider</c> must name a loaded PSK provider plugin: an unknown one fails at
    /// that key (or at <c>rosenpass.enabled</c> when the default is meant), listing the available ones.
    /// </summary>
    public static void ValidatePskProviderName(AgentConfig config, IReadOnlyCollection<string> availableProviderNames)
    {
        var name = config.Rosenpass.Provider;
        if (availableProviderNames.Contains(name, StringComparer.Ordinal))
        {
            return;
        }

        var key = config.Positions.ContainsKey("rosenpass.provider") ? "rosenpass.provider" : "rosenpass.enabled";
        throw UnknownPlugin(config, key, "PSK provider plugin", name, availableProviderNames, "");
    }

    /// <summary>
    /// The error for a plugin name at <paramref name="key"/> that no loaded plugin has: cites the key's line and column,
    /// lists the available names (after <paramref name="builtInChoices"/>, such as "auto, ") and suggests a near one.
    /// </summary>
    private static ConfigException UnknownPlugin(AgentConfig config, string key, string what, string name, IReadOnlyCollection<string> availableNames, string builtInChoices)
    {
        config.Positions.TryGetValue(key, out var at);
        var available = availableNames.Count == 0 ? "(none)" : string.Join(", ", availableNames.Order(StringComparer.Ordinal));
        var problem = $"unknown {what} \"{name}\"; available: {builtInChoices}{available}";
        if (ConfigSection.Suggest(name, availableNames) is { } suggestion)
        {
            problem += $"; did you mean \"{suggestion}\"?";
        }

        return new ConfigException(config.SourcePath, at.Line, at.Column, key, problem);
    }

    // Absent: the built-in sink. Written: at least one name, none twice (a sink gets each event once).
    private static IReadOnlyList<string> ReadSinks(ConfigSection netflow)
    {
        if (netflow.Raw("sinks") is not { } node)
        {
            return NetflowConfig.DefaultSinks;
        }

        var sinks = netflow.StringList("sinks");
        if (sinks.Count == 0)
        {
            throw netflow.Error(node, "sinks", "expected at least one flow-sink plugin name (turn flow logging off with enabled = false)");
        }

        if (sinks.GroupBy(s => s, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
        {
            throw netflow.Error(node, "sinks", $"\"{twice.Key}\" is listed twice");
        }

        return sinks;
    }

    private static AgentConfig Bind(TomlNode root, string file)
    {
        var top = new ConfigSection(root, "", file);

        var managementUrls = ReadManagementUrls(top, file);
        var hostname = top.String("hostname", "", v => v.Length == 0 ? null : ValidateHostname(v), HostnameExpectation);
        var setupKey = top.String("setup_key", "");
        var tlsCa = top.String("tls_ca", "");
        var stateDir = top.String("state_dir", "/var/lib/modular", NotEmpty);
        var socket = top.String("socket", "");
        var pluginsDir = top.String("plugins_dir", "");

        var iface = top.Section("interface");
        var interfaceConfig = new InterfaceConfig
        {
            Name = iface.String("name", "mdl0", ValidateInterfaceName, "an interface name of 1 to 15 letters, digits, '_', '-' or '.'"),
            Mode = iface.OneOf("mode", "userspace", "userspace", "kernel") == "kernel" ? WgInterfaceMode.Kernel : WgInterfaceMode.Userspace,
            Port = iface.Int("port", 51820, 1, 65535),
            Mtu = iface.Int("mtu", 1280, 576, 9000),
        };
        iface.RejectUnknownKeys();

        var log = top.Section("log");
        var logConfig = new LogConfig
        {
            Level = log.OneOf("level", "info", LogLevels),
            File = log.String("file", ""),
        };
        log.RejectUnknownKeys();

        var features = top.Section("features");
        var featuresConfig = new FeaturesConfig
        {
            LazyConnections = new LocalToggle(Config: features.OptionalBool("lazy_connections")),
            InactivityTimeout = features.Duration("inactivity_timeout", TimeSpan.FromMinutes(15)),
            AlwaysConnected = features.StringList("always_connected"),
        };
        features.RejectUnknownKeys();

        var connection = top.Section("connection");
        var connectionConfig = new ConnectionConfig { ForceRelay = connection.Bool("force_relay", false) };
        connection.RejectUnknownKeys();

        var proxy = top.Section("proxy");
        var proxyConfig = new ProxyConfig
        {
            Kind = proxy.String("kind", "auto", ValidatePluginName, "\"auto\" or a proxy plugin's name"),
        };
        proxy.RejectUnknownKeys();

        var firewall = top.Section("firewall");
        var firewallConfig = new FirewallConfig { Enabled = firewall.Bool("enabled", true) };
        firewall.RejectUnknownKeys();

        var rosenpass = top.Section("rosenpass");
        var rosenpassConfig = new RosenpassConfig
        {
            Enabled = new LocalToggle(Config: rosenpass.OptionalBool("enabled")),
            Permissive = rosenpass.Bool("permissive", false),
            Provider = rosenpass.String("provider", "rosenpass", ValidatePluginName, "a PSK provider plugin's name"),
            Port = rosenpass.Int("port", 9999, 1, 65535),
        };
        rosenpass.RejectUnknownKeys();

        var netflow = top.Section("netflow");
        var netflowConfig = new NetflowConfig
        {
            Enabled = new LocalToggle(Config: netflow.OptionalBool("enabled")),
            CollectDns = netflow.Bool("collect_dns", false),
            CollectExitNode = netflow.Bool("collect_exit_node", false),
            IpfixCollector = netflow.String("ipfix_collector", "", v => v.Length == 0 ? null : ValidateHostPort(v), "\"host:port\" or \"\""),
            Sinks = ReadSinks(netflow),
        };
        netflow.RejectUnknownKeys();

        var dns = top.Section("dns");
        var dnsConfig = new DnsResolverConfig
        {
            Enabled = dns.Bool("enabled", true),
            ListenPort = dns.Int("listen_port", 53, 1, 65535),
        };
        dns.RejectUnknownKeys();

        var ui = top.Section("ui");
        var uiConfig = new ListenConfig(ui.String("listen", "127.0.0.1:9091", v => v.Length == 0 ? null : ValidateLoopbackEndpoint(v), UiListenExpectation));
        ui.RejectUnknownKeys();

        var metrics = top.Section("metrics");
        var metricsConfig = new ListenConfig(metrics.String("listen", "127.0.0.1:9090", v => v.Length == 0 ? null : ValidateIpEndpoint(v), MetricsListenExpectation));
        metrics.RejectUnknownKeys();

        var pluginSettings = new Dictionary<string, IReadOnlyDictionary<string, object?>>(StringComparer.Ordinal);
        foreach (var (name, table) in top.Section("plugins").SubTables())
        {
            pluginSettings[name] = table.ToPlainTable();
        }

        top.RejectUnknownKeys();

        var positions = new Dictionary<string, SourcePosition>(StringComparer.Ordinal);
        CollectPositions(root, "", positions);

        return new AgentConfig
        {
            ManagementUrls = managementUrls,
            Hostname = hostname,
            SetupKey = setupKey,
            TlsCa = tlsCa,
            StateDir = stateDir,
            Socket = socket,
            PluginsDir = pluginsDir,
            Interface = interfaceConfig,
            Log = logConfig,
            Features = featuresConfig,
            Connection = connectionConfig,
            Proxy = proxyConfig,
            Firewall = firewallConfig,
            Rosenpass = rosenpassConfig,
            Netflow = netflowConfig,
            Dns = dnsConfig,
            Ui = uiConfig,
            Metrics = metricsConfig,
            PluginSettings = pluginSettings,
            SourcePath = file,
            Positions = positions,
        };
    }

    private static List<Uri> ReadManagementUrls(ConfigSection top, string file)
    {
        const string Key = "management_url";
        const string Expectation = "an http(s) URL such as \"https://mgmt.example:33073\", or a list of them";
        var node = top.Raw(Key) ?? throw new ConfigException(file, 0, 0, Key, $"required key is missing: expected {Expectation}");
        var items = node.Kind == TomlKind.Array ? node.Items : [node];
        if (items.Count == 0)
        {
            throw top.Error(node, Key, $"expected {Expectation}, got an empty list");
        }

        var urls = new List<Uri>(items.Count);
        foreach (var item in items)
        {
            if (item.Kind != TomlKind.String)
            {
                throw top.Error(item, Key, $"expected {Expectation}, got {TomlNode.Describe(item.Kind)}");
            }

            var text = (string)item.Scalar!;
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) ||
                (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps) ||
                uri.Host.Length == 0)
            {
                throw top.Error(item, Key, $"expected {Expectation}, got \"{text}\"");
            }

            urls.Add(uri);
        }

        return urls;
    }

    private static void CollectPositions(TomlNode table, string prefix, Dictionary<string, SourcePosition> positions)
    {
        foreach (var (key, _, value) in table.Entries)
        {
            var path = prefix.Length == 0 ? key : $"{prefix}.{key}";
            positions[path] = value.Position;
            if (value.Kind == TomlKind.Table)
            {
                CollectPositions(value, path, positions);
            }
        }
    }

    private static AgentConfig ApplyEnvironment(AgentConfig config, IReadOnlyDictionary<string, string?> environment)
    {
        // NB_LAZY_CONN=on|off says either; the older NB_ENABLE_EXPERIMENTAL_LAZY_CONN only ever turns them on.
        var lazy = EnvOnOff(environment, AgentEnvironment.LazyConnectionsOnOff)
            ?? (EnvBool(environment, AgentEnvironment.LazyConnections) == true ? true : null);
        if (lazy is not null)
        {
            config = config with { Features = config.Features with { LazyConnections = config.Features.LazyConnections with { Environment = lazy } } };
        }

        if (Env(environment, AgentEnvironment.Hostname) is { } hostname)
        {
            if (ValidateHostname(hostname) is { } problem)
            {
                throw new ConfigException(EnvironmentSource, 0, 0, AgentEnvironment.Hostname, problem);
            }

            config = config with { Hostname = hostname };
        }

        if (Env(environment, AgentEnvironment.InactivityThreshold) is { } threshold)
        {
            if (!ConfigDuration.TryParse(threshold, out var duration) || duration <= TimeSpan.Zero)
            {
                throw new ConfigException(EnvironmentSource, 0, 0, AgentEnvironment.InactivityThreshold,
                    $"expected a positive duration such as \"90s\", \"15m\" or \"1h30m\", got \"{threshold}\"");
            }

            config = config with { Features = config.Features with { InactivityTimeout = duration } };
        }

        if (EnvBool(environment, AgentEnvironment.ForceRelay) is { } forceRelay)
        {
            config = config with { Connection = config.Connection with { ForceRelay = forceRelay } };
        }

        if (EnvBool(environment, AgentEnvironment.DisableEbpfProxy) is { } ebpfDisabled)
        {
            config = config with { Proxy = config.Proxy with { EbpfDisabled = ebpfDisabled } };
        }

        if (Env(environment, AgentEnvironment.Socket) is { } socket)
        {
            config = config with { Socket = socket };
        }

        return config;
    }

    private static AgentConfig ApplyOverrides(AgentConfig config, AgentConfigOverrides overrides)
    {
        if (overrides.LazyConnections is { } lazy)
        {
            config = config with { Features = config.Features with { LazyConnections = config.Features.LazyConnections with { Flag = lazy } } };
        }

        if (overrides.Hostname is { } hostname)
        {
            if (ValidateHostname(hostname) is { } problem)
            {
                throw new ConfigException(CommandLineSource, 0, 0, "--hostname", problem);
            }

            config = config with { Hostname = hostname };
        }

        if (overrides.Socket is { Length: > 0 } socket)
        {
            config = config with { Socket = socket };
        }

        if (overrides.LogLevel is { } level)
        {
            if (!LogLevels.Contains(level, StringComparer.Ordinal))
            {
                throw new ConfigException(CommandLineSource, 0, 0, "--log-level",
                    $"expected one of {string.Join(", ", LogLevels)}, got \"{level}\"");
            }

            config = config with { Log = config.Log with { Level = level } };
        }

        return config;
    }

    // An empty variable counts as unset, as shells make it easy to export one by accident.
    private static string? Env(IReadOnlyDictionary<string, string?> environment, string name)
        => environment.TryGetValue(name, out var value) && !string.IsNullOrWhiteSpace(value) ? value.Trim() : null;

    private static bool? EnvBool(IReadOnlyDictionary<string, string?> environment, string name)
    {
        var value = Env(environment, name);
        if (value is null)
        {
            return null;
        }

        if (value == "1" || value.Equals("true", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        if (value == "0" || value.Equals("false", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        throw new ConfigException(EnvironmentSource, 0, 0, name, $"expected true, false, 1 or 0, got \"{value}\"");
    }

    private static bool? EnvOnOff(IReadOnlyDictionary<string, string?> environment, string name)
    {
        var value = Env(environment, name);
        return value?.ToLowerInvariant() switch
        {
            null => null,
            "on" or "true" or "1" => true,
            "off" or "false" or "0" => false,
            _ => throw new ConfigException(EnvironmentSource, 0, 0, name, $"expected on or off, got \"{value}\""),
        };
    }

    private const string HostnameExpectation = "a DNS label: 1 to 63 letters, digits or '-', not starting or ending with '-'";

    /// <summary>A single DNS label, as peers find each other by &lt;hostname&gt;.&lt;zone&gt;; null when valid.</summary>
    internal static string? ValidateHostname(string name)
    {
        var ok = name.Length is >= 1 and <= 63 && name[0] != '-' && name[^1] != '-' && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '-');
        return ok ? null : $"expected {HostnameExpectation} (no dots: the zone is added by management), got \"{name}\"";
    }

    private const string UiListenExpectation = "a loopback address and port such as \"127.0.0.1:9091\" or \"[::1]:9091\", or \"\" to turn the UI off";

    private const string MetricsListenExpectation = "an IP address and port such as \"127.0.0.1:9090\" or \"[::1]:9090\", or \"\" to turn metrics off";

    /// <summary>The Prometheus endpoint binds an address of this host, so it takes an IP literal (no name to resolve); null when valid.</summary>
    private static string? ValidateIpEndpoint(string value)
        => ValidateHostPort(value) ?? (IPEndPoint.TryParse(value, out _)
            ? null
            : $"expected {MetricsListenExpectation}, got \"{value}\"");

    /// <summary>The local UI has no login, so it may listen on a loopback address only; null when valid.</summary>
    private static string? ValidateLoopbackEndpoint(string value)
        => ValidateHostPort(value) ?? (IPEndPoint.TryParse(value, out var endpoint) && IPAddress.IsLoopback(endpoint.Address)
            ? null
            : $"expected {UiListenExpectation} (the UI has no login), got \"{value}\"");

    private static string? NotEmpty(string value) => value.Length == 0 ? "must not be empty" : null;

    private static string? ValidateInterfaceName(string name)
    {
        var ok = name.Length is >= 1 and <= 15 && name != "." && name != ".." &&
            name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.');
        return ok ? null : $"expected an interface name of 1 to 15 letters, digits, '_', '-' or '.', got \"{name}\"";
    }

    private static string? ValidatePluginName(string name)
    {
        var ok = name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.');
        return ok ? null : $"expected \"auto\" or a proxy plugin's name (letters, digits, '_', '-', '.'), got \"{name}\"";
    }

    /// <summary>"host:port" or "[v6]:port" with a port in 1..65535; null when valid.</summary>
    internal static string? ValidateHostPort(string value)
    {
        var colon = value.LastIndexOf(':');
        var problem = $"expected \"host:port\" with a port between 1 and 65535, got \"{value}\"";
        if (colon <= 0 || colon == value.Length - 1)
        {
            return problem;
        }

        var host = value[..colon];
        if (!int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return problem;
        }

        if (host.StartsWith('['))
        {
            return host.EndsWith(']') && IPAddress.TryParse(host[1..^1], out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
                ? null
                : problem;
        }

        if (host.Contains(':'))
        {
            return problem;
        }

        return Uri.CheckHostName(host) == UriHostNameType.Unknown ? problem : null;
    }
}
