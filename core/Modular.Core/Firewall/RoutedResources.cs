namespace Modular.Core.Firewall;

/// <summary>
/// The network resources (routes) this peer uses or serves, so flow events name the resource a connection
/// goes to (<c>DestinationResourceId</c>). The longest prefix containing the destination wins; destinations
/// inside the overlay are never a resource (a peer's own /32 beats an exit node's 0.0.0.0/0). A short
/// linear scan, only on a connection's first packet; no allocation.
/// </summary>
public sealed class RoutedResources
{
    private readonly IpPrefix128[] _prefixes;
    private readonly string[] _ids;
    private readonly IpPrefix128? _overlay;

    private RoutedResources(IpPrefix128[] prefixes, string[] ids, IpPrefix128? overlay)
    {
        _prefixes = prefixes;
        _ids = ids;
        _overlay = overlay;
    }

    public static RoutedResources Empty { get; } = new([], [], null);

    public int Count => _prefixes.Length;

    public static RoutedResources Create(IEnumerable<(IpPrefix128 Prefix, string Id)> resources, IpPrefix128? overlay)
    {
        ArgumentNullException.ThrowIfNull(resources);
        var ordered = resources.DistinctBy(r => r.Prefix).OrderByDescending(r => r.Prefix.Length).ToArray();
        return ordered.Length == 0 ? Empty : new RoutedResources([.. ordered.Select(r => r.Prefix)], [.. ordered.Select(r => r.Id)], overlay);
    }

    /// <summary>The ID of the resource <paramref name="destination"/> belongs to, or null.</summary>
    public string? Find(UInt128 destination)
    {
        if (_prefixes.Length == 0 || (_overlay is { } overlay && overlay.Contains(destination)))
        {
            return null;
        }

        for (var i = 0; i < _prefixes.Length; i++)
        {
            if (_prefixes[i].Contains(destination))
            {
                return _ids[i];
            }
        }

        return null;
    }
}
