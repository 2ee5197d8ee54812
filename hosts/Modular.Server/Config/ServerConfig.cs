namespace Modular.Server.Config;

/// <summary>server.toml, validated. Every key has the default documented in DESIGN.md.</summary>
public sealed record ServerConfig
{
    public static readonly IReadOnlyList<string> AllComponents = ["management", "signal", "relay", "stun", "flow"];

    /// <summary>gRPC listen address (management, signal, flow API), host:port.</summary>
    public string Listen { get; init; } = "0.0.0.0:33073";

    public IReadOnlySet<string> Components { get; init; } = new HashSet<string>(AllComponents, StringComparer.Ordinal);

    public PublicUrls PublicUrl { get; init; } = new();

    public string DataDir { get; init; } = "/var/lib/modular-server";

    public StoreConfig Store { get; init; } = new();

    public string RelayListen { get; init; } = "0.0.0.0:33080";

    public string StunListen { get; init; } = "0.0.0.0:3478";

    public string RedisUrl { get; init; } = "";

    /// <summary>The Prometheus endpoint's address (host:port, HTTP <c>/metrics</c>); "" (the default): no endpoint.</summary>
    public string MetricsListen { get; init; } = "";

    public TlsConfig Tls { get; init; } = new();

    public AccountConfig Account { get; init; } = new();

    /// <summary>Where each key read from the file was written, e.g. "account.flows" -> "server.toml:12:1"; empty when built in code.</summary>
    public IReadOnlyDictionary<string, string> Positions { get; init; } = new Dictionary<string, string>();

    public bool Runs(string component) => Components.Contains(component);
}

/// <summary>What agents are told; empty: the host the agent used for management, with the component's port.</summary>
public sealed record PublicUrls(string Signal = "", string Relay = "", string Stun = "");

public sealed record StoreConfig(string Kind = "sqlite", string Dsn = "");

public sealed record TlsConfig(string Cert = "", string Key = "")
{
    public bool Enabled => Cert.Length > 0;
}

public sealed record FlowSettingsConfig(bool Enabled = false, bool CollectDns = false, bool CollectExitNode = false)
{
    /// <summary>How long the server keeps flow events when <c>[account.flows] retention</c> is not written.</summary>
    public static readonly TimeSpan DefaultRetention = TimeSpan.FromDays(7);

    /// <summary>How long the server keeps flow events (by their time); older ones are swept (flow component).</summary>
    public TimeSpan Retention { get; init; } = DefaultRetention;
}

public sealed record RosenpassSettingsConfig(bool Enabled = false, bool Permissive = false);

public sealed record AccountConfig
{
    public string DnsDomain { get; init; } = "modular.internal";

    public bool LazyConnections { get; init; }

    public FlowSettingsConfig Flows { get; init; } = new();

    public RosenpassSettingsConfig Rosenpass { get; init; } = new();

    /// <summary>Account-wide WireGuard PSK (base64), optional. Never logged.</summary>
    public string Psk { get; init; } = "";

    /// <summary>How long a registration stays valid before the peer must register again; zero: forever.</summary>
    public TimeSpan PeerLoginExpiration { get; init; } = TimeSpan.Zero;
}
