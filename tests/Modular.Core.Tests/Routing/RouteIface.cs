using System.Net;
using Modular.Abstractions.WireGuard;

namespace Modular.Core.Tests.Routing;

/// <summary>
/// An interface as the route manager sees one (its name, the overlay prefix, this agent's key <see cref="RouteMaps.Self"/>);
/// every operation does nothing. <paramref name="name"/> may be a real link the test made, such as a namespace's veth.
/// </summary>
internal sealed class RouteIface(string name = "mdl0") : IWgIface
{
    public string Name => name;

    public WgInterfaceMode Mode => WgInterfaceMode.Kernel;

    public IPNetwork Address => IPNetwork.Parse("100.64.0.0/10");

    public IPAddress OverlayIp => IPAddress.Parse("100.64.0.1");

    public int Mtu => 1280;

    public int ListenPort => 51820;

    public WgKey PublicKey => RouteMaps.Self;

    public IWgBindHook? BindHook => null;

    public ValueTask CreateAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask UpAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask CloseAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask SetPeerAsync(WgPeerConfig peer, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask RemovePeerAsync(WgKey publicKey, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask UpdateEndpointAsync(WgKey publicKey, IPEndPoint endpoint, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask SetFwmarkAsync(uint mark, CancellationToken cancellationToken) => ValueTask.CompletedTask;

    public ValueTask<IReadOnlyDictionary<WgKey, WgPeerStats>> GetStatsAsync(CancellationToken cancellationToken)
        => ValueTask.FromResult<IReadOnlyDictionary<WgKey, WgPeerStats>>(new Dictionary<WgKey, WgPeerStats>());

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
