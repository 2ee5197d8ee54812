using Modular.Abstractions.WireGuard;
using Modular.Core.Ice;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>A WireGuard interface with the transport ICE checks use beside it.</summary>
/// <param name="Transport">Where ICE checks go (the in-process Bind's demux, or a socket of its own).</param>
/// <param name="PortOffset">How far ICE's port is above WireGuard's (1 when ICE has its own socket).</param>
/// <param name="OwnedTransport">A socket the engine must close with the interface; null when the interface owns it.</param>
internal sealed record EngineInterface(IWgIface Iface, IIceTransport Transport, int PortOffset, IDisposable? OwnedTransport);
