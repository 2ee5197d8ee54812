using Modular.Abstractions.WireGuard;
using Modular.Core.Firewall.Nftables;
using Modular.Core.Routing;
using Modular.WireGuard.Interface;

namespace Modular.Core.Engine;

/// <summary>
/// Where the engine meets the OS, and named points in its work: the agent uses the defaults, tests replace them
/// with doubles to build an engine without a TUN device, routes or nft, and to fail or hold it at a step.
/// </summary>
internal sealed class EngineSeams
{
    /// <summary>The host's OS: the interface the config names, the host's routes and nft.</summary>
    public static EngineSeams Host { get; } = new();

    /// <summary>Creates the interface for the assigned address; null creates the one the config's mode names.</summary>
    public Func<WgIfaceOptions, EngineInterface>? CreateInterface { get; init; }

    /// <summary>The routing table and rules; null is the host's.</summary>
    public IRouteOs? RouteOs { get; init; }

    /// <summary>nftables for the firewall (kernel mode) and the forwarding table; null is the host's.</summary>
    public INftables? Nftables { get; init; }

    /// <summary>Runs before each <see cref="EngineStep"/>; a test throws to fail the engine there, or waits to hold it.</summary>
    public Func<EngineStep, CancellationToken, ValueTask>? BeforeStep { get; init; }

    /// <summary>Management's gRPC calls for a management URL; null opens a channel to it (<see cref="Control.ControlChannel"/>).</summary>
    public Func<Uri, Grpc.Core.CallInvoker>? ManagementCalls { get; init; }

    /// <summary>Whether a peer is connected, as route failover reads it; null reads the connections.</summary>
    public Func<WgKey, bool>? IsConnected { get; init; }

    /// <summary>
    /// Marks <paramref name="step"/>: runs <see cref="BeforeStep"/>, then stops there if the work was cancelled, so a
    /// step a test cancels never starts (and nothing after it is built).
    /// </summary>
    internal async ValueTask BeforeAsync(EngineStep step, CancellationToken cancellationToken)
    {
        if (BeforeStep is { } before)
        {
            await before(step, cancellationToken);
        }

        cancellationToken.ThrowIfCancellationRequested();
    }
}
