namespace Modular.Core.Config;

/// <summary>The environment variables the agent reads; they win over the file and lose to flags.</summary>
public static class AgentEnvironment
{
    /// <summary>
    /// NetBird's older switch: true/1 turns lazy connections on; false/0 means "not set" (as in NetBird, where only
    /// true has an effect), so a script that exports it as false does not pin the machine off. Use
    /// <see cref="LazyConnectionsOnOff"/> to turn them off.
    /// </summary>
    public const string LazyConnections = "NB_ENABLE_EXPERIMENTAL_LAZY_CONN";

    /// <summary>on/off (also true/false/1/0): lazy connections on or off, overriding the account either way; wins over <see cref="LazyConnections"/>.</summary>
    public const string LazyConnectionsOnOff = "NB_LAZY_CONN";

    /// <summary>The name this peer registers with (a DNS label); loses to --hostname, wins over the TOML key.</summary>
    public const string Hostname = "MODULAR_HOSTNAME";

    /// <summary>A duration ("15m"): how long a peer may be idle before it is closed.</summary>
    public const string InactivityThreshold = "NB_LAZY_CONN_INACTIVITY_THRESHOLD";

    /// <summary>true/false/1/0: never try a direct path.</summary>
    public const string ForceRelay = "NB_FORCE_RELAY";

    /// <summary>true/false/1/0: never use the eBPF proxy.</summary>
    public const string DisableEbpfProxy = "NB_DISABLE_EBPF_WG_PROXY";

    /// <summary>The CLI socket path.</summary>
    public const string Socket = "MODULAR_SOCKET";

    /// <summary>The config file path (read by the host, not by the loader).</summary>
    public const string ConfigPath = "MODULAR_CONFIG";

    /// <summary>A snapshot of this process's environment, in the form <see cref="AgentConfigLoader"/> takes.</summary>
    public static IReadOnlyDictionary<string, string?> FromProcess()
    {
        var result = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            result[(string)entry.Key] = entry.Value as string;
        }

        return result;
    }
}
