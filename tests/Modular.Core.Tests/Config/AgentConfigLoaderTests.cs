using Modular.Abstractions.WireGuard;
using Modular.Core.Config;

namespace Modular.Core.Tests.Config;

public sealed class AgentConfigLoaderTests
{
    private static readonly Dictionary<string, string?> NoEnv = [];
    private static readonly AgentConfigOverrides NoFlags = new();

    private static AgentConfig Parse(string toml, IReadOnlyDictionary<string, string?>? env = null, AgentConfigOverrides? flags = null)
        => AgentConfigLoader.Parse(toml, "agent.toml", env ?? NoEnv, flags ?? NoFlags);

    private static ConfigException ParseFails(string toml, IReadOnlyDictionary<string, string?>? env = null, AgentConfigOverrides? flags = null)
        => Assert.Throws<ConfigException>(() => Parse(toml, env, flags));

    [Fact]
    public void Only_the_management_url_gives_every_default()
    {
        var config = Parse("management_url = \"https://mgmt.example:33073\"\n");

        Assert.Equal([new Uri("https://mgmt.example:33073")], config.ManagementUrls);
        Assert.Equal("", config.SetupKey);
        Assert.Equal("", config.TlsCa);
        Assert.Equal("/var/lib/modular", config.StateDir);
        Assert.Equal("", config.Socket);
        Assert.Equal("/var/run/modular/mdl0.sock", config.EffectiveSocketPath);
        Assert.Equal("mdl0", config.Interface.Name);
        Assert.Equal(WgInterfaceMode.Userspace, config.Interface.Mode);
        Assert.Equal(51820, config.Interface.Port);
        Assert.Equal(1280, config.Interface.Mtu);
        Assert.Equal("info", config.Log.Level);
        Assert.Equal("", config.Log.File);
        Assert.Equal("", config.PluginsDir);
        Assert.Equal(LocalToggle.Unset, config.Features.LazyConnections);
        Assert.Equal("", config.Hostname);
        Assert.Equal(TimeSpan.FromMinutes(15), config.Features.InactivityTimeout);
        Assert.Empty(config.Features.AlwaysConnected);
        Assert.False(config.Connection.ForceRelay);
        Assert.Equal("auto", config.Proxy.Kind);
        Assert.False(config.Proxy.EbpfDisabled);
        Assert.Null(config.Rosenpass.Enabled.Value);
        Assert.False(config.Rosenpass.Permissive);
        Assert.Null(config.Netflow.Enabled.Value);
        Assert.False(config.Netflow.CollectDns);
        Assert.False(config.Netflow.CollectExitNode);
        Assert.Equal("", config.Netflow.IpfixCollector);
        Assert.Equal("127.0.0.1:9091", config.Ui.Listen);
        Assert.True(config.Ui.Enabled);
        Assert.Equal("127.0.0.1:9090", config.Metrics.Listen);
        Assert.Empty(config.PluginSettings);
        Assert.Equal("agent.toml", config.SourcePath);
    }

    private const string FullFile = """
        # every key, none at its default
        management_url = ["https://a.example:33073", "http://b.example:8080"]
        hostname       = "db-1"
        setup_key      = "A2C8E62B-38F5-4553-B31E-DD66C696CEBB"
        tls_ca         = "/etc/modular/ca.pem"
        state_dir      = "/srv/modular"
        socket         = "/run/m.sock"
        interface      = { name = "wt7", mode = "kernel", port = 51999, mtu = 1420 }
        log            = { level = "debug", file = "/var/log/modular.log" }
        plugins_dir    = "/opt/modular/plugins"

        [features]
        lazy_connections   = true
        inactivity_timeout = "1h30m"
        always_connected   = ["db1", "100.64.0.9"]

        [connection]
        force_relay = true

        [proxy]
        kind = "udp"

        [firewall]
        enabled = false

        [rosenpass]
        enabled    = true
        permissive = true

        [netflow]
        enabled           = true
        collect_dns       = true
        collect_exit_node = true
        ipfix_collector   = "collector.example:4739"

        [ui]
        listen = ""
        [metrics]
        listen = "[::1]:9100"

        [plugins.acme]
        level = 3
        ratio = 0.5
        tags  = ["x", "y"]
        nested = { on = true }
        """;

