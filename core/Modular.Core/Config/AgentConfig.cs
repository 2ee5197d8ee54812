using Modular.Abstractions.WireGuard;

namespace Modular.Core.Config;

// API agreed between the config loader and its users (the agent host). Immutable records,
// validated once by AgentConfigLoader; every key defaults as in DESIGN.md.

/// <summary>The agent's whole configuration after file, environment and flags were merged.</summary>
public sealed record AgentConfig
{
    /// <summary>Management URLs, tried in order. Required.</summary>
    public required IReadOnlyList<Uri> ManagementUrls { get; init; }

    /// <summary>
    /// The name this peer registers with (a DNS label): --hostname, else MODULAR_HOSTNAME, else the TOML key;
    /// empty when none was given (the host then uses the machine's name).
    /// </summary>
    public string Hostname { get; init; } = "";

    /// <summary>Secret: never log it.</summary>
    public string SetupKey { get; init; } = "";

    public string TlsCa { get; init; } = "";

    public string StateDir { get; init; } = "/var/lib/modular";

    /// <summary>As written; empty means <see cref="EffectiveSocketPath"/> derives it from the interface name.</summary>
    public string Socket { get; init; } = "";

    public InterfaceConfig Interface { get; init; } = new();

    public LogConfig Log { get; init; } = new();

    /// <summary>As written; empty when the key was absent (the host then picks its default).</summary>
    public string PluginsDir { get; init; } = "";

    public FeaturesConfig Features { get; init; } = new();

    public ConnectionConfig Connection { get; init; } = new();

    public ProxyConfig Proxy { get; init; } = new();

    public FirewallConfig Firewall { get; init; } = new();

    public RosenpassConfig Rosenpass { get; init; } = new();

    public NetflowConfig Netflow { get; init; } = new();

    public DnsResolverConfig Dns { get; init; } = new();

    public ListenConfig Ui { get; init; } = new("127.0.0.1:9091");

    public ListenConfig Metrics { get; init; } = new("127.0.0.1:9090");

    /// <summary>Sections for third-party plugins, <c>[plugins.NAME]</c>, as plain values.</summary>
    public IReadOnlyDictionary<string, IReadOnlyDictionary<string, object?>> PluginSettings { get; init; } =
        new Dictionary<string, IReadOnlyDictionary<string, object?>>();

    /// <summary>The file this came from ("" when built in code); errors found later cite it.</summary>
    public string SourcePath { get; init; } = "";

    /// <summary>Where each key was written, e.g. "proxy.kind" -> line 12, column 8.</summary>
    public IReadOnlyDictionary<string, SourcePosition> Positions { get; init; } = new Dictionary<string, SourcePosition>();

    public string EffectiveSocketPath => Socket.Length > 0 ? Socket : $"/var/run/modular/{Interface.Name}.sock";

    // A record prints every property; this one must never print the setup key, since a config
    // is the kind of object that ends up in a log line.
    private bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append("ManagementUrls = [").AppendJoin(", ", ManagementUrls).Append(']');
        builder.Append(", Hostname = ").Append(Hostname);
        builder.Append(", SetupKey = ").Append(SetupKey.Length == 0 ? "(none)" : "(hidden)");
        builder.Append(", TlsCa = ").Append(TlsCa);
        builder.Append(", StateDir = ").Append(StateDir);
        builder.Append(", Socket = ").Append(EffectiveSocketPath);
        builder.Append(", Interface = ").Append(Interface);
        builder.Append(", Log = ").Append(Log);
        builder.Append(", PluginsDir = ").Append(PluginsDir);
        builder.Append(", Features = ").Append(Features);
        builder.Append(", Connection = ").Append(Connection);
        builder.Append(", Proxy = ").Append(Proxy);
        builder.Append(", Firewall = ").Append(Firewall);
        builder.Append(", Rosenpass = ").Append(Rosenpass);
        builder.Append(", Netflow = ").Append(Netflow);
        builder.Append(", Dns = ").Append(Dns);
        builder.Append(", Ui = ").Append(Ui);
        builder.Append(", Metrics = ").Append(Metrics);
        builder.Append(", PluginSettings = [").AppendJoin(", ", PluginSettings.Keys).Append(']');
        builder.Append(", SourcePath = ").Append(SourcePath);
        return true;
    }

    /// <summary>The <c>[plugins.NAME]</c> section of <paramref name="pluginName"/>, empty when the file has none.</summary>
    public IReadOnlyDictionary<string, object?> SettingsFor(string pluginName)
        => PluginSettings.TryGetValue(pluginName, out var settings) ? settings : new Dictionary<string, object?>();
}

