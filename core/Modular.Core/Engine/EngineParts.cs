using Modular.Abstractions.WireGuard;
using Modular.Core.MeshDns;
using Modular.Core.Peers;
using Modular.Core.Routing;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>
/// Every part of the engine that needs the interface, built all at once (<see cref="EngineAssembly"/>) and
/// published as one reference: the engine has all of them or none, never some.
/// </summary>
/// <param name="IceTransport">The ICE socket the engine closes with the interface (kernel mode); null when the interface owns it.</param>
/// <param name="Firewall">Null when the config turns the firewall off.</param>
/// <param name="Dns">Null when the config turns the mesh resolver off.</param>
/// <param name="PresharedKeys">The PSK provider's decisions per peer (no provider while Rosenpass is off).</param>
internal sealed record EngineParts(
    IWgIface Iface,
    IDisposable? IceTransport,
    EngineFirewall? Firewall,
    RouteManager Routes,
    MeshDnsService? Dns,
    EnginePaths Paths,
    EngineRelayConnector Relay,
    ConnectionManager Manager,
    PresharedKeys PresharedKeys);