    [Fact]
    public void A_full_file_sets_every_key()
    {
        var config = Parse(FullFile);

        Assert.Equal([new Uri("https://a.example:33073"), new Uri("http://b.example:8080")], config.ManagementUrls);
        Assert.Equal("A2C8E62B-38F5-4553-B31E-DD66C696CEBB", config.SetupKey);
        Assert.Equal("db-1", config.Hostname);
        Assert.Equal("/etc/modular/ca.pem", config.TlsCa);
        Assert.Equal("/srv/modular", config.StateDir);
        Assert.Equal("/run/m.sock", config.EffectiveSocketPath);
        Assert.Equal(new InterfaceConfig { Name = "wt7", Mode = WgInterfaceMode.Kernel, Port = 51999, Mtu = 1420 }, config.Interface);
        Assert.Equal(new LogConfig { Level = "debug", File = "/var/log/modular.log" }, config.Log);
        Assert.Equal("/opt/modular/plugins", config.PluginsDir);
        Assert.Equal(new LocalToggle(Config: true), config.Features.LazyConnections);
        Assert.Equal(TimeSpan.FromMinutes(90), config.Features.InactivityTimeout);
        Assert.Equal(["db1", "100.64.0.9"], config.Features.AlwaysConnected);
        Assert.True(config.Connection.ForceRelay);
        Assert.Equal("udp", config.Proxy.Kind);
        Assert.False(config.Firewall.Enabled);
        Assert.Equal(new RosenpassConfig { Enabled = new LocalToggle(Config: true), Permissive = true }, config.Rosenpass);
        Assert.Equal(new NetflowConfig { Enabled = new LocalToggle(Config: true), CollectDns = true, CollectExitNode = true, IpfixCollector = "collector.example:4739" }, config.Netflow);
        Assert.False(config.Ui.Enabled);
        Assert.Equal("[::1]:9100", config.Metrics.Listen);

        var acme = config.SettingsFor("acme");
        Assert.Equal(3L, acme["level"]);
        Assert.Equal(0.5, acme["ratio"]);
        Assert.Equal(new object?[] { "x", "y" }, Assert.IsAssignableFrom<IReadOnlyList<object?>>(acme["tags"]));
        Assert.Equal(true, Assert.IsAssignableFrom<IReadOnlyDictionary<string, object?>>(acme["nested"])["on"]);
        Assert.Empty(config.SettingsFor("other"));

        // Positions point at the value: `kind = "udp"` is on line 21, the string starts at column 8.
        Assert.Equal(new SourcePosition(21, 8), config.Positions["proxy.kind"]);
        Assert.Equal(new SourcePosition(8, 58), config.Positions["interface.port"]);
        Assert.Equal(new SourcePosition(42, 9), config.Positions["plugins.acme.level"]);
    }

