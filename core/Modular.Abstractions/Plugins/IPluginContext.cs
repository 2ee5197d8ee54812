using Microsoft.Extensions.Logging;

namespace Modular.Abstractions.Plugins;

/// <summary>
/// What the host gives a plugin factory: its own TOML section and the host's services, each named. New host
/// services get a member of their own in a later minor contract version.
/// </summary>
/// <remarks>Thread-safe; valid for as long as the object created with it lives.</remarks>
public interface IPluginContext
{
    /// <summary>
    /// The plugin's TOML section as plain values (string, long, double, bool, DateTime,
    /// nested IReadOnlyDictionary and IReadOnlyList); empty when the file has none.
    /// </summary>
    IReadOnlyDictionary<string, object?> Settings { get; }

    /// <summary>The host's logging; loggers it creates write to the agent's log. Thread-safe.</summary>
    ILoggerFactory LoggerFactory { get; }

    /// <summary>The host's clock and timers; use it instead of <see cref="DateTime.UtcNow"/> or <c>Task.Delay</c> so tests can drive time.</summary>
    TimeProvider Time { get; }

    /// <summary>Where the agent keeps state (keys are files with mode 0600).</summary>
    string StateDirectory { get; }

    /// <summary>
    /// Ships flow events to the management server's Flow API as this peer; null when the host has none (no
    /// management connection, or a host older than contract 1.1). See <see cref="Flows.IFlowUploader"/>.
    /// </summary>
    Flows.IFlowUploader? FlowUploader => null;

    /// <summary>
    /// Rosenpass public keys by fingerprint through the management server; null when the host has none (no management
    /// connection, or a host older than contract 1.1). See <see cref="Security.IRosenpassKeyDirectory"/>.
    /// </summary>
    Security.IRosenpassKeyDirectory? RosenpassKeys => null;

    /// <summary>The host's other services, for what the contracts above do not cover.</summary>
    [Obsolete("Use the services this context names (Settings, LoggerFactory, Time, StateDirectory); new host services get a member of their own. Removed in contract 2.0.")]
    IServiceProvider Services { get; }
}

/// <summary>Common shape of every factory a plugin exports.</summary>
/// <remarks>
/// The host constructs a factory once, when the agent starts, through MEF: the constructor must be cheap
/// and have no side effects (no files, sockets or threads); a factory whose constructor throws is listed
/// as not loaded. Its members may be called from any thread, concurrently: keep it stateless.
/// </remarks>
public interface IPluginFactory
{
    /// <summary>One line on what the plugin does today; `modular plugins` prints it.</summary>
    string Description { get; }
}
