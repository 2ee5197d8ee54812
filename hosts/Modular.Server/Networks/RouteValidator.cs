namespace Modular.Server.Networks;

/// <summary>A network resource after <see cref="RouteValidator"/>: address normalised, routing peer still to resolve.</summary>
/// <param name="Name">Empty for an exit node created without a name (the store names it after its peer).</param>
public sealed record ValidatedResource(string Name, string Address, string RoutingPeer, bool Masquerade, int Metric, bool ExitNode);

/// <summary>Checks a network resource (a route) before anything is stored; every refusal names the field at fault.</summary>
public static class RouteValidator
{
    public const int MinMetric = 1;
    public const int MaxMetric = 9999;

    public static ValidatedResource Validate(NewResource resource)
    {
        ArgumentNullException.ThrowIfNull(resource);
        var name = resource.ExitNode && string.IsNullOrWhiteSpace(resource.Name) ? "" : PolicyValidator.ValidateName("name", resource.Name);
        if (string.IsNullOrWhiteSpace(resource.RoutingPeer))
        {
            throw new NetworkValidationException(resource.ExitNode ? "peer" : "routing-peer", "a routing peer is required");
        }

        if (resource.Metric is < MinMetric or > MaxMetric)
        {
            throw new NetworkValidationException("metric", $"must be {MinMetric}-{MaxMetric}, got {resource.Metric}");
        }

        var address = PolicyValidator.ParseNetwork("address", resource.Address);
        if (address.Contains(':', StringComparison.Ordinal))
        {
            // Agents route and forward IPv4 only (the overlay is IPv4): an IPv6 route would be accepted here and silently unused.
            throw new NetworkValidationException("address", $"{address}: IPv6 routes are not supported yet");
        }

        if (resource.ExitNode && !NetworkResourceRecord.IsDefaultRoute(address))
        {
            throw new NetworkValidationException("address", $"an exit node serves 0.0.0.0/0, not {address}");
        }

        if (!resource.ExitNode && NetworkResourceRecord.IsDefaultRoute(address))
        {
            throw new NetworkValidationException("address", $"{address} is the default route: create it with `routes exit-node <peer>`");
        }

        // A route inside the overlay would steal peers' own addresses from their tunnels (0.0.0.0/0 is fine:
        // the overlay's /10 route and the peers' /32 allowed IPs are more specific).
        var network = System.Net.IPNetwork.Parse(address);
        var overlay = new System.Net.IPNetwork(Store.OverlayNetwork.ToAddress(Store.OverlayNetwork.Network), Store.OverlayNetwork.PrefixLength);
        if (!NetworkResourceRecord.IsDefaultRoute(address) && (network.Contains(overlay.BaseAddress) || overlay.Contains(network.BaseAddress)))
        {
            throw new NetworkValidationException("address", $"{address} overlaps the overlay network {overlay}");
        }

        return new ValidatedResource(name, address, resource.RoutingPeer.Trim(), resource.Masquerade, resource.Metric, resource.ExitNode);
    }
}
