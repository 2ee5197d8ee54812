namespace Modular.Core.Firewall;

/// <summary>
/// The network resources (routes) this peer uses or serves, so flow events name the resource a connection
/// goes to (<c>DestinationResourceId</c>) or comes from. The longest prefix containing the address wins; addresses
/// inside the overlay are never a resource (a peer's own /32 beats an exit node's 0.0.0.0/0). A short
/// linear scan, only on a connection's first packet; no allocation. Also knows which of them are exit-node
/// default routes this peer sends its traffic through (<see cref="IsExitNode"/>), for <c>collect_exit_node</c>.
/// </summary>
public sealed class RoutedResources
{
    private readonly IpPrefix128[] _prefixes;
    private readonly string[] _ids;
    private readonly bool[] _exitNode;
    private readonly IpPrefix128? _overlay;

    private RoutedResources(IpPrefix128[] prefixes, string[] ids, bool[] exitNode, IpPrefix128? overlay)
    {
        _prefixes = prefixes;
        _ids = ids;
        _exitNode = exitNode;
        _overlay = overlay;
    }

    public static RoutedResources Empty { get; } = new([], [], [], null);

    public int Count => _prefixes.Length;

    /// <summary>Resources none of which is an exit node this peer uses.</summary>
    public static RoutedResources Create(IEnumerable<(IpPrefix128 Prefix, string Id)> resources, IpPrefix128? overlay)
    {
        ArgumentNullException.ThrowIfNull(resources);
        return Create(resources.Select(r => (r.Prefix, r.Id, false)), overlay);
    }

    /// <summary>
    /// Resources with, for each, whether it is an exit node's default route this peer is a client of (its traffic to
    /// addresses no longer prefix covers leaves through that peer).
    /// </summary>
    public static RoutedResources Create(IEnumerable<(IpPrefix128 Prefix, string Id, bool ExitNode)> resources, IpPrefix128? overlay)
    {
        ArgumentNullException.ThrowIfNull(resources);
        var ordered = resources.DistinctBy(r => r.Prefix).OrderByDescending(r => r.Prefix.Length).ToArray();
        return ordered.Length == 0
            ? Empty
            : new RoutedResources([.. ordered.Select(r => r.Prefix)], [.. ordered.Select(r => r.Id)], [.. ordered.Select(r => r.ExitNode)], overlay);
    }

    /// <summary>The ID of the resource <paramref name="address"/> belongs to, or null.</summary>
    public string? Find(UInt128 address)
    {
        var index = IndexOf(address);
        return index >= 0 ? _ids[index] : null;
    }

    /// <summary>
    /// True when traffic to <paramref name="destination"/> leaves through an exit node: it is outside the overlay, no
    /// narrower resource covers it, and the prefix that does is an exit node's default route this peer uses.
    /// </summary>
    public bool IsExitNode(UInt128 destination)
    {
        var index = IndexOf(destination);
        return index >= 0 && _exitNode[index];
    }

    private int IndexOf(UInt128 address)
    {
        if (_prefixes.Length == 0 || (_overlay is { } overlay && overlay.Contains(address)))
        {
            return -1;
        }

        for (var i = 0; i < _prefixes.Length; i++)
        {
            if (_prefixes[i].Contains(address))
            {
                return i;
            }
        }

        return -1;
    }
}