    [Fact]
    public void Printing_a_config_never_shows_the_setup_key()
    {
        var config = Parse(FullFile);
        var text = config.ToString();
        Assert.DoesNotContain("A2C8E62B", text, StringComparison.Ordinal);
        Assert.Contains("SetupKey = (hidden)", text, StringComparison.Ordinal);
        Assert.Contains("https://a.example:33073", text, StringComparison.Ordinal);
        Assert.Contains("SetupKey = (none)", Parse("management_url = \"https://m\"").ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Dotted_keys_reach_the_same_tables()
    {
        var config = Parse("""
            management_url = "https://m.example"
            interface.port = 40001
            features.always_connected = ["db"]
            """);
        Assert.Equal(40001, config.Interface.Port);
        Assert.Equal("mdl0", config.Interface.Name);
        Assert.Equal(["db"], config.Features.AlwaysConnected);
        Assert.Equal(new SourcePosition(2, 18), config.Positions["interface.port"]);
    }

    [Fact]
    public void Interface_and_log_may_be_written_as_tables()
    {
        var config = Parse("""
            management_url = "https://m.example"
            [interface]
            name = "mdl9"
            port = 40000
            [log]
            level = "warn"
            """);
        Assert.Equal("mdl9", config.Interface.Name);
        Assert.Equal(40000, config.Interface.Port);
        Assert.Equal(1280, config.Interface.Mtu);
        Assert.Equal("warn", config.Log.Level);
    }

    [Fact]
    public void Environment_overrides_the_file()
    {
        var env = new Dictionary<string, string?>
        {
            [AgentEnvironment.LazyConnections] = "true",
            [AgentEnvironment.InactivityThreshold] = "90s",
            [AgentEnvironment.ForceRelay] = "1",
            [AgentEnvironment.DisableEbpfProxy] = "TRUE",
            [AgentEnvironment.Socket] = "/tmp/env.sock",
        };
        var config = Parse("""
            management_url = "https://m.example"
            socket = "/tmp/file.sock"
            [features]
            lazy_connections = false
            inactivity_timeout = "1h"
            [connection]
            force_relay = false
            """, env);

        Assert.Equal(new LocalToggle(Environment: true, Config: false), config.Features.LazyConnections);
        Assert.Equal(TimeSpan.FromSeconds(90), config.Features.InactivityTimeout);
        Assert.True(config.Connection.ForceRelay);
        Assert.True(config.Proxy.EbpfDisabled);
        Assert.Equal("/tmp/env.sock", config.EffectiveSocketPath);
    }

    [Fact]
    public void The_older_variable_set_to_false_counts_as_not_set_and_empty_variables_are_ignored()
    {
        // NB_ENABLE_EXPERIMENTAL_LAZY_CONN only ever turns lazy connections on (as in NetBird); the file decides here.
        var env = new Dictionary<string, string?>
        {
            [AgentEnvironment.LazyConnections] = "0",
            [AgentEnvironment.ForceRelay] = "",
        };
        var config = Parse("""
            management_url = "https://m.example"
            features = { lazy_connections = true }
            connection = { force_relay = true }
            """, env);
        Assert.Equal(new LocalToggle(Config: true), config.Features.LazyConnections);
        Assert.True(config.Connection.ForceRelay);
    }

    [Theory]
    [InlineData("off", null, false)]
    [InlineData("OFF", "true", false)]
    [InlineData("on", null, true)]
    [InlineData("0", null, false)]
    [InlineData("true", "false", true)]
    public void NB_LAZY_CONN_turns_lazy_connections_either_way_and_wins_over_the_older_variable(string onOff, string? older, bool expected)
    {
        var env = new Dictionary<string, string?> { [AgentEnvironment.LazyConnectionsOnOff] = onOff, [AgentEnvironment.LazyConnections] = older };
        var config = Parse("management_url = \"https://m.example\"\nfeatures = { lazy_connections = true }\n", env);
        Assert.Equal(new LocalToggle(Environment: expected, Config: true), config.Features.LazyConnections);
    }

    [Fact]
    public void Flags_override_the_environment()
    {
        var env = new Dictionary<string, string?>
        {
            [AgentEnvironment.LazyConnectionsOnOff] = "off",
            [AgentEnvironment.Socket] = "/tmp/env.sock",
            [AgentEnvironment.Hostname] = "from-env",
        };
        var flags = new AgentConfigOverrides { LazyConnections = true, Socket = "/tmp/flag.sock", LogLevel = "trace", Hostname = "from-flag" };
        var config = Parse("management_url = \"https://m.example\"\nlog = { level = \"error\" }\n", env, flags);

        Assert.Equal(new LocalToggle(Flag: true, Environment: false), config.Features.LazyConnections);
        Assert.True(config.Features.LazyConnections.Value);
        Assert.Equal("/tmp/flag.sock", config.Socket);
        Assert.Equal("trace", config.Log.Level);
        Assert.Equal("from-flag", config.Hostname);
    }

    [Fact]
    public void Hostname_comes_from_the_flag_then_the_environment_then_the_file()
    {
        const string File = "management_url = \"https://m.example\"\nhostname = \"from-file\"\n";
        var env = new Dictionary<string, string?> { [AgentEnvironment.Hostname] = "from-env" };
        Assert.Equal("from-file", Parse(File).Hostname);
        Assert.Equal("from-env", Parse(File, env).Hostname);
        Assert.Equal("from-flag", Parse(File, env, new AgentConfigOverrides { Hostname = "from-flag" }).Hostname);
        Assert.Equal("", Parse("management_url = \"https://m.example\"\n").Hostname);
    }

    [Theory]
    [InlineData("db1.modular.internal")]
    [InlineData("-db1")]
    [InlineData("db_1")]
    [InlineData("a-name-that-is-much-longer-than-the-sixty-three-characters-a-dns-label-may-have")]
    public void A_hostname_that_is_not_a_DNS_label_is_refused_wherever_it_is_given(string name)
    {
        var inFile = ParseFails($"management_url = \"https://m.example\"\nhostname = \"{name}\"\n");
        Assert.Equal(("hostname", 2, 12), (inFile.Key, inFile.Line, inFile.Column));
        Assert.Contains("a DNS label", inFile.Problem, StringComparison.Ordinal);
        Assert.Contains($"\"{name}\"", inFile.Problem, StringComparison.Ordinal);

        var inEnv = ParseFails("management_url = \"https://m.example\"\n", new Dictionary<string, string?> { [AgentEnvironment.Hostname] = name });
        Assert.Equal((AgentConfigLoader.EnvironmentSource, AgentEnvironment.Hostname), (inEnv.File, inEnv.Key));

        var inFlag = ParseFails("management_url = \"https://m.example\"\n", flags: new AgentConfigOverrides { Hostname = name });
        Assert.Equal((AgentConfigLoader.CommandLineSource, "--hostname"), (inFlag.File, inFlag.Key));
        Assert.Contains("a DNS label", inFlag.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(AgentEnvironment.LazyConnections, "yes")]
    [InlineData(AgentEnvironment.LazyConnectionsOnOff, "maybe")]
    [InlineData(AgentEnvironment.ForceRelay, "2")]
    [InlineData(AgentEnvironment.DisableEbpfProxy, "on")]
    [InlineData(AgentEnvironment.InactivityThreshold, "15")]
    [InlineData(AgentEnvironment.InactivityThreshold, "soon")]
    public void A_malformed_environment_variable_is_named(string variable, string value)
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n", new Dictionary<string, string?> { [variable] = value });
        Assert.Equal(variable, ex.Key);
        Assert.Equal(AgentConfigLoader.EnvironmentSource, ex.File);
        Assert.Contains(variable, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"\"{value}\"", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_bad_log_level_flag_is_named()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n", flags: new AgentConfigOverrides { LogLevel = "loud" });
        Assert.Equal("--log-level", ex.Key);
        Assert.Contains("loud", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_syntax_error_names_its_line_and_column()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n\n[proxy]\nkind = = \"udp\"\n");
        Assert.Equal("agent.toml", ex.File);
        Assert.Equal(4, ex.Line);
        Assert.Equal(8, ex.Column);
        Assert.StartsWith("agent.toml:4:8: TOML syntax error", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_key_defined_twice_is_a_syntax_error_at_the_second_one()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\nsetup_key = \"a\"\nsetup_key = \"b\"\n");
        Assert.Equal(3, ex.Line);
        Assert.Equal(1, ex.Column);
    }

    [Fact]
    public void A_wrong_type_names_key_expectation_and_what_was_found()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\ninterface = { name = \"mdl0\", port = \"51820\" }\n");
        Assert.Equal(2, ex.Line);
        Assert.Equal(37, ex.Column);
        Assert.Equal("interface.port", ex.Key);
        Assert.Equal("expected an integer between 1 and 65535, got a string", ex.Problem);
        Assert.Equal("agent.toml:2:37: interface.port: expected an integer between 1 and 65535, got a string", ex.Message);
    }

    [Theory]
    [InlineData("interface = { port = 70000 }", "interface.port", 22, "expected an integer between 1 and 65535, got 70000")]
    [InlineData("interface = { mode = \"kmod\" }", "interface.mode", 22, "expected \"userspace\" or \"kernel\", got \"kmod\"")]
    [InlineData("interface = { mtu = 100 }", "interface.mtu", 21, "expected an integer between 576 and 9000, got 100")]
    [InlineData("interface = { name = \"this-name-is-too-long\" }", "interface.name", 22, "expected an interface name of 1 to 15 letters, digits, '_', '-' or '.', got \"this-name-is-too-long\"")]
    [InlineData("log = { level = \"verbose\" }", "log.level", 17, "expected \"trace\" or \"debug\" or \"info\" or \"warn\" or \"error\", got \"verbose\"")]
    [InlineData("features = { inactivity_timeout = \"15 minutes\" }", "features.inactivity_timeout", 35, "expected a positive duration such as \"90s\", \"15m\" or \"1h30m\", got \"15 minutes\"")]
    [InlineData("features = { inactivity_timeout = 900 }", "features.inactivity_timeout", 35, "expected a positive duration such as \"90s\", \"15m\" or \"1h30m\", got an integer")]
    [InlineData("features = { lazy_connections = \"yes\" }", "features.lazy_connections", 33, "expected true or false, got a string")]
    [InlineData("features = { always_connected = [\"a\", 2] }", "features.always_connected", 39, "expected an array of strings, got an element that is an integer")]
    [InlineData("netflow = { ipfix_collector = \"collector\" }", "netflow.ipfix_collector", 31, "expected \"host:port\" with a port between 1 and 65535, got \"collector\"")]
    [InlineData("netflow = { ipfix_collector = \"c.example:0\" }", "netflow.ipfix_collector", 31, "expected \"host:port\" with a port between 1 and 65535, got \"c.example:0\"")]
    [InlineData("ui = { listen = \"127.0.0.1\" }", "ui.listen", 17, "expected \"host:port\" with a port between 1 and 65535, got \"127.0.0.1\"")]
    [InlineData("ui = { listen = \"0.0.0.0:9091\" }", "ui.listen", 17, "expected a loopback address and port such as \"127.0.0.1:9091\" or \"[::1]:9091\", or \"\" to turn the UI off (the UI has no login), got \"0.0.0.0:9091\"")]
    [InlineData("ui = { listen = \"localhost:9091\" }", "ui.listen", 17, "expected a loopback address and port such as \"127.0.0.1:9091\" or \"[::1]:9091\", or \"\" to turn the UI off (the UI has no login), got \"localhost:9091\"")]
    [InlineData("metrics = { listen = \"localhost:9090\" }", "metrics.listen", 22, "expected an IP address and port such as \"127.0.0.1:9090\" or \"[::1]:9090\", or \"\" to turn metrics off, got \"localhost:9090\"")]
    [InlineData("metrics = { listen = \"127.0.0.1\" }", "metrics.listen", 22, "expected \"host:port\" with a port between 1 and 65535, got \"127.0.0.1\"")]
    [InlineData("metrics = { listen = \"0.0.0.0:0\" }", "metrics.listen", 22, "expected \"host:port\" with a port between 1 and 65535, got \"0.0.0.0:0\"")]
    [InlineData("proxy = \"udp\"", "proxy", 9, "expected a table, got a string")]
    [InlineData("proxy = { kind = \"\" }", "proxy.kind", 18, "expected \"auto\" or a proxy plugin's name (letters, digits, '_', '-', '.'), got \"\"")]
    public void A_bad_value_is_reported_where_it_is(string line, string key, int column, string problem)
    {
        var ex = ParseFails($"management_url = \"https://m.example\"\n{line}\n");
        Assert.Equal(2, ex.Line);
        Assert.Equal(column, ex.Column);
        Assert.Equal(key, ex.Key);
        Assert.Equal(problem, ex.Problem);
    }

    [Fact]
    public void Durations_in_the_file_accept_the_usual_forms()
    {
        Assert.Equal(TimeSpan.FromSeconds(90), Parse("management_url = \"https://m\"\nfeatures = { inactivity_timeout = \"90s\" }").Features.InactivityTimeout);
        Assert.Equal(TimeSpan.FromMinutes(15), Parse("management_url = \"https://m\"\nfeatures = { inactivity_timeout = \"15m\" }").Features.InactivityTimeout);
        Assert.Equal(TimeSpan.FromMinutes(90), Parse("management_url = \"https://m\"\nfeatures = { inactivity_timeout = \"1h30m\" }").Features.InactivityTimeout);
    }

    [Fact]
    public void An_unknown_key_suggests_the_nearest_one()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n\n[feature]\nlazy_connections = true\n");
        Assert.Equal(3, ex.Line);
        Assert.Equal(2, ex.Column);
        Assert.Equal("feature", ex.Key);
        Assert.Equal("unknown key 'feature' in table root; did you mean 'features'?", ex.Problem);
    }

    [Fact]
    public void An_unknown_key_in_a_table_is_named_with_its_table()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n[features]\nlazy_connection = true\n");
        Assert.Equal(3, ex.Line);
        Assert.Equal(1, ex.Column);
        Assert.Equal("features.lazy_connection", ex.Key);
        Assert.Equal("unknown key 'lazy_connection' in table features; did you mean 'lazy_connections'?", ex.Problem);
    }

