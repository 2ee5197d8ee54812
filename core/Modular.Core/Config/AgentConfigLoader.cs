namespace Modular.Core.Config;

/// <summary>Reads agent.toml into <see cref="AgentConfig"/>; precedence: flags, environment, file, defaults.</summary>
public static class AgentConfigLoader
{
    /// <summary>Loads and validates <paramref name="path"/>; throws <see cref="ConfigException"/> on any problem.</summary>
    public static AgentConfig Load(string path, IReadOnlyDictionary<string, string?> environment, AgentConfigOverrides overrides)
        => throw new NotImplementedException("foundation-lib implements this");

    /// <summary>Same as <see cref="Load"/> from text; <paramref name="sourceName"/> is what errors cite.</summary>
    public static AgentConfig Parse(string toml, string sourceName, IReadOnlyDictionary<string, string?> environment, AgentConfigOverrides overrides)
        => throw new NotImplementedException("foundation-lib implements this");

    /// <summary>
    /// Checks that the proxy kind (unless "auto") names a loaded proxy plugin; the error lists
    /// <paramref name="availableProxyNames"/> and cites the key's line and column.
    /// </summary>
    public static void ValidatePluginNames(AgentConfig config, IReadOnlyCollection<string> availableProxyNames)
        => throw new NotImplementedException("foundation-lib implements this");
}
