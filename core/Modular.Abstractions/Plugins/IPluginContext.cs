using Microsoft.Extensions.Logging;

namespace Modular.Abstractions.Plugins;

/// <summary>What the host gives a plugin factory: its own TOML section and the host's services.</summary>
public interface IPluginContext
{
    /// <summary>
    /// The plugin's TOML section as plain values (string, long, double, bool, DateTime,
    /// nested IReadOnlyDictionary and IReadOnlyList); empty when the file has none.
    /// </summary>
    IReadOnlyDictionary<string, object?> Settings { get; }

    ILoggerFactory LoggerFactory { get; }

    TimeProvider Time { get; }

    /// <summary>Where the agent keeps state (keys are files with mode 0600).</summary>
    string StateDirectory { get; }

    /// <summary>The host's other services, for what the contracts above do not cover.</summary>
    IServiceProvider Services { get; }
}

/// <summary>Common shape of every factory a plugin exports.</summary>
public interface IPluginFactory
{
    /// <summary>One line on what the plugin does today; `modular plugins` prints it.</summary>
    string Description { get; }
}