public readonly record struct SourcePosition(int Line, int Column);

public sealed record InterfaceConfig
{
    public string Name { get; init; } = "mdl0";

    public WgInterfaceMode Mode { get; init; } = WgInterfaceMode.Userspace;

    public int Port { get; init; } = 51820;

    public int Mtu { get; init; } = 1280;
}

public sealed record LogConfig
{
    /// <summary>trace, debug, info, warn, error.</summary>
    public string Level { get; init; } = "info";

    /// <summary>Empty: console only.</summary>
    public string File { get; init; } = "";
}

public sealed record FeaturesConfig
{
    /// <summary>This machine's own setting (flag, environment, TOML); absent everywhere: the account decides.</summary>
    public LocalToggle LazyConnections { get; init; } = LocalToggle.Unset;

    public TimeSpan InactivityTimeout { get; init; } = TimeSpan.FromMinutes(15);

    public IReadOnlyList<string> AlwaysConnected { get; init; } = [];
}

public sealed record ConnectionConfig
{
    public bool ForceRelay { get; init; }
}

public sealed record ProxyConfig
{
    /// <summary>auto, udp, ebpf, bind or a third-party plugin's name.</summary>
    public string Kind { get; init; } = "auto";

    /// <summary>NB_DISABLE_EBPF_WG_PROXY=true: never pick the eBPF proxy (no TOML key).</summary>
    public bool EbpfDisabled { get; init; }
}

public sealed record FirewallConfig
{
    /// <summary>
    /// False: the agent enforces no access policy at all (no userspace filter, no nftables table); every
    /// packet a peer's allowed IPs admit reaches this host. Only for hosts whose own firewall enforces
    /// policy, and for measuring the firewall's cost. Logged as a warning at start.
    /// </summary>
    public bool Enabled { get; init; } = true;
}

public sealed record RosenpassConfig
{
    /// <summary>The TOML key when present; absent: the account decides.</summary>
    public LocalToggle Enabled { get; init; } = LocalToggle.Unset;

    public bool Permissive { get; init; }

    /// <summary>
    /// The PSK provider plugin (an <c>IPresharedKeyProviderFactory</c> name) the engine asks for every peer's key while
    /// Rosenpass is on: the built-in "rosenpass", or a third-party one dropped into plugins_dir.
    /// </summary>
    public string Provider { get; init; } = "rosenpass";

    /// <summary>The UDP port of the Rosenpass exchange, on this agent's overlay address (inside the tunnel).</summary>
    public int Port { get; init; } = 9999;
}

public sealed record NetflowConfig
{
    /// <summary>The TOML key when present; absent: the account decides.</summary>
    public LocalToggle Enabled { get; init; } = LocalToggle.Unset;

    public bool CollectDns { get; init; }

    public bool CollectExitNode { get; init; }

    public string IpfixCollector { get; init; } = "";

    /// <summary>
    /// The flow-sink plugins (<c>IFlowSinkFactory</c> names) that receive the flow events, in order; each gets its
    /// <c>[plugins.NAME]</c> section. The default is this one instance, so configs that leave the key out compare equal.
    /// </summary>
    public IReadOnlyList<string> Sinks { get; init; } = DefaultSinks;

    /// <summary><c>["netflow"]</c>: the built-in plugin.</summary>
    public static readonly IReadOnlyList<string> DefaultSinks = ["netflow"];
}

/// <summary>
/// <c>[dns]</c>: the mesh resolver on the overlay address. It answers the account's zone and forwards other
/// names to management's nameserver groups, while management has DNS enabled.
/// </summary>
public sealed record DnsResolverConfig
{
    /// <summary>false: never listen, whatever management says.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>UDP and TCP port on the overlay address.</summary>
    public int ListenPort { get; init; } = 53;
}

/// <summary>A local listener; an empty address turns it off.</summary>
public sealed record ListenConfig(string Listen)
{
    public bool Enabled => Listen.Length > 0;
}

/// <summary>Command-line flags; null means "not given". They win over environment and file.</summary>
public sealed record AgentConfigOverrides
{
    public bool? LazyConnections { get; init; }

    /// <summary>--hostname.</summary>
    public string? Hostname { get; init; }

    public string? Socket { get; init; }

    public string? LogLevel { get; init; }
}