    [Fact]
    public void An_unknown_key_without_a_near_match_lists_the_known_keys()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\nconnection = { colour = \"red\" }\n");
        Assert.Equal(2, ex.Line);
        Assert.Equal(16, ex.Column);
        Assert.Equal("unknown key 'colour' in table connection; known keys: force_relay", ex.Problem);
    }

    [Fact]
    public void The_firewall_is_on_unless_turned_off_with_a_boolean()
    {
        Assert.True(Parse("management_url = \"https://m.example\"\n").Firewall.Enabled);
        var ex = ParseFails("management_url = \"https://m.example\"\n[firewall]\nenabled = \"no\"\n");
        Assert.Equal("firewall.enabled", ex.Key);
        Assert.Equal(3, ex.Line);
    }

    [Fact]
    public void A_missing_management_url_is_an_error()
    {
        var ex = ParseFails("setup_key = \"x\"\n");
        Assert.Equal("management_url", ex.Key);
        Assert.Equal(0, ex.Line);
        Assert.Contains("required", ex.Problem, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("management_url = \"mgmt.example:33073\"", 18)]
    [InlineData("management_url = \"ftp://mgmt.example\"", 18)]
    [InlineData("management_url = []", 18)]
    [InlineData("management_url = [\"https://ok.example\", \"not a url\"]", 41)]
    [InlineData("management_url = 5", 18)]
    public void A_bad_management_url_is_an_error(string line, int column)
    {
        var ex = ParseFails(line + "\n");
        Assert.Equal("management_url", ex.Key);
        Assert.Equal(1, ex.Line);
        Assert.Equal(column, ex.Column);
    }

    [Fact]
    public void An_unknown_plugin_name_lists_the_available_ones_and_cites_proxy_kind()
    {
        var config = Parse("management_url = \"https://m.example\"\n[proxy]\nkind = \"udpp\"\n");
        var ex = Assert.Throws<ConfigException>(() => AgentConfigLoader.ValidatePluginNames(config, ["udp", "bind", "ebpf"]));
        Assert.Equal("agent.toml", ex.File);
        Assert.Equal(3, ex.Line);
        Assert.Equal(8, ex.Column);
        Assert.Equal("proxy.kind", ex.Key);
        Assert.Equal("unknown plugin \"udpp\"; available: auto, bind, ebpf, udp; did you mean \"udp\"?", ex.Problem);
    }

    [Fact]
    public void Netflow_sinks_default_to_the_built_in_plugin_and_take_a_list()
    {
        Assert.Equal(["netflow"], Parse("management_url = \"https://m.example\"\n").Netflow.Sinks);
        Assert.Equal(["netflow", "jsonlines"], Parse("management_url = \"https://m.example\"\n[netflow]\nsinks = [\"netflow\", \"jsonlines\"]\n").Netflow.Sinks);
    }

    [Theory]
    [InlineData("sinks = \"netflow\"", "expected an array of strings, got a string")]
    [InlineData("sinks = []", "expected at least one flow-sink plugin name (turn flow logging off with enabled = false)")]
    [InlineData("sinks = [\"netflow\", \"netflow\"]", "\"netflow\" is listed twice")]
    public void Bad_netflow_sinks_are_refused_at_the_key(string line, string problem)
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n[netflow]\n" + line + "\n");
        Assert.Equal("netflow.sinks", ex.Key);
        Assert.Equal(3, ex.Line);
        Assert.Equal(problem, ex.Problem);
    }

    [Fact]
    public void An_unknown_flow_sink_lists_the_available_ones_and_cites_netflow_sinks()
    {
        var config = Parse("management_url = \"https://m.example\"\n[netflow]\nenabled = true\nsinks = [\"netflow\", \"jsonline\"]\n");
        var ex = Assert.Throws<ConfigException>(() => AgentConfigLoader.ValidateFlowSinkNames(config, ["netflow", "jsonlines"]));
        Assert.Equal("netflow.sinks", ex.Key);
        Assert.Equal(4, ex.Line);
        Assert.Equal("unknown flow-sink plugin \"jsonline\"; available: jsonlines, netflow; did you mean \"jsonlines\"?", ex.Problem);

        AgentConfigLoader.ValidateFlowSinkNames(config with { Netflow = config.Netflow with { Sinks = ["netflow", "jsonlines"] } }, ["netflow", "jsonlines"]);
    }

    [Fact]
    public void An_unknown_psk_provider_lists_the_available_ones_and_cites_rosenpass_provider()
    {
        var config = Parse("management_url = \"https://m.example\"\n[rosenpass]\nenabled = true\nprovider = \"rosenpas\"\nport = 9998\n");
        Assert.Equal(9998, config.Rosenpass.Port);
        var ex = Assert.Throws<ConfigException>(() => AgentConfigLoader.ValidatePskProviderName(config, ["rosenpass", "vendor-psk"]));
        Assert.Equal("rosenpass.provider", ex.Key);
        Assert.Equal(4, ex.Line);
        Assert.Equal("unknown PSK provider plugin \"rosenpas\"; available: rosenpass, vendor-psk; did you mean \"rosenpass\"?", ex.Problem);

        // The default provider, not written: the error cites the key that turned Rosenpass on.
        var byDefault = Parse("management_url = \"https://m.example\"\n[rosenpass]\nenabled = true\n");
        Assert.Equal("rosenpass", byDefault.Rosenpass.Provider);
        Assert.Equal(9999, byDefault.Rosenpass.Port);
        Assert.Equal("rosenpass.enabled", Assert.Throws<ConfigException>(() => AgentConfigLoader.ValidatePskProviderName(byDefault, [])).Key);
        AgentConfigLoader.ValidatePskProviderName(byDefault, ["rosenpass"]);
    }

    [Fact]
    public void Known_plugin_names_and_auto_pass_validation()
    {
        var config = Parse("management_url = \"https://m.example\"\nproxy = { kind = \"thirdparty\" }\n");
        AgentConfigLoader.ValidatePluginNames(config, ["udp", "thirdparty"]);
        AgentConfigLoader.ValidatePluginNames(Parse("management_url = \"https://m.example\"\n"), []);
    }

    [Fact]
    public void A_plugins_entry_that_is_not_a_table_is_an_error()
    {
        var ex = ParseFails("management_url = \"https://m.example\"\n[plugins]\nacme = 1\n");
        Assert.Equal("plugins.acme", ex.Key);
        Assert.Equal(3, ex.Line);
        Assert.Equal(8, ex.Column);
    }

    [Fact]
    public void Load_reads_a_file_and_cites_its_path()
    {
        var path = Path.Combine(Path.GetTempPath(), $"modular-config-{Guid.NewGuid():N}.toml");
        try
        {
            File.WriteAllText(path, "management_url = \"https://m.example\"\ninterface = { port = true }\n");
            var ex = Assert.Throws<ConfigException>(() => AgentConfigLoader.Load(path, NoEnv, NoFlags));
            Assert.Equal(path, ex.File);
            Assert.StartsWith($"{path}:2:22: interface.port:", ex.Message, StringComparison.Ordinal);

            File.WriteAllText(path, "management_url = \"https://m.example\"\n");
            Assert.Equal(path, AgentConfigLoader.Load(path, NoEnv, NoFlags).SourcePath);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Load_of_a_missing_file_is_a_config_error()
    {
        var ex = Assert.Throws<ConfigException>(() => AgentConfigLoader.Load("/nonexistent/modular/agent.toml", NoEnv, NoFlags));
        Assert.Equal("/nonexistent/modular/agent.toml", ex.File);
        Assert.Contains("does not exist", ex.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("\u0000\u0001\u0002")]
    [InlineData("[[[")]
    [InlineData("management_url = \"https://m.example\"\n[interface]\n[interface]\n")]
    [InlineData("management_url = \"https://m.example\"\ninterface = 1\ninterface.name = \"x\"\n")]
    [InlineData("management_url = \"\\uZZZZ\"")]
    public void Garbage_gives_a_config_error_never_another_exception(string toml)
    {
        var ex = ParseFails(toml);
        Assert.Equal("agent.toml", ex.File);
    }
}
