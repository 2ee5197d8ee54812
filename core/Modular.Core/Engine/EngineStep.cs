namespace Modular.Core.Engine;

/// <summary>
/// The engine's start-up steps, in order (<see cref="Login"/> to <see cref="Sync"/>, then
/// <see cref="ManagementBackoff"/> whenever management fails), and the points where peers change. Tests hold, fail or
/// cancel the engine at each one through <see cref="EngineSeams.BeforeStep"/>; the agent's test hook
/// (MODULAR_TEST_HOOKS) cancels at one by name.
/// </summary>
internal enum EngineStep
{
    /// <summary>Logging in to management (before anything of the interface exists).</summary>
    Login,

    /// <summary>The WireGuard interface object and the ICE transport beside it.</summary>
    Interface,

    /// <summary>The access-policy firewall (before the OS interface exists).</summary>
    Firewall,

    /// <summary>The route manager.</summary>
    Routes,

    /// <summary>The mesh DNS resolver.</summary>
    Dns,

    /// <summary>Creating the OS interface and setting it up.</summary>
    Up,

    /// <summary>Paths, relay and the connection manager.</summary>
    Connections,

    /// <summary>The interface and its parts exist and the signal, stats and reflexive jobs run: the network map stream is about to open.</summary>
    Sync,

    /// <summary>Management failed after the interface exists: the engine is about to wait out its retry backoff.</summary>
    ManagementBackoff,

    /// <summary>Route failover holds the apply gate and is about to put its new plan in force.</summary>
    Failover,

    /// <summary>Management removed this agent: its peers and routes are about to be cleared.</summary>
    ClearPeers,
}
