using Modular.Core.Config;

namespace Modular.Agent.Cli;

/// <summary>Where the agent finds its config, socket and plugins when nothing more specific was given.</summary>
internal static class AgentPaths
{
    public const string DefaultConfigPath = "/etc/modular/agent.toml";
    public const string SystemPluginsDir = "/usr/lib/modular/plugins";
    public const string ConfigEnvironmentVariable = "MODULAR_CONFIG";
    public const string SocketEnvironmentVariable = "MODULAR_SOCKET";

    /// <summary>--config, else MODULAR_CONFIG, else /etc/modular/agent.toml.</summary>
    public static string ConfigPath(string? flag)
        => NonEmpty(flag) ?? NonEmpty(System.Environment.GetEnvironmentVariable(ConfigEnvironmentVariable)) ?? DefaultConfigPath;

    /// <summary>
    /// The daemon's socket for a client command: --socket, else MODULAR_SOCKET, else the socket
    /// the config file names (when one can be read), else the default for interface mdl0.
    /// </summary>
    public static string ClientSocketPath(string? flag, string? configFlag = null)
    {
        var explicitPath = NonEmpty(flag) ?? NonEmpty(System.Environment.GetEnvironmentVariable(SocketEnvironmentVariable));
        if (explicitPath is not null)
        {
            return explicitPath;
        }

        var configPath = ConfigPath(configFlag);
        if (File.Exists(configPath))
        {
            try
            {
                return AgentConfigLoader.Load(configPath, Environment(), new AgentConfigOverrides()).EffectiveSocketPath;
            }
            catch (ConfigException)
            {
                // A broken file is reported by the commands that load it; here the default still lets us reach a daemon.
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return new AgentConfig { ManagementUrls = [] }.EffectiveSocketPath;
    }

    /// <summary>The TOML's plugins_dir, else &lt;install dir&gt;/plugins when it exists, else /usr/lib/modular/plugins.</summary>
    public static string PluginsDir(AgentConfig config)
    {
        if (config.PluginsDir.Length > 0)
        {
            return Path.GetFullPath(config.PluginsDir);
        }

        var besideBinary = Path.Combine(AppContext.BaseDirectory, "plugins");
        return Directory.Exists(besideBinary) ? besideBinary : SystemPluginsDir;
    }

    /// <summary>The process environment as the config loader takes it.</summary>
    public static IReadOnlyDictionary<string, string?> Environment()
    {
        var result = new Dictionary<string, string?>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in System.Environment.GetEnvironmentVariables())
        {
            result[(string)entry.Key] = entry.Value as string;
        }

        return result;
    }

    private static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;
}
