namespace Modular.Core.Engine;

/// <summary>The steps that build the engine's interface-dependent parts, in order, and the points where peers change.</summary>
internal enum EngineStep
{
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

    /// <summary>Route failover holds the apply gate and is about to put its new plan in force.</summary>
    Failover,

    /// <summary>Management removed this agent: its peers and routes are about to be cleared.</summary>
    ClearPeers,
}
